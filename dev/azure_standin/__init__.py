"""A local Azure stand-in: ARM (subscriptions, registries, importImage LRO), the App Service
managed-identity endpoint and ACR data-plane token endpoints, speaking the wire protocols the real
Azure SDK and CLI speak, so they can be pointed at it unchanged. Run with `python -m dev.azure_standin`."""
