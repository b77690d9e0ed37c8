"""What every operator endpoint does the same way: who may ask (shared/ops/access.py), whether the settings let
it answer, which query parameters it takes (checked with GET /api/imports's rules, shared/imports/listing.py),
and the JSON answer's headers (`nosniff`: stored fields are producer-written text)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

from shared.app_context import Worker
from shared.core.outcome import Problem
from shared.core.redact import redact_text
from shared.core.settings import OPS
from shared.imports.http_api import ApiResponse, errors_body
from shared.imports.listing import one_value, parse_limit, query_pairs, query_values
from shared.ops.access import NOSNIFF, OperatorAccess

DEFAULT_LIMIT = 20  # rows of `limit` on the refresh and replication endpoints
MAX_LIMIT = 100


def answer(access: OperatorAccess, headers: Mapping[str, str], worker: Callable[[], Worker],
           respond: Callable[[Worker], ApiResponse]) -> ApiResponse:
    """The endpoint's answer: refused (401) before anything is read, or 500 naming each setting that stops the
    operator endpoints, else what `respond` says, with `nosniff`."""
    refused = access.refusal(headers)
    if refused is not None:
        return refused
    app = worker()
    blocked = app.settings.problems_for(OPS)
    if blocked:
        secrets = app.settings.secret_values()
        return ApiResponse(500, errors_body([Problem(p.setting, redact_text(p.message, secrets)) for p in blocked]),
                           NOSNIFF)
    found = respond(app)
    return replace(found, headers={**found.headers, **NOSNIFF})


def limit_query(request_url: str, route: str) -> int | list[Problem]:
    """The one parameter `limit` (1-MAX_LIMIT, default DEFAULT_LIMIT), or the problems naming each bad one."""
    values, problems = query_values(query_pairs(request_url), ("limit",), route)
    limit = parse_limit(one_value(values, "limit"), problems, default=DEFAULT_LIMIT, maximum=MAX_LIMIT)
    return problems or limit


def no_query(request_url: str, route: str) -> list[Problem]:
    """The problems of a query given to a route that takes no parameter (`code` aside)."""
    return query_values(query_pairs(request_url), (), route)[1]


def bad_query(problems: list[Problem]) -> ApiResponse:
    return ApiResponse(400, errors_body(problems))
