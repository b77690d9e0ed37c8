"""Removing secrets from anything the app records: logs, status rows, dead letters, telemetry, API answers.

One module holds every rule, so a log line cannot be cleaner than a status row. Four nets:
- known secret fields are dropped by name (`password`, `client_secret`, `x-api-key`, ...);
- every configured or inline secret value is replaced wherever it appears in text (an error message may
  echo what a registry was sent, a producer may put its password in `source`);
- userinfo is stripped from every URL or reference (`user:password@host/...`, `https://token@host/...`);
- a value that did not parse is never recorded as it came: `describe_unparsed` gives its size, a short hash
  and a short redacted prefix, enough to find the message at its producer and too little to hold a password.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

REMOVED = "[removed]"
SECRET_KEYS = frozenset({"password", "credentials", "secret", "token", "access_token", "refresh_token"})
# A key is secret when, lower-cased without separators, it is one of these or contains one of the stems.
_SECRET_KEY_NAMES = frozenset({"pass", "pwd", "passwd", "auth", "authorization", "apikey", "sig", "signature",
                               "credentials", "privatekey", "sas"})
_SECRET_KEY_STEMS = ("password", "passwd", "secret", "token", "apikey", "privatekey")
_SECRET_WORDS = "password|passwd|pwd|secret|client_secret|token|access_token|refresh_token|api_key|apikey|sig"
# `"password": "..."` in JSON-ish text (also unterminated, as in a truncated or broken body), `password=...` in
# query strings; not prose like "password: is required".
_SECRET_IN_TEXT = re.compile(
    rf'(?:("(?:{_SECRET_WORDS})"\s*:\s*)"(?:[^"\\]|\\.)*(?:"|\\?$)'
    rf'|\b((?:{_SECRET_WORDS})=)[^\s,;&"]+)',
    re.IGNORECASE)
# `userinfo@` in a URL or an image reference: what precedes an `@` up to a `/`, whitespace, quote or bracket.
# The look-ahead keeps what follows, so `a:p@ss@host` loses both parts of the password.
_USERINFO = re.compile(r"""(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)?[^\s/@"'<>\\()\[\]{}]+@(?=(?P<after>[^\s/@"'<>\\]*))""")
# `name@sha256:<hex>` (and `name:tag@sha256:...`) is a digest, not userinfo.
_DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[0-9a-fA-F]{32,}")
_MIN_SECRET_LENGTH = 4  # shorter values would redact ordinary words
_PREFIX_CHARACTERS = 4
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


@dataclass(frozen=True)
class Password:
    """A password or token, however it came (a credential set's setting, a request's inline credentials): its
    `repr` and `str` are `'***'`, so a traceback, an f-string or a log line cannot show it; `reveal()` gives
    it to the one place that sends it (an Authorization header, ImportSource.credentials)."""

    _value: str = field(repr=False)

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Password('***')"

    def __str__(self) -> str:
        return "***"


def is_secret_key(key: object) -> bool:
    """Whether a field of this name holds a secret (its value is dropped, whatever it is)."""
    name = re.sub(r"[^a-z0-9]", "", str(key).lower())
    return str(key).lower() in SECRET_KEYS or name in _SECRET_KEY_NAMES or any(s in name for s in _SECRET_KEY_STEMS)


def is_plain_key(name: str) -> bool:
    """Whether a field name looks like one (`source`, `retry_after`, `__proto__`)."""
    return bool(_PLAIN_KEY.fullmatch(name))


def shown_key(name: str) -> str:
    """A field name as recorded: as sent when it looks like a field name, else described (an unknown key may
    be anything a producer pasted, a password or a terminal escape included)."""
    return name if not name or is_plain_key(name) else describe_unparsed(name)


def redact_document(value: Any, secrets: Iterable[str] = ()) -> Any:
    """A copy of a JSON value with secret fields replaced, secrets and userinfo scrubbed from strings, and
    keys that are not field names described (see `shown_key`)."""
    secrets = tuple(s for s in secrets if isinstance(s, str) and len(s) >= _MIN_SECRET_LENGTH)
    return _redact(value, secrets, depth=0)


def _redact(value: Any, secrets: tuple[str, ...], depth: int) -> Any:
    if depth > 64:
        return REMOVED
    if isinstance(value, dict):
        return {shown_key(redact_text(str(k), secrets)):
                REMOVED if is_secret_key(k) else _redact(v, secrets, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, secrets, depth + 1) for v in value]
    if isinstance(value, str):
        return redact_text(value, secrets)
    return value


def strip_userinfo(text: str) -> str:
    """`user:password@host/repo` -> `host/repo`, `https://t@host/x` -> `https://host/x`; digests are kept."""
    if "@" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        if _DIGEST.fullmatch(match.group("after") or ""):
            return match.group(0)
        return match.group("scheme") or ""

    return _USERINFO.sub(replace, text)


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Text without the given secret values, userinfo, or `password=`/`"password": ...` values."""
    for secret in sorted({s for s in secrets if isinstance(s, str) and len(s) >= _MIN_SECRET_LENGTH},
                         key=len, reverse=True):
        text = text.replace(secret, REMOVED)
    text = strip_userinfo(text)
    return _SECRET_IN_TEXT.sub(lambda m: (m.group(1) or m.group(2)) + (f'"{REMOVED}"' if m.group(1) else REMOVED),
                               text)


def describe_unparsed(value: Any, secrets: Iterable[str] = ()) -> str:
    """What to record of a value that did not parse (it may be a password typed in the wrong field):
    `<unparsed: 83 bytes, sha256 1a2b3c4d…, begins "ngin…">`. The hash is of the text with credentials
    removed, so it cannot confirm a guessed password; the prefix is at most 4 characters, escaped."""
    if isinstance(value, bytes | bytearray):
        size, text = len(value), bytes(value).decode("utf-8", "replace")
    else:
        if isinstance(value, str):
            text = value
        else:
            try:
                text = json.dumps(value, default=str)
            except (TypeError, ValueError, RecursionError):
                text = type(value).__name__
        size = len(text.encode("utf-8", "surrogatepass"))
    clean = redact_text(text, secrets)
    digest = hashlib.sha256(clean.encode("utf-8", "replace")).hexdigest()[:8]
    shown = clean[:min(_PREFIX_CHARACTERS, len(clean) // 2)]
    prefix = json.dumps(shown)[1:-1]  # ASCII, every control character and quote escaped
    return f'<unparsed: {size} bytes, sha256 {digest}…, begins "{prefix}…">'


def secret_values_of(document: Any, depth: int = 0) -> tuple[str, ...]:
    """The values of a document's secret fields (an inline password, a `token` a producer added), so that
    they are scrubbed wherever else the same text appears (a `source` equal to its own password)."""
    found: list[str] = []
    if depth > 8:
        return ()
    if isinstance(document, dict):
        for key, value in document.items():
            if is_secret_key(key) and isinstance(value, str):
                found.append(value)
            elif isinstance(value, dict | list):
                found.extend(secret_values_of(value, depth + 1))
    elif isinstance(document, list):
        for item in document:
            found.extend(secret_values_of(item, depth + 1))
    return tuple(found)
