"""Tests of the local stack: Azurite, the registries, the OCI helper (dev/)."""
