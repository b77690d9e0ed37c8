"""Tests of the core's rules: references, requests, settings and policy (shared/core/)."""
