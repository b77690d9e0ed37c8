"""Storage clients from the Functions connection setting, in either of its forms.

`AzureWebJobsStorage` may be a connection string (Azurite locally), or identity-based settings
(`AzureWebJobsStorage__queueServiceUri` / `__tableServiceUri` / `__accountName`, `__clientId`), which is
how we deploy: no storage keys anywhere.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, overload
from urllib.parse import urlsplit

from shared.azure.deadlines import identity_options, storage_client_options
from shared.azure.transport import client_options

# The Azure SDK is imported inside the functions that use it, on purpose: it costs about half a second of
# every cold start (docs/benchmarks.md), and a message that is refused at once never needs it.

if TYPE_CHECKING:
    from azure.data.tables import TableClient, TableServiceClient
    from azure.identity import ManagedIdentityCredential
    from azure.storage.queue import QueueServiceClient

CONNECTION = "AzureWebJobsStorage"
# azure-storage-queue's own read size (`_shared/constants.py` DATA_BLOCK_SIZE), which it sets only on a transport
# it makes itself; the app's clients get a transport from shared/azure/transport.py.
QUEUE_DATA_BLOCK_SIZE = 256 * 1024


class StorageSettingsError(ValueError):
    pass


def service_uri(env: Mapping[str, str], prefix: str, service: str) -> str | None:
    """The identity-based form's endpoint: `<prefix>__<service>ServiceUri`, else from `__accountName`."""
    explicit = env.get(f"{prefix}__{service}ServiceUri")
    if explicit:
        return explicit
    account = env.get(f"{prefix}__accountName")
    return f"https://{account}.{service}.core.windows.net" if account else None


def _identity(env: Mapping[str, str], prefix: str) -> ManagedIdentityCredential:
    from azure.identity import ManagedIdentityCredential

    client_id = env.get(f"{prefix}__clientId") or None
    options = client_options(identity_options())  # proxies and CA bundle read once (shared/azure/transport.py)
    return ManagedIdentityCredential(client_id=client_id, **options) if client_id else \
        ManagedIdentityCredential(**options)


@overload
def service_client(kind: Literal["queue"], env: Mapping[str, str] | None = None, prefix: str = CONNECTION, *,
                   credential: Callable[[], Any] | None = None,
                   options: Mapping[str, Any] | None = None) -> QueueServiceClient: ...
@overload
def service_client(kind: Literal["table"], env: Mapping[str, str] | None = None, prefix: str = CONNECTION, *,
                   credential: Callable[[], Any] | None = None,
                   options: Mapping[str, Any] | None = None) -> TableServiceClient: ...
def service_client(kind: Literal["queue", "table"], env: Mapping[str, str] | None = None, prefix: str = CONNECTION,
                   *, credential: Callable[[], Any] | None = None,
                   options: Mapping[str, Any] | None = None) -> QueueServiceClient | TableServiceClient:
    """A queue or table service client from the connection string or the identity-based settings: the one
    place storage clients are made. The app's (default): its managed identity, calls bounded by its
    deadlines, proxies and CA bundle read once (shared/azure/transport.py); the CLI passes a person's credential
    and its own options (cli/connection.py), which the SDK completes as it does by default."""
    Client: type[QueueServiceClient | TableServiceClient]
    if kind == "queue":
        from azure.storage.queue import QueueServiceClient as Client
    else:
        from azure.data.tables import TableServiceClient as Client

    env = os.environ if env is None else env
    if options is None:  # every call ends inside functionTimeout (shared/azure/deadlines.py)
        block = {"connection_data_block_size": QUEUE_DATA_BLOCK_SIZE} if kind == "queue" else {}
        options = client_options({**storage_client_options(kind), **block})
    if env.get(prefix):
        return Client.from_connection_string(env[prefix], **options)
    uri = service_uri(env, prefix, kind)
    if not uri:
        raise StorageSettingsError(f"set {prefix} (connection string) or {prefix}__{kind}ServiceUri")
    return Client(uri, credential=credential() if credential else _identity(env, prefix), **options)


def queue_service(env: Mapping[str, str] | None = None, prefix: str = CONNECTION) -> QueueServiceClient:
    return service_client("queue", env, prefix)


def table_service(env: Mapping[str, str] | None = None, prefix: str = CONNECTION) -> TableServiceClient:
    return service_client("table", env, prefix)


class LazyTable:
    """A table client made (and the table created) on first use, once, whichever thread comes first."""

    def __init__(self, table_name: str, service: TableServiceClient | None = None) -> None:
        self._table_name = table_name
        self._service = service
        self._table: TableClient | None = None
        self._lock = threading.Lock()

    def __call__(self) -> TableClient:
        with self._lock:
            if self._table is None:
                service = self._service or table_service()
                self._table = service.create_table_if_not_exists(self._table_name)
            return self._table


def settings_problem(env: Mapping[str, str] | None = None, prefix: str = CONNECTION) -> tuple[str, str] | None:
    """(setting, message) when the app could not reach its own queues and status table with these settings,
    checked without a network call; None when they look usable. The message never holds the value (a
    connection string may carry a key)."""
    env = os.environ if env is None else env
    if env.get(prefix):
        try:
            queue_service(env, prefix)
            table_service(env, prefix)
        except Exception as exc:  # the SDKs raise ValueError, KeyError, ... for a malformed string
            return prefix, (f"{prefix} is not a usable storage connection string ({type(exc).__name__}); "
                            f"set a connection string or the identity-based {prefix}__queueServiceUri and "
                            f"__tableServiceUri")
        return None
    account = env.get(f"{prefix}__accountName")
    if account and not re.fullmatch(r"[a-z0-9]{3,24}", account):
        return f"{prefix}__accountName", f"{prefix}__accountName must be a storage account name (3-24 lowercase " \
                                         "letters and digits)"
    for kind in ("queue", "table"):
        uri = service_uri(env, prefix, kind)
        setting = f"{prefix}__{kind}ServiceUri" if env.get(f"{prefix}__{kind}ServiceUri") else f"{prefix}__accountName"
        if not uri:
            return f"{prefix}__{kind}ServiceUri", (f"set {prefix} (connection string) or {prefix}__{kind}ServiceUri "
                                                   f"(or {prefix}__accountName): the app keeps its status table and "
                                                   "dead letters there")
        if not uri.lower().startswith("https://") or not _service_host(uri):
            return setting, f"{setting} must name an https:// storage endpoint (the app sends its token there)"
    return None


def _service_host(uri: str) -> str | None:
    try:
        return urlsplit(uri).hostname
    except ValueError:
        return None
