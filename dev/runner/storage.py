"""A binding's `connection` as the host resolves it: a connection string, or identity-based settings.

The host (azure-webjobs-sdk `AzureComponentFactory`, Microsoft.Extensions.Azure `ClientFactory`) reads a
connection named `X` as the setting `X` (or `AzureWebJobsX`) holding a connection string, else as the section
`X__...`: `__queueServiceUri` / `__tableServiceUri` / `__blobServiceUri` (`__serviceUri` is the blob one),
or `__accountName` for all three in the public cloud, and the credential: `__credential` = `managedidentity`
means ManagedIdentityCredential with `__clientId` (a user-assigned identity) or without (system-assigned);
with no `__credential`, a `__clientId` still selects the managed identity (DefaultAzureCredential with
ManagedIdentityClientId). The runner serves these two; other credential kinds (workload identity, client
secrets, certificates) are refused at start-up, as settings this project never deploys.
"""

from __future__ import annotations

import functools
import os
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from dev.runner.config import ConfigError

SERVED_CREDENTIALS = ("managedidentity",)
_SERVICES = ("queue", "table", "blob")
# What the storage SDKs set on a transport they make themselves (azure-storage-queue/-blob `_shared/constants.py`);
# a transport given to them is used as it is.
_STORAGE_CONNECTION = {"connection_timeout": 20, "read_timeout": 60, "connection_data_block_size": 256 * 1024}


def _transport(**connection: Any) -> Any:
    """An azure-core transport that reads proxies and the CA bundle once, when the client is built, as the
    Functions host's .NET clients do (HttpClient's default proxy is read from HTTPS_PROXY / NO_PROXY once per
    process), instead of `requests` walking os.environ on every call (docs/benchmarks.md, "Cost per import",
    cut 3). The app does the same in shared/azure/transport.py; dev/ never imports shared/."""
    from azure.core.pipeline.transport import RequestsTransport

    transport = RequestsTransport(session=_session_type()(), session_owner=True, use_env_settings=False, **connection)
    assert transport.session is not None
    transport._init_session(transport.session)  # azure-core's adapter, as on a session it makes itself
    return transport


@functools.cache
def _session_type() -> Any:
    import requests

    class SettledSession(requests.Session):
        """`trust_env` off; the environment's proxies (urllib's NO_PROXY rule) and CA bundle, read once."""

        def __init__(self) -> None:
            super().__init__()
            self.trust_env = False
            self.env_proxies = urllib.request.getproxies()
            self.ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")

        def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any,
                                       cert: Any) -> dict[str, Any]:
            if proxies is not None and self.env_proxies and not urllib.request.proxy_bypass_environment(  # type: ignore[attr-defined]
                    urlsplit(url).hostname or "", self.env_proxies):
                for scheme, proxy in self.env_proxies.items():
                    proxies.setdefault(scheme, proxy)
            if verify is True or verify is None:
                verify = self.ca_bundle or verify
            merged: dict[str, Any] = super().merge_environment_settings(url, proxies, stream, verify, cert)
            return merged

    return SettledSession


@dataclass(frozen=True)
class StorageConnection:
    """Where one connection points and how it authenticates; never printed with its secret."""

    name: str
    connection_string: str | None = None
    service_uris: tuple[tuple[str, str], ...] = ()   # (service, uri) for the identity-based form
    client_id: str | None = None

    @property
    def identity_based(self) -> bool:
        return self.connection_string is None

    def uri(self, service: str) -> str:
        uris = dict(self.service_uris)
        if service not in uris:
            raise ConfigError(f"connection {self.name}: set {self.name}__{service}ServiceUri (or "
                              f"{self.name}__accountName) for the {service} service")
        return uris[service]

    def credential(self) -> Any:
        from azure.identity import ManagedIdentityCredential

        options = {"transport": _transport()}
        return ManagedIdentityCredential(client_id=self.client_id, **options) if self.client_id else \
            ManagedIdentityCredential(**options)

    def queue_client(self, queue: str) -> Any:
        """A client that sends and returns message text as is: encoding is the host's to apply."""
        from azure.storage.queue import QueueClient

        transport = _transport(**_STORAGE_CONNECTION)
        if self.connection_string is not None:
            return QueueClient.from_connection_string(self.connection_string, queue, transport=transport)
        return QueueClient(self.uri("queue"), queue, credential=self.credential(), transport=transport)

    def blob_service(self) -> Any:
        from azure.storage.blob import BlobServiceClient

        transport = _transport(**_STORAGE_CONNECTION)
        if self.connection_string is not None:
            return BlobServiceClient.from_connection_string(self.connection_string, transport=transport)
        return BlobServiceClient(self.uri("blob"), credential=self.credential(), transport=transport)


def resolve_connection(setting: str | None, settings: dict[str, str]) -> StorageConnection:
    """The connection a binding's `connection` names (default AzureWebJobsStorage), or ConfigError saying
    which setting is missing or not served."""
    name = setting or "AzureWebJobsStorage"
    for key in (name, f"AzureWebJobs{name}"):
        if settings.get(key):
            return StorageConnection(key, connection_string=settings[key])
    for prefix in (name, f"AzureWebJobs{name}"):
        section = {k[len(prefix) + 2:].lower(): v for k, v in settings.items() if k.startswith(f"{prefix}__") and v}
        if section:
            return _identity_connection(prefix, section)
    raise ConfigError(f"connection {name!r} is not set (no app setting {name}, nor {name}__queueServiceUri, ...)")


def _identity_connection(prefix: str, section: dict[str, str]) -> StorageConnection:
    credential = section.get("credential", "").lower()
    if credential and credential not in SERVED_CREDENTIALS:
        raise ConfigError(f"{prefix}__credential={section['credential']!r} is not served by the dev runner "
                          f"(it serves {', '.join(SERVED_CREDENTIALS)}, or no __credential)")
    identifiers = [k for k in ("clientid", "managedidentityclientid", "managedidentityresourceid",
                               "managedidentityobjectid") if section.get(k)]
    if len(identifiers) > 1:  # Microsoft.Extensions.Azure: "Only one of [...] can be specified for managed identity."
        raise ConfigError(f"{prefix}: only one of __clientId, __managedIdentityClientId, "
                          "__managedIdentityResourceId, __managedIdentityObjectId may be set")
    if identifiers and identifiers[0] not in ("clientid", "managedidentityclientid"):
        raise ConfigError(f"{prefix}: the dev runner selects a managed identity by __clientId only")
    uris: dict[str, str] = {}
    account = section.get("accountname")
    for service in _SERVICES:
        explicit = section.get(f"{service}serviceuri") or (section.get("serviceuri") if service == "blob" else None)
        uri = explicit or (f"https://{account}.{service}.core.windows.net" if account else None)
        if uri is None:
            continue
        if not uri.lower().startswith("https://"):
            # azure-core's BearerTokenCredentialPolicy refuses to send a token over plain HTTP
            raise ConfigError(f"{prefix}__{service}ServiceUri must be an https:// endpoint: a bearer token is "
                              "only sent over TLS")
        uris[service] = uri.rstrip("/")
    if "queue" not in uris and "blob" not in uris:
        raise ConfigError(f"{prefix}: identity-based settings name no service: set {prefix}__queueServiceUri, "
                          f"{prefix}__blobServiceUri or {prefix}__accountName")
    client_id = section.get(identifiers[0]) if identifiers else None
    return StorageConnection(prefix, service_uris=tuple(uris.items()), client_id=client_id)
