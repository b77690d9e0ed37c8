"""Removing secrets from anything that leaves the app: logs, status rows, dead letters.

Two nets: known secret fields are dropped by name, and every configured or inline secret value is
replaced wherever it appears in text (an error message may echo what a registry was sent).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

REMOVED = "[removed]"
SECRET_KEYS = frozenset({"password", "credentials", "secret", "token", "access_token", "refresh_token"})
# `"password": "..."` in JSON-ish text (also unterminated, as in a truncated or broken body), `password=...` in
# query strings; not prose like "password: is required".
_SECRET_IN_TEXT = re.compile(
    r'(?:("(?:password|secret|token|access_token|refresh_token)"\s*:\s*)"(?:[^"\\]|\\.)*(?:"|\\?$)'
    r'|\b((?:password|secret|token|access_token|refresh_token)=)[^\s,;&"]+)',
    re.IGNORECASE)
_MIN_SECRET_LENGTH = 4  # shorter values would redact ordinary words


def redact_document(value: Any, secrets: Iterable[str] = ()) -> Any:
    """A copy of a JSON value with secret fields replaced and secret values scrubbed from strings."""
    secrets = tuple(s for s in secrets if s and len(s) >= _MIN_SECRET_LENGTH)
    return _redact(value, secrets, depth=0)


def _redact(value: Any, secrets: tuple[str, ...], depth: int) -> Any:
    if depth > 64:
        return REMOVED
    if isinstance(value, dict):
        return {k: (REMOVED if str(k).lower() in SECRET_KEYS else _redact(v, secrets, depth + 1))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, secrets, depth + 1) for v in value]
    if isinstance(value, str):
        return redact_text(value, secrets)
    return value


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    for secret in sorted({s for s in secrets if s and len(s) >= _MIN_SECRET_LENGTH}, key=len, reverse=True):
        text = text.replace(secret, REMOVED)
    return _SECRET_IN_TEXT.sub(lambda m: (m.group(1) or m.group(2)) + (f'"{REMOVED}"' if m.group(1) else REMOVED),
                               text)
