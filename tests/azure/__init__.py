"""Tests of the Azure adapters: storage, deadlines, telemetry (shared/azure/)."""
