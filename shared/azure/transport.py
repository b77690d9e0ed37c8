"""How the app's HTTP clients reach the network: proxies and the CA bundle, read from the environment once,
when a client is built, and not again on every call.

`requests` reads the environment on every call of a session that trusts it (`Session.trust_env`, on by
default and in azure-core's `RequestsTransport` unless `use_env_settings=False`): `merge_environment_settings`
walks and decodes the whole of `os.environ` twice (`urllib.request.getproxies_environment`, once for the
proxies and once more for NO_PROXY), then reads REQUESTS_CA_BUNDLE, and `prepare_request` looks for a
`.netrc`. That was about a tenth of the worker's CPU per import (docs/benchmarks.md, "Cost per import", cut
3), and more in a Function App, whose environment is larger than the local stack's (the same cost reported
upstream: psf/requests#5600, "every get request call will scan through" the environment; python/cpython#91539,
`getproxies_environment` iterates over it twice).

Here the same settings are read once, by requests' own rules, into `NetworkSettings`:
- the proxies: `urllib.request.getproxies()` as requests calls it (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, ...;
  the lower-case name wins over the upper-case one);
- NO_PROXY (`no_proxy` first), applied to each URL as requests' `should_bypass_proxies` applies it (host
  and `host:port` suffixes, IPv4 addresses and CIDR ranges, `*`);
- the CA bundle: REQUESTS_CA_BUNDLE, else CURL_CA_BUNDLE, else requests' default (certifi). requests does not
  read SSL_CERT_FILE, so neither does this.
Every client gets them explicitly: the Azure SDK clients (storage, ARM, the managed identity's token
requests) through a `RequestsTransport` whose session does not trust the environment but merges these
settings into each call exactly where requests would (`client_options`); the registry client
(shared/registry/client.py) through `NetworkSettings.proxies_for` and `.ca_bundle`. A change to the
environment after a client is built does not change what it does: app settings change with a restart, and
the Functions host's own .NET clients read them once per process too (`HttpClient.DefaultProxy` is initialized
from HTTP_PROXY / HTTPS_PROXY / ALL_PROXY / NO_PROXY, learn.microsoft.com/dotnet/api/
system.net.http.httpclient.defaultproxy). `.netrc` is not read: every call carries the Authorization its
client chose.

Each client keeps a session of its own, as azure-core gives it one by default: `RequestsTransport.close()`
closes the session it owns, and its adapter's pools (10 hosts, 10 connections a host) stay per client.
`requests` and azure-core are imported on first use (cold start, docs/benchmarks.md).
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable, Mapping
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import requests

# The keyword arguments azure-core's RequestsTransport keeps in its ConnectionConfiguration: an SDK client
# applies them only to a transport it makes itself, so a transport given to it must be built with them.
CONNECTION_OPTIONS = ("connection_timeout", "read_timeout", "connection_verify", "connection_cert",
                      "connection_data_block_size")


class NetworkSettings:
    """Proxies and CA bundle as requests would read them from the environment, read once. (A plain class: a
    dataclass costs a millisecond of every cold start to build.)"""

    __slots__ = ("_bypassed", "ca_bundle", "no_proxy", "proxies")

    def __init__(self, proxies: Mapping[str, str] | None = None, no_proxy: str | None = None,
                 ca_bundle: str | None = None) -> None:
        self.proxies: Mapping[str, str] = dict(proxies or {})  # urllib.request.getproxies(): scheme -> proxy URL
        self.no_proxy = no_proxy  # NO_PROXY as requests reads it (`no_proxy or NO_PROXY`)
        self.ca_bundle = ca_bundle  # REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE; None: requests' default (certifi)
        self._bypassed: dict[tuple[str, str, int | None], bool] = {}

    def __repr__(self) -> str:
        return f"NetworkSettings(proxies={self.proxies!r}, no_proxy={self.no_proxy!r}, ca_bundle={self.ca_bundle!r})"

    def proxies_for(self, url: str) -> dict[str, str]:
        """What requests' `get_environ_proxies(url)` answers, without reading the environment: every proxy
        unless NO_PROXY exempts the URL's host. The answer per scheme, host and port is kept."""
        if not self.proxies:
            return {}
        parts = urllib.parse.urlsplit(url)
        key = (parts.scheme, parts.hostname or "", parts.port)
        bypassed = self._bypassed.get(key)
        if bypassed is None:
            bypassed = self._bypassed[key] = _bypasses(parts, self.no_proxy, self.proxies)
        return {} if bypassed else dict(self.proxies)


