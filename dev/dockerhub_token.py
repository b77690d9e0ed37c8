"""A stand-in for auth.docker.io: the token server the Docker Hub registry stand-in sends clients to.

Anonymous callers get `pull` on public namespaces only and an empty grant elsewhere (the registry then
answers UNAUTHORIZED, as Docker Hub does for private repositories); the Docker Hub user gets everything.
Per-path request counts (`GET /_stats`) let benchmarks count token fetches, which Docker Hub rate-limits.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from dev import ca, layout, tokens

TOKEN_TTL = 300
ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Scope:
    type: str
    name: str
    actions: tuple[str, ...]


def parse_scope(scope: str) -> Scope | None:
    """`repository:library/nginx:pull,push` -> Scope; None when malformed. Names may contain ':' (ports)."""
    kind, sep, rest = scope.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not (sep and sep2 and kind and name):
        return None
    return Scope(kind, name, tuple(a for a in actions.split(",") if a))


def granted_access(user: str | None, scopes: list[str], spec: layout.UpstreamSpec = layout.DOCKERHUB
                   ) -> list[dict[str, Any]]:
    """What a caller may do: the Docker Hub user everything asked, anonymous pull on public prefixes only."""
    access = []
    for raw in scopes:
        for part in raw.split():
            scope = parse_scope(part)
            if scope is None or scope.type != "repository":
                continue
            if user is not None:
                allowed = [a for a in scope.actions if a in ("pull", "push", "delete", "*")]
            elif scope.name.startswith(spec.anonymous_pull):
                allowed = [a for a in scope.actions if a == "pull"]
            else:
                allowed = []
            access.append({"type": scope.type, "name": scope.name, "actions": allowed})
    return access


def authenticated_user(header: str | None, spec: layout.UpstreamSpec = layout.DOCKERHUB) -> str | None:
    """The user named by valid Basic credentials, None when anonymous; PermissionError when wrong."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        raise PermissionError("unsupported authorization scheme")
    try:
        user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise PermissionError("malformed basic credentials") from exc
    expected = spec.users.get(user)
    if expected is None or not hmac.compare_digest(expected.encode(), password.encode()):
        raise PermissionError("incorrect username or password")
    return user


class TokenServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int]):
        super().__init__(address, _Handler)
        self.stats: Counter[str] = Counter()
        self.stats_lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server: TokenServer
    protocol_version = "HTTP/1.1"

    def _send_json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        with self.server.stats_lock:
            self.server.stats[url.path] += 1
        if url.path == "/health":
            self._send_json(200, {"status": "ok"})
        elif url.path == "/_stats":
            with self.server.stats_lock:
                self._send_json(200, dict(self.server.stats))
        elif url.path == "/token":
            self._token(parse_qs(url.query))
        else:
            self._send_json(404, {"details": "not found"})

    def do_DELETE(self) -> None:
        if urlsplit(self.path).path == "/_stats":
            with self.server.stats_lock:
                self.server.stats.clear()
            self._send_json(200, {})
        else:
            self._send_json(404, {"details": "not found"})

    def _token(self, query: dict[str, list[str]]) -> None:
        service = query.get("service", [layout.DOCKERHUB_SERVICE])[0]
        if service != layout.DOCKERHUB_SERVICE:
            self._send_json(400, {"details": f"unknown service {service!r}"})
            return
        try:
            user = authenticated_user(self.headers.get("Authorization"))
        except PermissionError as exc:
            self._send_json(401, {"details": str(exc)},
                            {"WWW-Authenticate": 'Basic realm="Docker Hub stand-in"'})
            return
        access = granted_access(user, query.get("scope", []))
        token = tokens.mint_registry_token(subject=user or ANONYMOUS, service=service, access=access,
                                           ttl=TOKEN_TTL)
        issued = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        self._send_json(200, {"token": token, "access_token": token, "expires_in": TOKEN_TTL,
                              "issued_at": issued})


def make_server(port: int = layout.DOCKERHUB_TOKEN_PORT) -> TokenServer:
    ca.ensure_ca()
    server = TokenServer((layout.HOST, port))
    ca.serve_tls(server)
    return server


def health_url() -> str:
    return f"https://{layout.HOST}:{layout.DOCKERHUB_TOKEN_PORT}/health"


def is_ready(timeout: float = 1.0) -> bool:
    try:
        return requests.get(health_url(), verify=str(layout.CA_CERT), timeout=timeout).status_code == 200
    except (requests.RequestException, OSError):
        return False


def request_counts() -> dict[str, int]:
    """Requests served so far, per path (from a running server)."""
    answer = requests.get(f"https://{layout.HOST}:{layout.DOCKERHUB_TOKEN_PORT}/_stats",
                          verify=str(layout.CA_CERT), timeout=5)
    answer.raise_for_status()
    return answer.json()


def main() -> None:
    server = make_server()
    ca.serve_until_stopped(server, f"Docker Hub token server on {layout.DOCKERHUB_TOKEN_REALM}")


if __name__ == "__main__":
    main()
