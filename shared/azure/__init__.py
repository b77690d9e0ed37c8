"""Adapters: Azure (ARM's importImage, storage queues and the status table, config from a blob, Azure
Monitor, the SDK clients' deadlines). They import the core, never a feature."""
