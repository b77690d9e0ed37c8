"""Tests of the local Functions runner (dev/runner/)."""
