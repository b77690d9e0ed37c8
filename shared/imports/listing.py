"""`GET /api/imports`'s query: what the list of requests may be filtered and paged by, checked as text.

The query string is read from the request's URL, not from a mapping of it, so a repeated parameter is seen
as repeated (the host would join one into `a,b`) and refused unless it may repeat (`state`). An empty value
is the same as no value, so a form can send every field. Dates are RFC 3339 with an offset and ASCII digits
only; a `+` in a query string decodes to a space, so the rule says to write `%2B` or `Z`.

The continuation token is opaque to callers: urlsafe base64 of `{"v": 1, "after": <id>}`, the last row the
previous page read (`StatusStore.page`). A token that does not decode to exactly that is a 400 naming
`continuation`. It is not signed: it names a place in a list every caller with the key may read whole.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import parse_qsl, urlsplit

from shared.azure.status import StatusRecord
from shared.core.outcome import STATE_NAMES, Problem, State

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
MAX_TEXT = 200  # characters of `q`
MAX_TOKEN = 2048  # characters of `continuation`
MAX_AFTER = 1024  # characters of the row key inside it (the table's key limit is 1 KiB)
REPEATABLE = frozenset({"state"})
PARAMETERS = ("state", "since", "until", "q", "limit", "continuation")
IGNORED = frozenset({"code"})  # the function key, checked by the host
UNNAMED = "(unnamed)"  # the field of a problem about `?=x`: a parameter whose name is empty
_RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
                      r"([Zz]|[+-][0-9]{2}:[0-9]{2})")
_TOKEN = re.compile(r"[A-Za-z0-9_-]+={0,2}")
DATE_RULE = ("must be an RFC 3339 date and time with an offset, like 2026-12-01T00:00:00Z "
             "(a '+' in a URL reads as a space: write %2B)")


@dataclass(frozen=True)
class ListQuery:
    states: tuple[State, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    text: str = ""
    limit: int = DEFAULT_LIMIT
    after: str | None = None

    def keeps(self, record: StatusRecord) -> bool:
        """The text filter: `q` anywhere in the id, source, a target tag or the reason, ignoring case."""
        needle = self.text.casefold()
        return any(needle in field.casefold()
                   for field in (record.id, record.source, *record.target_tags, record.reason))


def query_pairs(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


def query_values(pairs: list[tuple[str, str]], parameters: tuple[str, ...], route: str,
                 repeatable: frozenset[str] = frozenset()) -> tuple[dict[str, list[str]], list[Problem]]:
    """The values of each known parameter, and a problem for each unknown one (naming `route` and the known
    ones) and each repeated one that may not repeat. `code` (the function key) is ignored."""
    problems: list[Problem] = []
    values: dict[str, list[str]] = {}
    for name, value in pairs:
        if name in IGNORED:
            continue
        if name not in parameters:
            known = f"known: {', '.join(parameters)}" if parameters else "it takes none"
            problems.append(Problem(name[:64] or UNNAMED, f"is not a parameter of {route} ({known})"))
            continue
        values.setdefault(name, []).append(value)
    for name, given in values.items():
        if len(given) > 1 and name not in repeatable:
            problems.append(Problem(name, "is given more than once; give it once"))
    return values, problems


def one_value(values: dict[str, list[str]], name: str) -> str:
    """A parameter's value: "" when absent, empty or repeated (`query_values` refused that)."""
    given = values.get(name, [])
    return given[0] if len(given) == 1 else ""


def parse_list_query(pairs: list[tuple[str, str]]) -> ListQuery | list[Problem]:
    """The query, or every problem with it (each naming its parameter and the rule)."""
    values, problems = query_values(pairs, PARAMETERS, "GET /api/imports", REPEATABLE)

    def one(name: str) -> str:
        return one_value(values, name)

    states = _states(values.get("state", []), problems)
    since, until = _date("since", one("since"), problems), _date("until", one("until"), problems)
    if since and until and since > until:
        problems.append(Problem("until", "is before since"))
    text = one("q")
    if len(text) > MAX_TEXT:
        problems.append(Problem("q", f"is longer than {MAX_TEXT} characters"))
    limit = parse_limit(one("limit"), problems)
    token = one("continuation")
    after = decode_continuation(token) if token else None
    if token and after is None:
        problems.append(Problem("continuation", "is not a token this API gave; send the `continuation` of the "
                                                "previous answer as it was, or leave it out for the first page"))
    if problems:
        return problems
    return ListQuery(states, since, until, text, limit, after)


def _states(given: list[str], problems: list[Problem]) -> tuple[State, ...]:
    names = [n.strip() for value in given for n in value.split(",") if n.strip()]
    if any(n not in STATE_NAMES for n in names):
        problems.append(Problem("state", f"must be one or more of {', '.join(STATE_NAMES)} "
                                         "(comma-separated, or the parameter repeated)"))
        return ()
    return tuple(State(n) for n in dict.fromkeys(names))


def _date(name: str, value: str, problems: list[Problem]) -> datetime | None:
    if not value:
        return None
    if not _RFC3339.fullmatch(value):
        problems.append(Problem(name, DATE_RULE))
        return None
    head, dot, tail = value.partition(".")
    if dot:  # Python reads at most microseconds: cut the fraction to six digits
        digits = re.match(r"[0-9]+", tail)
        assert digits is not None
        value = f"{head}.{digits.group()[:6].ljust(6, '0')}{tail[digits.end():]}"
    try:
        return datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:  # 2026-13-40T25:61:61Z matched the shape
        problems.append(Problem(name, DATE_RULE))
        return None


def parse_limit(value: str, problems: list[Problem], *, default: int = DEFAULT_LIMIT,
                maximum: int = MAX_LIMIT) -> int:
    """`limit`: ASCII digits from 1 to `maximum`; empty is `default`."""
    if not value:
        return default
    if not re.fullmatch(r"[0-9]{1,4}", value) or not 1 <= int(value) <= maximum:
        problems.append(Problem("limit", f"must be a whole number from 1 to {maximum} (default {default})"))
        return default
    return int(value)


def encode_continuation(after: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"v": 1, "after": after}).encode()).decode()


def decode_continuation(token: str) -> str | None:
    """The row id a token names, or None when it is not one `encode_continuation` could have made."""
    if len(token) > MAX_TOKEN or not _TOKEN.fullmatch(token):
        return None
    try:
        document = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(document, dict) or set(document) != {"v", "after"} or document["v"] != 1 \
            or isinstance(document["v"], bool):
        return None
    after = document["after"]
    if not isinstance(after, str) or not 0 < len(after) <= MAX_AFTER:
        return None
    return after
