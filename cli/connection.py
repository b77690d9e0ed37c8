"""Storage clients for a person at a terminal: the app's connection setting, or their own Entra identity.

The app authenticates to storage with its managed identity (`shared/azure/storage.py`); a person has none, so
the identity-based forms (`AzureWebJobsStorage__accountName` / `__queueServiceUri` / `__tableServiceUri`)
use `DefaultAzureCredential` here: `az login`, environment credentials, or VS Code sign-in.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, overload

from shared.azure.storage import CONNECTION, service_client, service_uri

if TYPE_CHECKING:
    from azure.data.tables import TableServiceClient
    from azure.identity import DefaultAzureCredential
    from azure.storage.queue import QueueServiceClient

# A refused connection (Azurite not running, a wrong endpoint) is said at once, not after the storage SDK's
# minute of backoff; answers that fail (a 503, a timeout) are still retried as the SDK does.
_AT_A_TERMINAL: dict[str, Any] = {"retry_connect": 0}


class MissingStorageSetting(ValueError):
    pass


@overload
def _client(kind: Literal["queue"], env: Mapping[str, str] | None) -> QueueServiceClient: ...
@overload
def _client(kind: Literal["table"], env: Mapping[str, str] | None) -> TableServiceClient: ...
def _client(kind: Literal["queue", "table"], env: Mapping[str, str] | None) -> QueueServiceClient | TableServiceClient:
    """The app's storage, as shared/azure/storage.py makes its clients, signed in as the person at the terminal."""
    env = os.environ if env is None else env
    if not env.get(CONNECTION) and not service_uri(env, CONNECTION, kind):
        raise MissingStorageSetting(
            f"no storage account configured: set {CONNECTION} to a connection string (or pass --settings "
            f"local.settings.json), or {CONNECTION}__accountName to use your own sign-in (az login; you need "
            "Storage Queue Data Contributor and Storage Table Data Contributor on the account)")
    return service_client(kind, env, CONNECTION, credential=_signed_in, options=_AT_A_TERMINAL)


def _signed_in() -> DefaultAzureCredential:
    from azure.identity import DefaultAzureCredential  # only for the identity-based settings: slow to import

    return DefaultAzureCredential()


def queue_service(env: Mapping[str, str] | None = None) -> QueueServiceClient:
    return _client("queue", env)


def table_service(env: Mapping[str, str] | None = None) -> TableServiceClient:
    return _client("table", env)
