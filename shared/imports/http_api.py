"""The HTTP API's answers, for pipelines that can call a URL but cannot write to a queue.

`function_app.py` only binds the routes; what each request gets back is decided here, over plain data.
Validation is `parse_request`, the same rules the worker applies, so the API cannot accept what the
worker would reject. No answer echoes a secret or the function key.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from shared.azure.status import StatusRecord, StatusStore, UnreadableRow
from shared.core.outcome import Failure, Kind, Problem, State
from shared.core.redact import redact_text, secret_values_of
from shared.core.request import ImportRequest, Rejected, parse_request
from shared.core.request_ids import ID_RULE, is_safe_request_id
from shared.core.settings import Settings
from shared.imports.claims import reserved_prefix, submit_new
from shared.imports.listing import encode_continuation, parse_list_query, query_pairs


@dataclass(frozen=True)
class ApiResponse:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    def text(self) -> str:
        return json.dumps(self.body, ensure_ascii=False)


def errors_body(problems: tuple[Problem, ...] | list[Problem], secrets: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"errors": [{"field": redact_text(p.field, secrets), "rule": redact_text(p.rule, secrets)}
                       for p in problems]}


def status_url(request_url: str, request_id: str) -> str:
    """`.../api/imports/<id>` from the URL the request came to, without its query (which may hold the key)."""
    parts = urlsplit(request_url)
    path = parts.path.rstrip("/")
    if not path.endswith("/imports"):
        path = path.rsplit("/imports", 1)[0] + "/imports"
    return urlunsplit((parts.scheme, parts.netloc, f"{path}/{request_id}", "", ""))


def judge_submission(body: bytes, settings: Settings) -> ImportRequest | ApiResponse:
    """A valid request to record and enqueue, or the 400 that lists every problem with it."""
    parsed = parse_request(body, settings)
    secrets = settings.secret_values()
    if isinstance(parsed, Rejected):
        return ApiResponse(400, errors_body(parsed.problems, (*secrets, *secret_values_of(parsed.document))))
    smuggled = [Problem(name, "is set by the app on its own follow-up messages; a request may not carry it")
                for name in parsed.app_fields]
    if smuggled:
        return ApiResponse(400, errors_body(smuggled))
    return parsed


def status_body(record: StatusRecord) -> dict[str, Any]:
    """The status row as JSON for people and pipelines (rows hold no secrets: reasons are redacted)."""
    return {
        "id": record.id, "state": str(record.state), "terminal": record.state.terminal, "source": record.source,
        "target": record.target, "targetTags": record.target_tags,
        "untaggedTargetRepositories": record.untagged_target_repositories, "mode": record.mode,
        "reason": record.reason, "kind": record.kind, "code": record.code, "attempts": record.attempts,
        "digest": record.digest or None, "platforms": record.platforms, "checks": record.checks,
        "referrers": record.referrers or None,
        "referrerDigests": [d for d in record.referrer_digests.split(",") if d] if record.referrer_digests else [],
        "createdAt": record.created_at, "updatedAt": record.updated_at, "transitions": record.transitions,
        "backupTags": record.backup_tags,
        "unreadable": list(record.unreadable),  # stored columns not as the app writes them, shown as empty
    }


def lookup_status(request_id: str, status: StatusStore) -> ApiResponse:
    """GET /api/imports/{id}: a 400 naming the id rule for an id no request can have (the table would refuse
    the key), else the row or a 404; a 409 naming `State` for a row whose state is not one the app knows."""
    if not is_safe_request_id(request_id):
        return ApiResponse(400, errors_body([Problem("id", f"is not a request id: a request id {ID_RULE}")]))
    try:
        return status_response(request_id, status.get(request_id))
    except UnreadableRow as unreadable:  # written by something else: say what is wrong with it, not a 500
        return ApiResponse(409, errors_body([Problem("State", f"of request {request_id!r}: {unreadable.reason}")]))


def list_imports(request_url: str, status: StatusStore) -> ApiResponse:
    """GET /api/imports: a page of status rows, `{"items": [...], "continuation": token or null}`, in id
    order (shared/azure/status.py `StatusStore.page` says why not newest first); a 400 naming every bad
    parameter. A page may hold fewer than `limit` items (even none) with a token: go on until it is null.
    `skipped` lists the rows of the page's range that are not records (UnreadableRow), by id and why."""
    query = parse_list_query(query_pairs(request_url))
    if isinstance(query, list):
        return ApiResponse(400, errors_body(query))
    page = status.page(limit=query.limit, states=query.states, since=query.since, until=query.until,
                       after=query.after, keep=query.keeps if query.text else None)
    return ApiResponse(200, {"items": [status_body(r) for r in page.records],
                             "continuation": encode_continuation(page.after) if page.after else None,
                             "skipped": [{"id": s.request_id, "reason": s.reason} for s in page.skipped]},
                       {"X-Content-Type-Options": "nosniff"})  # producer-written text: never sniffed as HTML


def status_response(request_id: str, record: StatusRecord | None) -> ApiResponse:
    if record is None:
        return ApiResponse(404, errors_body([Problem("id", f"no request {request_id!r} is known (never accepted, "
                                                           "or pruned after STATUS_RETENTION_DAYS)")]))
    return ApiResponse(200, status_body(record))


def submit_import(body: bytes, request_url: str, settings: Settings, status: StatusStore,
                  enqueue: Callable[[dict[str, Any]], str]) -> ApiResponse:
    """POST /api/imports: validate, refuse a reused id, record `received`, enqueue; 202 with where to look.
    A request that could not be queued gets an error naming why, and leaves no status row (`submit_new`)."""
    judged = judge_submission(body, settings)
    if isinstance(judged, ApiResponse):
        return judged
    url = status_url(request_url, judged.id)
    if reserved_prefix(judged.id):
        return ApiResponse(400, errors_body([Problem("id", f"starts with {reserved_prefix(judged.id)!r}, which only "
                                                           "the app's own requests use; pick another id")]))
    submitted = submit_new(status, judged, enqueue, "accepted by the HTTP API", queue=settings.import_queue)
    if submitted.failure is not None:
        return not_queued_response(judged.id, submitted.failure)
    if not submitted.sent:
        existing = submitted.record
        state = str(existing.state) if existing else "gone"
        return ApiResponse(409, {**errors_body([Problem("id", f"is already taken by a request that is "
                                                              f"{state}; follow statusUrl, or send a new id")]),
                                 "id": judged.id, "state": state, "statusUrl": url},
                           {"Location": url})
    return ApiResponse(202, {"id": judged.id, "state": str(State.RECEIVED), "statusUrl": url},
                       {"Location": url, "Retry-After": "1"})


NOT_QUEUED_STATUS = {Kind.TRANSIENT: 503, Kind.PERMANENT: 500, Kind.REJECTED: 400}


def not_queued_response(request_id: str, failure: Failure) -> ApiResponse:
    """A request that never reached the queue (no status row was left): 503 with Retry-After when sending it
    again may work, else 500 (the app's configuration) or 400 (the message itself). The id stays free."""
    body = {"id": request_id, "kind": str(failure.kind), "code": failure.code, "reason": failure.message}
    headers = {"Retry-After": "10"} if failure.kind is Kind.TRANSIENT else {}
    return ApiResponse(NOT_QUEUED_STATUS[failure.kind], body, headers)
