"""Adapter to Azure Resource Manager: the ACR import API and registry look-ups, with managed identity.

The Azure SDK modules are imported on first use: they cost more start-up time than everything else in
the app together (see docs/benchmarks.md), and a rejected request never needs them.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from shared.resource_ids import RegistryId, parse_registry_id
from shared.settings import Settings

REGISTRY_CACHE_SECONDS = 300.0


@dataclass(frozen=True)
class ImportStarted:
    """The import operation as ARM accepted it; `poller` waits for it."""

    poller: Any
    started_at: float


def make_credential(settings: Settings):
    """The app's managed identity: user-assigned when AZURE_CLIENT_ID is set, else system-assigned."""
    from azure.identity import ManagedIdentityCredential

    if settings.azure_client_id:
        return ManagedIdentityCredential(client_id=settings.azure_client_id)
    return ManagedIdentityCredential()


class AcrManagement:
    """ARM calls for one app: a client per subscription, registry look-ups cached for a few minutes."""

    def __init__(self, settings: Settings, credential=None) -> None:
        self._settings = settings
        self._credential = credential
        self._clients: dict[str, Any] = {}
        self._registries: dict[str, tuple[float, dict[str, RegistryId]]] = {}
        self._lock = threading.Lock()

    def _client(self, subscription: str):
        with self._lock:
            if subscription not in self._clients:
                from azure.mgmt.containerregistry import ContainerRegistryManagementClient

                if self._credential is None:
                    self._credential = make_credential(self._settings)
                endpoint = self._settings.arm_endpoint
                # No SDK retries: transient failures go back to the queue with backoff, so no thread
                # sleeps through a Retry-After and every attempt is counted and visible in the status.
                self._clients[subscription] = ContainerRegistryManagementClient(
                    self._credential, subscription, base_url=endpoint,
                    credential_scopes=[f"{self._settings.arm_audience}/.default"], retry_total=0,
                    polling_interval=self._settings.poll_interval_seconds)
            return self._clients[subscription]

    def registry_by_login_server(self, subscription: str, login_server: str) -> RegistryId | None:
        """The ACR in `subscription` whose login server is `login_server` (as `az acr import` looks it up)."""
        now = time.monotonic()
        cached = self._registries.get(subscription)
        if cached is None or now - cached[0] > REGISTRY_CACHE_SECONDS:
            found = {}
            for registry in self._client(subscription).registries.list():
                server = (getattr(registry, "login_server", None) or "").lower()
                if server and registry.id:
                    found[server] = parse_registry_id(registry.id)
            cached = (now, found)
            self._registries[subscription] = cached
        return cached[1].get(login_server.lower())

    def begin_import(self, target: RegistryId, parameters: dict[str, Any]) -> ImportStarted:
        """POST importImage; returns once ARM accepted it. Polling starts at once, then honours Retry-After."""
        from azure.mgmt.core.polling.arm_polling import ARMPolling

        polling = ARMPolling(self._settings.poll_interval_seconds,
                             path_format_arguments={"endpoint": self._settings.arm_endpoint})
        poller = self._client(target.subscription).registries.begin_import_image(
            target.resource_group, target.name, parameters, polling=polling)
        return ImportStarted(poller, time.monotonic())
