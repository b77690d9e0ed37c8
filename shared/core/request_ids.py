"""What a request id may be, decided once for every place an id goes.

An id becomes a status-row key (Azure Tables refuses `/ \\ # ?`, control characters and keys over 1 KiB),
a field of a dead letter and of a log line, a path segment of the HTTP API (`/api/imports/{id}`) and an
argument of `acr-import status`. The rule is the schema's (`1-128 of A-Za-z0-9._-`, starting with a letter or
digit), matched in full: a pattern ending in `$` also matches before a final newline, and jsonschema's
`pattern` searches, so the schema alone lets `abc\\n` through.
"""

from __future__ import annotations

import hashlib
import re
import uuid

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
ID_RULE = "must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
FALLBACK_PREFIX = "msg-"


class UnsafeRequestId(ValueError):
    """An id that cannot name a request; the message says the rule (never the id itself, which may be anything)."""


def is_safe_request_id(value: object) -> bool:
    """Whether `value` can be a request id in every store it reaches."""
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None


def checked_request_id(value: object) -> str:
    """`value` when it is a safe id, else `UnsafeRequestId` (for look-ups: the CLI and the HTTP API)."""
    if not is_safe_request_id(value):
        raise UnsafeRequestId(f"a request id {ID_RULE}")
    return value  # type: ignore[return-value]


def fallback_request_id(message_id: object = None) -> str:
    """The id a request is recorded under when its body gives no usable one: the queue message id when that
    is safe (it is a GUID on Azure), else a stable name derived from it, else a new one."""
    if is_safe_request_id(message_id):
        return message_id  # type: ignore[return-value]
    if isinstance(message_id, str | bytes) and message_id:
        raw = message_id.encode("utf-8", "surrogatepass") if isinstance(message_id, str) else message_id
        return FALLBACK_PREFIX + hashlib.sha256(raw).hexdigest()[:32]
    return uuid.uuid4().hex
