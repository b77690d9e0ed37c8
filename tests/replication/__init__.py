"""Tests of replication on push (shared/replication/)."""
