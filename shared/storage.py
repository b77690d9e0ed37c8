"""Storage clients from the Functions connection setting, in either of its forms.

`AzureWebJobsStorage` may be a connection string (Azurite locally), or identity-based settings
(`AzureWebJobsStorage__queueServiceUri` / `__tableServiceUri` / `__accountName`, `__clientId`), which is
how we deploy: no storage keys anywhere.
"""

from __future__ import annotations

import os
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


def queue_service(env: Mapping[str, str] | None = None, prefix: str = CONNECTION):
    from azure.storage.queue import QueueServiceClient

    env = os.environ if env is None else env
    if env.get(prefix):
        return QueueServiceClient.from_connection_string(env[prefix])
    uri = _service_uri(env, prefix, "queue")
    if not uri:
        raise StorageSettingsError(f"set {prefix} (connection string) or {prefix}__queueServiceUri")
    return QueueServiceClient(uri, credential=_identity(env, prefix))


def table_service(env: Mapping[str, str] | None = None, prefix: str = CONNECTION):
    from azure.data.tables import TableServiceClient

    env = os.environ if env is None else env
    if env.get(prefix):
        return TableServiceClient.from_connection_string(env[prefix])
    uri = _service_uri(env, prefix, "table")
    if not uri:
        raise StorageSettingsError(f"set {prefix} (connection string) or {prefix}__tableServiceUri")
    return TableServiceClient(endpoint=uri, credential=_identity(env, prefix))
