"""GET /api/ops/imports/{id}: a request's status row (as GET /api/imports/{id} answers it) with its dead letter,
the copy the recorder keeps in the status table (shared/imports/recorder.py `dead_letter`). The list,
GET /api/ops/imports, is GET /api/imports itself (shared/imports/http_api.py `list_imports`)."""

from __future__ import annotations

from typing import Any

from shared.azure.status import StatusStore
from shared.imports.http_api import ApiResponse, lookup_status
from shared.ops.answers import bad_query, no_query

LETTER_FIELDS = ("id", "state", "reason", "kind", "code", "attempts", "deadLetteredAt", "body", "bodyTruncated",
                 "reasonTruncated")


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
    """The letter's known fields (it was redacted and bounded before it was kept)."""
    if letter is None:
        return None
    return {name: letter.get(name) for name in LETTER_FIELDS if name in letter or not name.endswith("Truncated")}
