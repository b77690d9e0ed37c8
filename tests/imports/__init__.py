"""Tests of the imports feature: the queue worker, the HTTP API, the outcome recorder (shared/imports/)."""
