"""The host's Event Grid webhook: `POST /runtime/webhooks/eventgrid?functionName=<fn>&code=<system key>`.

As the Event Grid extension 3.x answers: 401 without the system key, 404 for an unknown function, the
subscription validation handshake, and for notifications every event invoked in parallel, then 202 when all
succeeded or 500 (so Event Grid redelivers the whole batch) when any failed. Each event reaches the function
as the worker's Event Grid converter makes it (dev/runner/inputs.py): a `func.EventGridEvent` for the Event
Grid schema, a `func.CloudEvent` for CloudEvents 1.0.
"""

from __future__ import annotations

import concurrent.futures
import hmac
import json
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from dev.runner.config import FunctionSpec
from dev.runner.http import HttpRoutes
from dev.runner.inputs import eventgrid_input
from dev.runner.invoker import Invoker

log = logging.getLogger("dev.runner")
WEBHOOK_PATH = "/runtime/webhooks/eventgrid"


class EventGridServer:
    """The runner's one HTTP listener: the Event Grid webhook, and `/api/...` for HTTP triggers when given."""

    def __init__(self, functions: dict[str, FunctionSpec], invoker: Invoker, system_key: str, port: int,
                 write_outputs: Callable[[FunctionSpec, dict[str, Any]], None],
                 host: str = "127.0.0.1", http_routes: HttpRoutes | None = None) -> None:
        self._functions = functions
        self._http_routes = http_routes
        self._write_outputs = write_outputs
        self._invoker = invoker
        self._key = system_key
        self._pool = concurrent.futures.ThreadPoolExecutor(16, thread_name_prefix="eventgrid")
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="eventgrid-http", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._pool.shutdown(wait=True)

    def handle(self, method: str, target: str, headers: dict[str, str],
               body: bytes) -> tuple[int, dict, bytes]:
        """(status, headers, body) for one request; separate from HTTP plumbing so it reads like the host."""
        url = urlsplit(target)
        if self._http_routes and self._http_routes.serves(url.path):
            return self._http_routes.handle(method, target, headers, body, f"http://{headers.get('host', '')}")
        if url.path.rstrip("/") != WEBHOOK_PATH or method not in ("POST", "OPTIONS"):
            return 404, {}, b""
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        code = query.get("code") or headers.get("x-functions-key", "")
        if not hmac.compare_digest(code.encode(), self._key.encode()):
            return 401, {}, b""
        name = query.get("functionName", "")
        spec = self._functions.get(name)
        if spec is None:
            log.info("cannot find function: '%s', available function names: [%s]", name,
                     ", ".join(self._functions))
            return 404, {}, f"cannot find function: '{name}'".encode()
        if method == "OPTIONS":  # CloudEvents abuse protection handshake
            origin = headers.get("webhook-request-origin", "*")
            return 200, {"WebHook-Allowed-Origin": origin, "WebHook-Allowed-Rate": "*"}, b""
        try:
            payload = json.loads(body or b"null")
        except ValueError:
            return 400, {}, b"body is not JSON"
        events = payload if isinstance(payload, list) else [payload]
        if not all(isinstance(e, dict) for e in events):
            return 400, {}, b"expected a JSON array of events"
        kind = headers.get("aeg-event-type", "").lower()
        if kind == "subscriptionvalidation":
            code = ((events[0] if events else {}).get("data") or {}).get("validationCode")
            log.info("perform handshake with eventGrid for function: %s", name)
            answer = json.dumps({"validationResponse": code}).encode()
            return 200, {"Content-Type": "application/json"}, answer
        if kind == "unsubscribe":
            return 202, {}, b""
        if kind != "notification" and not all("specversion" in e for e in events):
            return 400, {}, b"missing aeg-event-type header"
        return self._deliver(spec, events)

    def _deliver(self, spec: FunctionSpec, events: list[dict[str, Any]]) -> tuple[int, dict, bytes]:
        def run(raw: dict[str, Any]):
            event_id = raw.get("id")
            return self._invoker.invoke(spec, "eventgrid", None, convert=lambda: eventgrid_input(raw),
                                        trigger_id=event_id if isinstance(event_id, str) else None,
                                        reason=f"EventGrid trigger fired at {datetime.now(UTC).isoformat()}")

        results = list(self._pool.map(run, events))
        failed = [r.invocation for r in results if r.invocation.outcome != "ok"]
        if failed:
            return 500, {}, (failed[0].error or "function failed").encode()
        for result in results:
            self._write_outputs(spec, result.outputs)
        return 202, {}, b""

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, extra, payload = server.handle(self.command, self.path, headers, body)
                self.send_response(status)
                for key, value in extra.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_POST = do_OPTIONS = do_GET = do_PUT = do_DELETE = do_PATCH = _serve

            def log_message(self, format: str, *args: Any) -> None:  # keep the key out of access logs
                log.debug("http %s %s", self.command, urlsplit(self.path).path)

        return Handler
