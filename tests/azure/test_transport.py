"""The app's HTTP clients read proxies and the CA bundle once, when they are built (shared/azure/transport.py):
the same answers requests would give from the environment, through a real proxy for every kind of call the
app makes (status table, ARM, managed identity, registry), and a change to the environment afterwards changes
nothing."""

from __future__ import annotations

import http.client
import select
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import certifi
import pytest
import requests
import requests.utils

from dev import layout
from shared.azure.transport import CONNECTION_OPTIONS, client_options, read_network, session

PROXY_SETTINGS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY",
                  "no_proxy", "REQUEST_METHOD", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


@pytest.fixture
def clean_env(monkeypatch):
    for name in PROXY_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# --- the same answers as requests, from settings read once ----------------------------------------------

ENVIRONMENTS = [
    {},
    {"HTTPS_PROXY": "http://proxy.corp:3128"},
    {"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:2"},  # the lower-case name wins
    {"https_proxy": "", "HTTPS_PROXY": "http://upper:1"},  # an empty lower-case name unsets it
    {"HTTP_PROXY": "http://p:1", "REQUEST_METHOD": "GET"},  # CGI: HTTP_PROXY may come from a request header
    {"ALL_PROXY": "socks5://s:1080"},
    {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "example.com"},
    {"HTTPS_PROXY": "http://p:1", "NO_PROXY": ".example.com, other.net"},
    {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "example.com:8443"},
    {"HTTPS_PROXY": "http://p:1", "no_proxy": "10.0.0.0/8,127.0.0.1"},
    {"HTTPS_PROXY": "http://p:1", "no_proxy": "", "NO_PROXY": "example.com"},
    {"HTTPS_PROXY": "http://p:1", "HTTP_PROXY": "http://q:2", "NO_PROXY": "*"},
    {"HTTPS_PROXY": "http://p:1", "REQUESTS_CA_BUNDLE": "/ca/a.pem", "CURL_CA_BUNDLE": "/ca/b.pem"},
    {"CURL_CA_BUNDLE": "/ca/b.pem"},
]
URLS = ["https://example.com/x", "https://sub.example.com/x", "https://example.com:8443/x", "http://example.com/",
        "https://notexample.com/", "https://10.1.2.3:9443/subscriptions", "http://127.0.0.1:10002/t",
        "https://other.net/v2/", "https://management.azure.com/subscriptions?api-version=1"]


@pytest.mark.parametrize("env", ENVIRONMENTS, ids=lambda env: ",".join(f"{k}={v}" for k, v in env.items()) or "none")
def test_a_call_gets_the_proxies_and_ca_bundle_requests_would_read_from_the_environment(clean_env, env):
    for name, value in env.items():
        clean_env.setenv(name, value)
    settled, trusting = session(), requests.Session()
    for url in URLS:
        assert read_network().proxies_for(url) == requests.utils.get_environ_proxies(url), url
        for verify in (True, None, False, "/mine.pem"):
            mine = settled.merge_environment_settings(url, {}, None, verify, None)
            theirs = trusting.merge_environment_settings(url, {}, None, verify, None)
            assert mine == theirs, (url, verify)


def test_after_a_session_is_built_the_environment_no_longer_changes_its_calls(clean_env):
    clean_env.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    clean_env.setenv("REQUESTS_CA_BUNDLE", "/ca/built.pem")
    built = session()
    before = built.merge_environment_settings("https://example.com/", {}, None, True, None)
    clean_env.setenv("NO_PROXY", "*")
    clean_env.setenv("HTTPS_PROXY", "http://elsewhere:1")
    clean_env.setenv("REQUESTS_CA_BUNDLE", "/ca/later.pem")
    assert built.merge_environment_settings("https://example.com/", {}, None, True, None) == before
    assert before["proxies"]["https"] == "http://proxy.corp:3128" and before["verify"] == "/ca/built.pem"
    assert built.trust_env is False


def _transports(root: Any, depth: int = 10) -> list[Any]:
    """Every azure-core RequestsTransport reachable from `root` through its attributes (the SDKs nest them)."""
    from azure.core.pipeline.transport import RequestsTransport

    found, seen, todo = [], set(), [(root, 0)]
    while todo:
        obj, level = todo.pop(0)  # breadth first: each object at its shortest distance
        if id(obj) in seen or level > depth or isinstance(obj, str | bytes | int | float | type):
            continue
        seen.add(id(obj))
        if isinstance(obj, RequestsTransport):
            found.append(obj)
            continue
        values = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, list | tuple) else \
            vars(obj).values() if hasattr(obj, "__dict__") else ()
        todo.extend((value, level + 1) for value in values)
    return found


