"""HTTP triggers as the host serves them: `/api/<route>`, route templates, methods, function-key auth.

The host answers 404 when no function's route and method match, 401 when a `function`/`admin` level
function is called without a valid key (`code` query parameter or `x-functions-key` header), and 500 when
the function raised. The function's `$return` (an `HttpResponse`, or a string) becomes the answer.
"""

from __future__ import annotations

import hmac
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func

from dev.runner.config import ConfigError, FunctionSpec
from dev.runner.inputs import http_input
from dev.runner.invoker import Invoker

log = logging.getLogger("dev.runner")
ROUTE_PREFIX = "api"  # host.json extensions.http.routePrefix default
_PARAMETER = re.compile(r"^\{(\*?)([A-Za-z_][A-Za-z0-9_]*)(?::([a-z]+))?(\?)?\}$")
_CONSTRAINTS = {"int": r"-?\d+", "long": r"-?\d+", "alpha": r"[A-Za-z]+", "guid": r"[0-9A-Fa-f-]{32,36}",
                "bool": r"(?i:true|false)", None: r"[^/]+"}


def route_pattern(template: str) -> re.Pattern[str]:
    """A template like `imports/{id}`, `items/{id:int?}` or `files/{*path}` as a case-insensitive regex."""
    parts = []
    for segment in template.strip("/").split("/"):
        match = _PARAMETER.match(segment)
        if not match:
            if "{" in segment or "}" in segment:
                raise ConfigError(f"route {template!r}: segment {segment!r} is not a literal or one {{parameter}}")
            parts.append("/" + re.escape(segment))
            continue
        catch_all, name, constraint, optional = match.groups()
        if constraint not in _CONSTRAINTS:
            raise ConfigError(f"route {template!r}: constraint {constraint!r} is not served by the dev runner")
        body = r".+" if catch_all else _CONSTRAINTS[constraint]
        parts.append(f"(?:/(?P<{name}>{body})){'?' if optional or catch_all else ''}")
    return re.compile("^" + "".join(parts) + "/?$", re.IGNORECASE)


@dataclass(frozen=True)
class HttpRoute:
    spec: FunctionSpec
    pattern: re.Pattern[str]
    methods: frozenset[str]  # empty: any
    auth_level: str


class HttpRoutes:
    def __init__(self, functions: dict[str, FunctionSpec], invoker: Invoker, function_key: str) -> None:
        self._invoker = invoker
        self._key = function_key
        self._routes = []
        for spec in functions.values():
            settings = spec.trigger.settings
            template = str(settings.get("route") or spec.name)
            self._routes.append(HttpRoute(spec, route_pattern(template),
                                          frozenset(m.upper() for m in settings.get("methods") or ()),
                                          str(settings.get("authLevel", "FUNCTION")).upper()))

    @staticmethod
    def serves(path: str) -> bool:
        return path.lower().startswith(f"/{ROUTE_PREFIX}/")

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes,
               base_url: str) -> tuple[int, dict, bytes]:
        url = urlsplit(target)
        path = url.path[len(ROUTE_PREFIX) + 1:]
        found = None
        for route in self._routes:
            match = route.pattern.match(path)
            if match and (not route.methods or method.upper() in route.methods):
                found = (route, {k: v for k, v in match.groupdict().items() if v is not None})
                break
        if found is None:
            return 404, {}, b""
        route, route_params = found
        pairs = parse_qsl(url.query, keep_blank_values=True)
        if route.auth_level != "ANONYMOUS":
            key = next((v for k, v in pairs if k == "code"), "") or headers.get("x-functions-key", "")
            if not hmac.compare_digest(key.encode(), self._key.encode()):
                return 401, {}, b""
        result = self._invoker.invoke(
            route.spec, "http", None, trigger_id=None,
            convert=lambda: http_input(method, base_url + target, headers, pairs, route_params, body),
                                      reason=f"This HTTP triggered function executed at {datetime.now(UTC)}",
                                      details=f"{method.upper()} {url.path}")
        if result.invocation.outcome != "ok":
            return 500, {}, b""
        return http_answer(result.outputs.get("$return"))


def http_answer(returned: Any) -> tuple[int, dict, bytes]:
    """What the worker makes of a function's return value: an HttpResponse, or a body (200)."""
    if isinstance(returned, func.HttpResponse):
        headers = dict(returned.headers)
        if returned.mimetype and not any(k.lower() == "content-type" for k in headers):
            charset = f"; charset={returned.charset}" if returned.charset else ""
            headers["Content-Type"] = f"{returned.mimetype}{charset}"
        return returned.status_code, headers, returned.get_body() or b""
    if returned is None:
        return 204, {}, b""
    text = returned if isinstance(returned, bytes) else str(returned).encode()
    return 200, {"Content-Type": "text/plain; charset=utf-8"}, text
