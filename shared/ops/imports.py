"""GET /api/ops/imports/{id}: a request's status row (as GET /api/imports/{id} answers it) with its dead letter,
the copy the recorder keeps in the status table (shared/imports/recorder.py `dead_letter`). The list,
GET /api/ops/imports, is GET /api/imports itself (shared/imports/http_api.py `list_imports`)."""

from __future__ import annotations

from typing import Any

from shared.azure.status import StatusStore
from shared.imports.http_api import ApiResponse, lookup_status
from shared.ops.answers import bad_query, no_query

LETTER_FIELDS: dict[str, type | None] = {  # the type the recorder writes each with (None: any JSON, the body)
    "id": str, "state": str, "reason": str, "kind": str, "code": str, "attempts": int, "deadLetteredAt": str,
    "body": None, "bodyTruncated": bool, "reasonTruncated": bool}


def import_detail(request_url: str, request_id: str, status: StatusStore) -> ApiResponse:
    """The row and `deadLetter` (null when the request was never dead-lettered, or its copy was pruned). The copy
    is the last letter of this id: a request started again after it failed keeps it (compare `deadLetteredAt`
    with the transitions)."""
    problems = no_query(request_url, "GET /api/ops/imports/{id}")
    if problems:
        return bad_query(problems)
    found = lookup_status(request_id, status)
    if found.status != 200:
        return found
    return ApiResponse(200, {**found.body, "deadLetter": letter_body(status.dead_letter(request_id))})


def letter_body(letter: dict[str, Any] | None) -> dict[str, Any] | None:
    """The letter's known fields (it was redacted and bounded before it was kept). A field not of the type the
    recorder writes is null and named in `unreadable` (`Letter` when the kept copy does not parse at all)."""
    if letter is None:
        return None
    shown: dict[str, Any] = {}
    unreadable = [] if letter else ["Letter"]
    for name, kind in LETTER_FIELDS.items():
        if name not in letter and name.endswith("Truncated"):
            continue
        value = letter.get(name)
        if _fits(value, kind):
            shown[name] = value
        else:
            shown[name] = None
            unreadable.append(name)
    return {**shown, "unreadable": unreadable}


def _fits(value: Any, kind: type | None) -> bool:
    if value is None or kind is None:
        return True
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
