"""Tests of the scheduled refresh (shared/refresh/)."""