def read_network() -> NetworkSettings:
    """The environment's proxy and CA settings, now, as requests would read them for a call."""
    import urllib.request

    env = os.environ
    return NetworkSettings(proxies=urllib.request.getproxies(), no_proxy=env.get("no_proxy") or env.get("NO_PROXY"),
                           ca_bundle=env.get("REQUESTS_CA_BUNDLE") or env.get("CURL_CA_BUNDLE") or None)


def _bypasses(parts: urllib.parse.SplitResult, no_proxy: str | None, proxies: Mapping[str, str]) -> bool:
    """requests' `should_bypass_proxies` (requests 2.34 utils.py) over the settings read once. Its last step,
    urllib's `proxy_bypass`, is `proxy_bypass_environment` on Linux (where the app runs), given the proxies
    read once here; on macOS and Windows requests would also consult the system's proxy exceptions."""
    import urllib.request

    from requests.utils import address_in_network, is_ipv4_address, is_valid_cidr

    hostname = parts.hostname
    if not hostname:
        return True
    if no_proxy:
        hosts = [host for host in no_proxy.replace(" ", "").split(",") if host]
        if is_ipv4_address(hostname):
            for entry in hosts:
                if (is_valid_cidr(entry) and address_in_network(hostname, entry)) or hostname == entry:
                    return True
        else:
            with_port = f"{hostname}:{parts.port}" if parts.port else hostname
            for entry in hosts:
                entry = entry.lstrip(".")
                if hostname == entry or with_port == entry:
                    return True
                if hostname.endswith("." + entry) or with_port.endswith("." + entry):
                    return True
    try:
        return bool(urllib.request.proxy_bypass_environment(hostname, dict(proxies)))  # type: ignore[attr-defined]
    except (TypeError, OSError):
        return False


def session(network: NetworkSettings | None = None) -> requests.Session:
    """A requests session that applies `network` (read now when not given) where requests would apply the
    environment, and never reads the environment itself."""
    return _session_type()(network or read_network())


@cache
def _session_type() -> Callable[[NetworkSettings], requests.Session]:
    import requests

    class SettledSession(requests.Session):
        """`trust_env` off; the proxies and CA bundle read once, merged as requests merges the environment's."""

        def __init__(self, network: NetworkSettings) -> None:
            super().__init__()
            self.trust_env = False
            self.network = network

        def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any,
                                       cert: Any) -> dict[str, Any]:
            if proxies is not None:  # requests.Session.request passes `proxies or {}`
                for scheme, proxy in self.network.proxies_for(url).items():
                    proxies.setdefault(scheme, proxy)
            if verify is True or verify is None:
                verify = self.network.ca_bundle or verify
            merged: dict[str, Any] = super().merge_environment_settings(url, proxies, stream, verify, cert)
            return merged

    return SettledSession


def client_options(options: Mapping[str, Any], network: NetworkSettings | None = None) -> dict[str, Any]:
    """The keyword arguments of an Azure SDK client (or credential): `options` (its deadlines,
    shared/azure/deadlines.py), and a `transport` built with their connection settings whose session applies
    `network` (read now when not given) instead of reading the environment on every call."""
    from azure.core.pipeline.transport import RequestsTransport

    connection = {name: value for name, value in options.items() if name in CONNECTION_OPTIONS}
    transport = RequestsTransport(session=session(network), session_owner=True, use_env_settings=False, **connection)
    # azure-core mounts its adapter (urllib3 retries off: its RetryPolicy retries; 32 KiB socket reads) only on
    # a session it makes itself; this one gets the same, and `trust_env` stays off (use_env_settings=False).
    assert transport.session is not None
    transport._init_session(transport.session)
    return {**options, "transport": transport}
