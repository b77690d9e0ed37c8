"""Operator endpoints under /api/ops: read-only JSON about imports, health, the refresh and replication."""
