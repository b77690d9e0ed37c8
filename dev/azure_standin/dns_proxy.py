"""The stand-in's "DNS" for `*.azurecr.io`: an HTTP CONNECT proxy on `layout.ACR_DNS_PROXY_PORT`.

The Azure CLI's data-plane commands (`az acr repository show-tags`, `az acr manifest list-metadata`) build the
registry's URL from the `loginServer` ARM returns, `https://myregistry.azurecr.io/...` on port 443 (azure-cli 2.91
`acr/_docker_utils.py` `_get_credentials` and `request_data_from_registry`), and have no setting to send it
elsewhere. They use `requests`, which honours `HTTPS_PROXY`/`NO_PROXY`, so with `HTTPS_PROXY` naming this proxy
the CLI asks `CONNECT myregistry.azurecr.io:443` and this proxy tunnels the bytes to that ACR's loopback login
server. TLS stays end to end: the client checks the login server's certificate against `myregistry.azurecr.io`
(the stack's server certificate carries each ACR's name, `dev/ca.py`).

Only `<acr>.azurecr.io:443` of the stack's ACRs is tunnelled; every other host is refused (403), so that:
a misdirected call (Entra, Docker Hub, a typo'd registry) fails loudly instead of leaving the machine through a
loopback proxy, the proxy is no open relay for whatever else runs on the host, and a test never depends on the
internet. Plain-HTTP proxying (`GET http://...`) is refused as well (405): nothing here needs it.
"""

from __future__ import annotations

import logging
import select
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from dev import layout

log = logging.getLogger("azure_standin.dns_proxy")
_BLOCK = 64 << 10


def tunnel_target(authority: str) -> tuple[layout.AcrSpec | None, str]:
    """The ACR a `CONNECT host:port` names, or None and why it is refused."""
    host, _, port = authority.rpartition(":")
    if not host or not port.isdigit():
        return None, f"CONNECT needs host:port, got {authority!r}"
    acr = layout.acr_for_login_server(host)
    if acr is None:
        known = ", ".join(a.login_server for a in layout.ACRS)
        return None, f"{host} is not an ACR of the local stack (this proxy tunnels only {known}, on port 443)"
    if port != "443":
        return None, f"{host} is served on port 443 only, not {port}"
    return acr, ""


class DnsProxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int | None = None) -> None:
        super().__init__((layout.HOST, layout.ACR_DNS_PROXY_PORT if port is None else port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "azure-standin-dns-proxy"

    def _refuse(self, status: int, message: str) -> None:
        body = (message + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def do_CONNECT(self) -> None:
        acr, reason = tunnel_target(self.path)
        if acr is None:
            log.info("refused CONNECT %s: %s", self.path, reason)
            self._refuse(403, reason)
            return
        try:
            upstream = socket.create_connection((layout.HOST, acr.port), timeout=30)
        except OSError as exc:
            self._refuse(502, f"the login server of {acr.login_server} (port {acr.port}) is not answering: "
                              f"{type(exc).__name__}; is the stack running?")
            return
        self.send_response(200, "Connection Established")
        self.end_headers()
        self.close_connection = True
        self._pump(self.connection, upstream)

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        """Copy bytes both ways until either side closes."""
        with upstream:
            client.settimeout(None)
            upstream.settimeout(None)
            sockets = [client, upstream]
            while True:
                readable, _, broken = select.select(sockets, [], sockets, 300)
                if broken or not readable:
                    return
                for source in readable:
                    try:
                        block = source.recv(_BLOCK)
                    except OSError:
                        return
                    if not block:
                        return
                    (upstream if source is client else client).sendall(block)

    def _not_a_tunnel(self) -> None:
        self._refuse(405, "this proxy only tunnels HTTPS (CONNECT <acr>.azurecr.io:443)")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _not_a_tunnel

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.client_address[0], format % args)
