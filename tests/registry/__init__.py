"""Tests of the registry adapter (shared/registry/)."""
