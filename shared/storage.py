"""Storage clients from the Functions connection setting, in either of its forms.

`AzureWebJobsStorage` may be a connection string (Azurite locally), or identity-based settings
(`AzureWebJobsStorage__queueServiceUri` / `__tableServiceUri` / `__accountName`, `__clientId`), which is
how we deploy: no storage keys anywhere.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping

CONNECTION = "AzureWebJobsStorage"


class StorageSettingsError(ValueError):
    pass


def _service_uri(env: Mapping[str, str], prefix: str, service: str) -> str | None:
    explicit = env.get(f"{prefix}__{service}ServiceUri")
    if explicit:
        return explicit
    account = env.get(f"{prefix}__accountName")
    return f"https://{account}.{service}.core.windows.net" if account else None


def _identity(env: Mapping[str, str], prefix: str):
    from azure.identity import ManagedIdentityCredential

    client_id = env.get(f"{prefix}__clientId") or None
    return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()


def _service(kind: str, env: Mapping[str, str] | None, prefix: str):
    """A queue or table service client from the connection string or the identity-based settings."""
    if kind == "queue":
        from azure.storage.queue import QueueServiceClient as Client
    else:
        from azure.data.tables import TableServiceClient as Client

    env = os.environ if env is None else env
    if env.get(prefix):
        return Client.from_connection_string(env[prefix])
    uri = _service_uri(env, prefix, kind)
    if not uri:
        raise StorageSettingsError(f"set {prefix} (connection string) or {prefix}__{kind}ServiceUri")
    return Client(uri, credential=_identity(env, prefix))


def queue_service(env: Mapping[str, str] | None = None, prefix: str = CONNECTION):
    return _service("queue", env, prefix)


def table_service(env: Mapping[str, str] | None = None, prefix: str = CONNECTION):
    return _service("table", env, prefix)


class LazyTable:
    """A table client made (and the table created) on first use, once, whichever thread comes first."""

    def __init__(self, table_name: str, service=None) -> None:
        self._table_name = table_name
        self._service = service
        self._table = None
        self._lock = threading.Lock()

    def __call__(self):
        with self._lock:
            if self._table is None:
                service = self._service or table_service()
                self._table = service.create_table_if_not_exists(self._table_name)
            return self._table
