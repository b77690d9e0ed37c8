"""Adapter: the OCI distribution API of registries (digests, tags, tokens), for the app's own reads."""