def test_every_azure_sdk_client_the_app_builds_sends_through_a_settled_session(clean_env):
    from shared.azure.arm import AcrManagement, make_credential
    from shared.azure.storage import service_client
    from shared.core.settings import load_settings

    clean_env.setenv("IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi/token")  # App Service's managed identity
    clean_env.setenv("IDENTITY_HEADER", "header")
    settings = load_settings({"TARGET_REGISTRY": layout.TARGET_ACR.resource_id})
    identity_based = {"AzureWebJobsStorage__queueServiceUri": "https://q.example.net",
                      "AzureWebJobsStorage__tableServiceUri": "https://t.example.net"}
    built = {
        "queue (connection string)": service_client("queue", {"AzureWebJobsStorage": layout.AZURITE_CONNECTION_STRING}),
        "table (connection string)": service_client("table", {"AzureWebJobsStorage": layout.AZURITE_CONNECTION_STRING}),
        "queue and its identity": service_client("queue", identity_based),
        "table and its identity": service_client("table", identity_based),
        "ARM and its identity": AcrManagement(settings)._client(layout.TARGET_ACR.subscription),
        "the app's identity": make_credential(settings),
    }
    for name, client in built.items():
        transports = _transports(client)
        expected = 2 if "and its identity" in name else 1
        assert len(transports) >= expected, name
        for transport in transports:
            assert type(transport.session).__name__ == "SettledSession" and transport.session.trust_env is False, name


def test_a_client_transport_keeps_the_deadlines_and_azure_cores_own_adapter():
    from azure.core.pipeline.transport import RequestsTransport

    options = {"connection_timeout": 3.0, "read_timeout": 5.0, "retry_total": 1}
    built = client_options(options)
    assert {k: v for k, v in built.items() if k != "transport"} == options
    transport, default = built["transport"], RequestsTransport()
    default.open()
    assert (transport.connection_config.timeout, transport.connection_config.read_timeout) == (3.0, 5.0)
    for scheme in ("http://", "https://"):
        mine, theirs = transport.session.adapters[scheme], default.session.adapters[scheme]
        assert type(mine) is type(theirs)
        assert repr(mine.max_retries) == repr(theirs.max_retries)
    assert set(CONNECTION_OPTIONS) >= {"connection_timeout", "read_timeout"}


# --- through a real proxy, with the stack --------------------------------------------------------------

class RecordingProxy(ThreadingHTTPServer):
    """A loopback HTTP proxy that tunnels CONNECT and forwards plain-HTTP requests, recording each target and
    the bytes sent to each port (a kept-alive tunnel carries later calls without a new CONNECT)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__((layout.HOST, 0), _ProxyHandler)
        self.targets: list[str] = []
        self.sent: Counter[int] = Counter()
        self.url = f"http://{layout.HOST}:{self.server_address[1]}"

    def ports(self) -> set[int]:
        """The ports anything was sent to through this proxy."""
        return {port for port, size in self.sent.items() if size}

    def clear(self) -> None:
        self.targets.clear()
        self.sent.clear()


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: RecordingProxy

    def do_CONNECT(self) -> None:
        self.server.targets.append(self.path)
        host, _, port = self.path.rpartition(":")
        with socket.create_connection((host, int(port)), timeout=30) as upstream:
            self.send_response(200, "Connection Established")
            self.end_headers()
            self.close_connection = True
            sockets = [self.connection, upstream]
            while True:
                readable, _, _ = select.select(sockets, [], [], 30)
                if not readable:
                    return
                for source in readable:
                    block = source.recv(65536)
                    if not block:
                        return
                    if source is self.connection:
                        self.server.sent[int(port)] += len(block)
                    (upstream if source is self.connection else self.connection).sendall(block)

    def _forward(self) -> None:
        target = urlsplit(self.path)
        self.server.targets.append(f"{target.hostname}:{target.port}")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.sent[target.port or 80] += 1 + len(body)
        upstream = http.client.HTTPConnection(target.hostname or "", target.port, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection", "connection")}
        upstream.request(self.command, target.path + (f"?{target.query}" if target.query else ""), body, headers)
        answer = upstream.getresponse()
        data = answer.read()
        self.send_response(answer.status, answer.reason)
        for name, value in answer.getheaders():
            if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        upstream.close()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_MERGE = _forward

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[RecordingProxy]:
    server = RecordingProxy()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _set_proxy(monkeypatch, url: str | None, no_proxy: str | None = None) -> None:
    for name in PROXY_SETTINGS[:8]:
        monkeypatch.delenv(name, raising=False)
    if url:
        monkeypatch.setenv("HTTPS_PROXY", url)
        monkeypatch.setenv("HTTP_PROXY", url)
    if no_proxy:
        monkeypatch.setenv("NO_PROXY", no_proxy)


def _calls(objects: Any) -> None:
    """One call of each kind the app makes: the status table, ARM (with a managed identity token while none is
    cached), a registry. The app's clients are built on first use: the first call builds them."""
    assert objects.status.get("no-such-request") is None
    assert objects.arm.registry_by_login_server(layout.TARGET_ACR.subscription, layout.TARGET_ACR.login_server)
    registries, _ = objects.reader()
    assert registries.head_manifest("docker.io", "library/hello-world", "latest") is not None


