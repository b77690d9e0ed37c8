"""Plain request/response values and the one handler class that turns HTTP into calls on a router,
so every endpoint is a function `Request -> Response` that tests can read top to bottom."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("azure_standin.http")


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    client: str

    def param(self, name: str) -> str | None:
        """First value of a query parameter, matched case-insensitively as ARM does."""
        for key, values in self.query.items():
            if key.lower() == name.lower():
                return values[0]
        return None

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def form(self) -> dict[str, list[str]]:
        return parse_qs(self.body.decode(), keep_blank_values=True)


@dataclass
class Response:
    status: int
    body: Any = None  # dict/list -> JSON; bytes as is; None -> empty
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> tuple[bytes, str | None]:
        if self.body is None:
            return b"", None
        if isinstance(self.body, bytes):
            return self.body, self.headers.get("Content-Type", "application/octet-stream")
        return json.dumps(self.body).encode(), "application/json; charset=utf-8"


Router = Callable[[Request], Response]


def make_handler(router: Router, server_name: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = server_name

        def _serve(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            request = Request(self.command, url.path, parse_qs(url.query, keep_blank_values=True),
                              {k.lower(): v for k, v in self.headers.items()}, body, self.client_address[0])
            try:
                response = router(request)
            except Exception:
                log.exception("%s %s crashed", self.command, url.path)
                response = Response(500, {"error": {"code": "InternalServerError",
                                                    "message": "The stand-in failed; see its log."}})
            payload, content_type = response.encoded()
            self.send_response(response.status)
            for name, value in response.headers.items():
                if name.lower() != "content-type" or content_type is None:
                    self.send_header(name, value)
            if content_type:
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("x-ms-request-id", self.headers.get("x-ms-client-request-id") or "-")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _serve

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.client_address[0], format % args)

    return Handler
