"""The shape of the code: the import graph of shared/ and cli/ (docs/architecture.md)."""