def _built() -> Any:
    from shared import app_context

    return app_context.build(app_context.app_settings())


ALWAYS_CALLED = {"status table": layout.AZURITE_TABLE_PORT, "ARM": layout.AZURE_STANDIN_PORT,
                 "registry": layout.DOCKERHUB_FRONT_PORT}


def test_the_apps_calls_go_through_the_proxy_the_environment_names(app_env, monkeypatch, proxy):
    _set_proxy(monkeypatch, proxy.url)
    _calls(_built())
    expected = {**ALWAYS_CALLED, "managed identity": layout.IDENTITY_PORT}
    missing = {what: port for what, port in expected.items() if port not in proxy.ports()}
    assert not missing, f"not through the proxy: {missing}; it saw {proxy.targets}"


def test_no_proxy_still_exempts_hosts(app_env, monkeypatch, proxy):
    _set_proxy(monkeypatch, proxy.url, no_proxy=f"{layout.HOST.rpartition('.')[0]}.0/24")  # a CIDR range
    _calls(_built())
    assert proxy.targets == [] and not proxy.ports()


def test_a_proxy_set_or_unset_after_the_clients_are_built_changes_nothing(app_env, monkeypatch, proxy):
    from shared.azure import arm

    monkeypatch.setattr(arm, "REGISTRY_CACHE_SECONDS", -1.0)  # every look-up asks ARM again
    _set_proxy(monkeypatch, proxy.url)
    through = _built()
    _calls(through)
    proxy.clear()
    _set_proxy(monkeypatch, None, no_proxy="*")
    _calls(through)
    missing = {what: port for what, port in ALWAYS_CALLED.items() if port not in proxy.ports()}
    assert not missing, f"no longer through the proxy: {missing}; it saw {proxy.targets}"

    direct = _built()
    _calls(direct)
    proxy.clear()
    _set_proxy(monkeypatch, proxy.url)
    _calls(direct)
    assert proxy.targets == [] and not proxy.ports()


def test_the_ca_bundle_is_the_one_named_when_the_client_was_built(app_env, monkeypatch, proxy):
    """The stack's TLS servers are signed by its own CA (REQUESTS_CA_BUNDLE): through the proxy's tunnel the
    calls verify against it (the tests above); a client built while the variable named another bundle keeps
    refusing them after the variable is put back."""
    from azure.core.exceptions import ServiceRequestError

    from shared.registry.client import RegistryError

    _set_proxy(monkeypatch, proxy.url)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())  # a bundle without the stack's CA
    wrong = _built()
    for _attempt in ("built with certifi's bundle", "REQUESTS_CA_BUNDLE put back"):
        with pytest.raises(ServiceRequestError, match="CERTIFICATE_VERIFY_FAILED"):
            wrong.arm.registry_by_login_server(layout.TARGET_ACR.subscription, layout.TARGET_ACR.login_server)
        with pytest.raises(RegistryError, match="TLS"):
            wrong.reader()[0].head_manifest("docker.io", "library/hello-world", "latest")
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", app_env["REQUESTS_CA_BUNDLE"])
    assert layout.AZURE_STANDIN_PORT in proxy.ports()  # the TLS that failed was the tunnelled one
