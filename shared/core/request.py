"""The import request (schema v1): decoding a queue body, validating it, and normalising it.

This is the only place a request is judged. The queue worker, the CLI and the HTTP API all call
`parse_request`, so a rule cannot drift between them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

from shared.core import policy
from shared.core.outcome import Problem
from shared.core.policy import SourceCredentials
from shared.core.redact import is_plain_key, shown_key
from shared.core.reference import (
    ImageReference,
    InvalidReference,
    Repository,
    TargetTag,
    names_registry,
    parse_reference,
    parse_repository,
    parse_target_tag,
)
from shared.core.referrers import DEFAULT_CHOICE, ReferrerChoice, parse_choice
from shared.core.request_ids import ID_RULE, fallback_request_id, is_safe_request_id
from shared.core.resource_ids import RegistryId, parse_registry_id
from shared.core.settings import Settings
from shared.schemas import schema

# jsonschema is imported on first validation (cached), not at cold start: see docs/benchmarks.md.

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator, ValidationError

MAX_MESSAGE_BYTES = 64 * 1024
REQUEST_SCHEMA = "import-request.v1.json"
MAX_REASON_CHARACTERS = 4000
MAX_NAMED_FIELDS = 10
MESSAGE = "(message)"  # the field name used for problems with the body as a whole
SECRET_FIELDS = frozenset({"password"})
MODES = ("NoForce", "Force", "IfChanged")


APP_FIELDS = ("retry", "operation")  # what versions before 2026-12 wrote on their own queue messages


@dataclass(frozen=True)
class ImportRequest:
    """A valid, normalised request: every default applied, every reference parsed."""

    id: str
    source: ImageReference
    source_registry: RegistryId | None
    credential_name: str | None
    credentials: SourceCredentials | None
    target: RegistryId
    target_tags: tuple[TargetTag, ...]
    untagged_target_repositories: tuple[Repository, ...]
    mode: str
    # `retry`/`operation` as an older version wrote them on its follow-ups. Never trusted: the app keeps its
    # state on the status row; the worker refuses a message carrying them, except to let a run of an older
    # version that is still in flight go on (from its row, ignoring what the message says).
    app_fields: tuple[str, ...]
    # as received (secrets included): what a retry re-enqueues, minus app_fields; not in the repr (a traceback)
    document: dict[str, Any] = field(repr=False)
    referrers: ReferrerChoice = DEFAULT_CHOICE  # the request's `referrers`, else the REFERRERS settings

    @property
    def inline_credentials(self) -> bool:
        return self.credentials is not None and self.credential_name is None


def fingerprint(request: ImportRequest) -> str:
    """What the request asks, normalised, without secrets: two messages with the same fingerprint are the
    same request however they were spelled (`nginx` and `docker.io/library/nginx:latest`)."""
    credential = request.credential_name or ("(inline)" if request.credentials else None)
    canonical = {
        "source": str(request.source),
        "sourceRegistry": str(request.source_registry).lower() if request.source_registry else None,
        "credential": credential,
        "target": str(request.target).lower(),
        "targetTags": sorted(str(t) for t in request.target_tags),
        "untaggedTargetRepositories": sorted(request.untagged_target_repositories),
        "mode": request.mode,
    }
    if "referrers" in request.document:  # left out when absent: the fingerprints of older rows still match
        canonical["referrers"] = str(request.referrers)
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Rejected:
    """A request that cannot be run. `document` is the parsed body when there was one."""

    id: str
    problems: tuple[Problem, ...]
    document: Any = None

    @property
    def reason(self) -> str:
        """Every problem, cut at MAX_REASON_CHARACTERS: the reason goes into a dead letter (a 64 KiB queue
        message) and a status row, whatever the body held."""
        text = "; ".join(str(p) for p in self.problems)
        return text if len(text) <= MAX_REASON_CHARACTERS else text[:MAX_REASON_CHARACTERS - 30] + "… (reason cut)"


@cache
def _validator() -> Draft202012Validator:
    """The request schema's validator, with `integer` meaning a JSON integer: jsonschema also counts `1.0`,
    which `checks` and `attempt` would then carry as floats."""
    from jsonschema import Draft202012Validator, validators

    integers = Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool))
    strict = validators.extend(Draft202012Validator, type_checker=integers)
    return strict(schema(REQUEST_SCHEMA), format_checker=Draft202012Validator.FORMAT_CHECKER)


@cache
def _full_patterns() -> dict[str, re.Pattern[str]]:
    """The schema's string patterns as full matches (`^...$` also matches before a final newline)."""
    out = {}
    for name, spec in schema(REQUEST_SCHEMA)["properties"].items():
        if "pattern" in spec:
            out[name] = re.compile(spec["pattern"].removeprefix("^").removesuffix("$"))
    return out


def decode_body(body: bytes | str) -> tuple[Any, Problem | None]:
    """JSON from a queue body that is plain JSON or base64-encoded JSON (both reach us in practice).

    Every way the bytes can fail is a `Problem`, never an exception: not UTF-8, not base64, not JSON, and
    JSON this app will not read (I-JSON, RFC 7493): NaN and Infinity, duplicate keys, numbers a JSON
    parser cannot carry exactly (beyond +-2^53; Python's parser raises past 4,300 digits), lone surrogates and
    noncharacters, nesting deeper than any request or event."""
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else bytes(body)
    if len(raw) > MAX_MESSAGE_BYTES:
        return None, Problem(MESSAGE, f"is {len(raw)} bytes; the limit is {MAX_MESSAGE_BYTES} bytes (64 KiB)")
    try:
        text = _without_bom(raw.decode("utf-8")).strip()
    except UnicodeDecodeError as err:
        return None, Problem(MESSAGE, f"is not UTF-8 (invalid byte at offset {err.start})")
    if not text:
        return None, Problem(MESSAGE, "is empty; expected a JSON object")
    if text[0] not in "{[":
        try:
            text = _without_bom(base64.b64decode(text, validate=True).decode("utf-8")).strip()
        except (binascii.Error, ValueError):
            return None, Problem(MESSAGE, "is neither JSON nor base64-encoded JSON")
    try:
        document, duplicates = _strict_loads(text)
    except json.JSONDecodeError as err:
        return None, Problem(MESSAGE, f"is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}")
    except RecursionError:
        return None, _too_deep()
    except ValueError as err:  # anything else the parser refuses
        return None, Problem(MESSAGE, f"is not valid JSON: {type(err).__name__}")
    problem = json_problem(document, duplicates)
    return (None, problem) if problem else (document, None)


def _without_bom(text: str) -> str:
    """The text without one leading byte order mark (U+FEFF), which Windows tools write in front of UTF-8
    (PowerShell 5's `Set-Content -Encoding UTF8`, .NET's `Encoding.UTF8.GetBytes(preamble + text)`).

    The host does not remove it: the storage extension turns the message into text with
    `new UTF8Encoding(false, true).GetString(...)` (Microsoft.Azure.WebJobs.Extensions.Storage.Common
    `BinaryDataExtensions.ToValidUTF8String`), which keeps a BOM as U+FEFF, and the Python worker hands that
    text to `QueueMessageInConverter` as is, so `get_body()` starts with EF BB BF. RFC 8259 section 8.1 lets a
    parser ignore it "in the interests of interoperability"; Python's own `json.loads` does for bytes. Only
    the first one goes: a BOM anywhere else is text, and JSON refuses it where it refuses any character."""
    return text[1:] if text.startswith("\ufeff") else text


MAX_DEPTH = 32  # a request nests 3 levels, an Event Grid event about 5
MAX_EXACT_INTEGER = 2 ** 53
_MAX_INTEGER_DIGITS = 16  # 2^53 has 16 digits: longer literals are refused without converting them
_NOT_TEXT = re.compile(r"[\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff"
                       + "".join(rf"\U{plane:04x}fffe\U{plane:04x}ffff" for plane in range(1, 17)) + "]")


@dataclass(frozen=True)
class _Unreadable:
    """A number the parser met that the app refuses; found with its path after parsing."""

    literal: str


def _strict_loads(text: str) -> tuple[Any, dict[int, list[str]]]:
    duplicates: dict[int, list[str]] = {}

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                duplicates.setdefault(id(out), []).append(key)
            out[key] = value
        return out

    def constant(name: str) -> Any:
        return _Unreadable(name)

    def integer(literal: str) -> Any:
        if len(literal.lstrip("-")) > _MAX_INTEGER_DIGITS:
            return _Unreadable(literal)
        value = int(literal)
        return value if abs(value) <= MAX_EXACT_INTEGER else _Unreadable(literal)

    def number(literal: str) -> Any:
        value = float(literal)
        return value if math.isfinite(value) else _Unreadable(literal)

    document = json.loads(text, object_pairs_hook=pairs, parse_constant=constant, parse_int=integer,
                          parse_float=number)
    return document, duplicates


def _too_deep(path: list[Any] | None = None) -> Problem:
    """Named after the top-level field the nesting is in (the parser itself cannot say where)."""
    top = [path[0]] if path and isinstance(path[0], str) else []
    return Problem(field_path(top), f"is nested more than {MAX_DEPTH} levels deep; a request nests 3")


def json_problem(document: Any, duplicates: dict[int, list[str]] | None = None) -> Problem | None:
    """The first thing in a decoded document that the app does not read (see `decode_body`), with its path.
    Also run on documents that did not come through `decode_body` (events, tests), so it checks Python
    values too: huge or non-finite numbers, strings that are not Unicode text."""
    stack: list[tuple[Any, list[Any], int]] = [(document, [], 0)]
    while stack:
        value, path, depth = stack.pop()
        where = field_path(path)
        if depth > MAX_DEPTH:
            return _too_deep(path)
        if isinstance(value, _Unreadable):
            literal = value.literal
            if literal.lstrip("-") in ("NaN", "Infinity"):
                return Problem(where, f"is {literal}, which is not a JSON number (RFC 8259)")
            if any(c in literal for c in ".eE"):
                return Problem(where, f"{literal[:24]} is beyond the range of a JSON number")
            shown = literal if len(literal) <= 24 else f"a number of {len(literal.lstrip('-'))} digits"
            return Problem(where, f"{shown} is beyond what JSON carries exactly (+-2^53, RFC 7493)")
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int):
            if abs(value) > MAX_EXACT_INTEGER:
                return Problem(where, "is a number beyond what JSON carries exactly (+-2^53, RFC 7493)")
        elif isinstance(value, float):
            if not math.isfinite(value):
                return Problem(where, "is not a finite number")
        elif isinstance(value, str):
            bad = _NOT_TEXT.search(value)
            if bad:
                return Problem(where, f"holds U+{ord(bad.group()):04X} at position {bad.start()}, which is "
                                      "not Unicode text (a lone surrogate or a noncharacter)")
        elif isinstance(value, dict):
            repeated = (duplicates or {}).get(id(value))
            if repeated:
                name = repeated[0] if not path and is_plain_key(repeated[0]) else where
                return Problem(name, f"the key {shown_key(repeated[0])} appears more than once in one object; "
                                     "parsers disagree on which one counts, so send it once")
            for key in reversed(list(value)):
                if not isinstance(key, str) or _NOT_TEXT.search(key):
                    return Problem(where, "has a key that is not Unicode text (a lone surrogate or a noncharacter)")
                stack.append((value[key], [*path, key], depth + 1))
        elif isinstance(value, list):
            stack.extend((item, [*path, index], depth + 1) for index, item in reversed(list(enumerate(value))))
        else:
            return Problem(where, f"is a {type(value).__name__}, not a JSON value")
    return None





def field_path(parts: Iterable[str | int]) -> str:
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or MESSAGE


def _schema_problem(error: ValidationError) -> Problem:
    """A person-readable problem from a jsonschema error, never echoing a secret value."""
    path = field_path(error.absolute_path)
    field = path.rsplit(".", 1)[-1]
    kind, expected = error.validator, error.validator_value
    if kind == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        if path == MESSAGE:  # the app's own fields are refused from producers: never offer them
            allowed = [name for name in allowed if name not in APP_FIELDS]
        extra = sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        names = ", ".join(shown_key(e) for e in extra[:MAX_NAMED_FIELDS])
        where = "" if path == MESSAGE else f" in {path}"
        more = f" ({len(extra)} in all, the first {MAX_NAMED_FIELDS} named)" if len(extra) > MAX_NAMED_FIELDS else ""
        return Problem(names or path, f"unknown field{where}{more}; allowed fields are {', '.join(allowed)}")
    if kind == "required":
        missing = [r for r in expected if not isinstance(error.instance, dict) or r not in error.instance]
        prefix = "" if path == MESSAGE else f"{path}."
        return Problem(prefix + (missing[0] if missing else "?"), "is required")
    if kind == "type":
        return Problem(path, f"must be {'an' if expected in ('object', 'array', 'integer') else 'a'} {expected},"
                             f" not {_json_type(error.instance)}")
    if kind == "const":
        return Problem(path, f"must be {json.dumps(expected)}")
    if kind == "enum":
        return Problem(path, f"must be one of {', '.join(map(str, expected))}")
    if kind in ("maxLength", "minLength"):
        return Problem(path, f"must be {'at most' if kind == 'maxLength' else 'at least'} {expected} characters")
    if kind in ("maxItems", "minItems"):
        return Problem(path, f"must have {'at most' if kind == 'maxItems' else 'at least'} {expected} items")
    if kind in ("maximum", "minimum"):
        return Problem(path, f"must be {'at most' if kind == 'maximum' else 'at least'} {expected}")
    if kind == "uniqueItems":
        return Problem(path, "must not repeat an item")
    if kind == "pattern":
        if field == "id":
            return Problem(path, ID_RULE)
        if field == "credential":
            return Problem(path, "must be a credential set name: 1-64 letters, digits or _")
        return Problem(path, f"must match {expected}")
    if kind == "format":
        return Problem(path, f"must be an RFC 3339 {expected}")
    if field in SECRET_FIELDS:
        return Problem(path, "is invalid")
    return Problem(path, error.message[:300])


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _qualified_source(source: str, registry: RegistryId, suffix: str) -> str:
    """With sourceRegistry, `source` may omit the login server; put it in front when it does."""
    return source if names_registry(source) else f"{registry.login_server(suffix)}/{source}"


def _default_targets(source: ImageReference) -> tuple[tuple[TargetTag, ...], tuple[Repository, ...]]:
    """What `az acr import` does without --image: the source's repo:tag, or untagged for a bare digest."""
    repository = Repository(source.default_target_repository)
    if source.tag is None:
        return (), (repository,)
    return (TargetTag(repository, source.tag),), ()


def parse_request(body: bytes | str, settings: Settings, *, fallback_id: str | None = None) -> ImportRequest | Rejected:
    """Decode, validate and normalise one queue body. Every problem found is reported, each with its field."""
    return parse_decoded(decode_body(body), settings, fallback_id=fallback_id)


def parse_decoded(decoded: tuple[Any, Problem | None], settings: Settings, *,
                  fallback_id: str | None = None) -> ImportRequest | Rejected:
    """`parse_request` for a body `decode_body` already read (the worker looks at it first for events)."""
    doc, problem = decoded
    request_id = fallback_request_id(fallback_id)
    if problem:
        return Rejected(request_id, (problem,))
    return validate_document(doc, settings, fallback_id=request_id)


def validate_document(doc: Any, settings: Settings, *, fallback_id: str | None = None) -> ImportRequest | Rejected:
    """Judge a decoded document. Never raises, whatever `doc` holds: anything unreadable is a rejection."""
    request_id = fallback_request_id(fallback_id)
    problem = json_problem(doc)
    if isinstance(doc, dict) and is_safe_request_id(doc.get("id")) and not _id_holds_password(doc):
        request_id = doc["id"]
    if problem:  # the document is not kept: it may hold what nothing downstream can encode
        return Rejected(request_id, (problem,))
    if not isinstance(doc, dict):
        return Rejected(request_id, (Problem(MESSAGE, f"must be a JSON object, not {_json_type(doc)}"),), doc)
    schema_errors = sorted(_validator().iter_errors(doc), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    problems = [_schema_problem(e) for e in schema_errors]
    bad_fields = {field_path(list(e.absolute_path)[:1]) for e in schema_errors}
    for name, pattern in _full_patterns().items():
        if name not in bad_fields and isinstance(doc.get(name), str) and not pattern.fullmatch(doc[name]):
            problems.append(_schema_problem_for_pattern(name))
            bad_fields.add(name)
    if "id" not in bad_fields and _id_holds_password(doc):
        problems.append(Problem("id", "contains the request's password; choose an id that holds no secret"))
        bad_fields.add("id")
    checked = _check_fields(doc, settings, bad_fields, problems)
    choice = parse_choice(doc["referrers"], "referrers") \
        if "referrers" in doc and "referrers" not in bad_fields else settings.referrers
    if isinstance(choice, Problem):
        problems.append(choice)
    if problems or checked is None or isinstance(choice, Problem):
        return Rejected(request_id, tuple(dict.fromkeys(problems)), doc)
    source, source_registry, target, tags, untagged, credentials = checked
    return ImportRequest(
        id=request_id, source=source, source_registry=source_registry,
        credential_name=doc.get("credential"), credentials=credentials, target=target,
        target_tags=tags, untagged_target_repositories=untagged, mode=doc.get("mode", "NoForce"),
        app_fields=tuple(name for name in APP_FIELDS if name in doc),
        document={k: v for k, v in doc.items() if k not in APP_FIELDS}, referrers=choice,
    )


def _schema_problem_for_pattern(name: str) -> Problem:
    if name == "id":
        return Problem("id", ID_RULE)
    if name == "credential":
        return Problem(name, "must be a credential set name: 1-64 letters, digits or _")
    return Problem(name, "does not match the pattern its field requires")


def _id_holds_password(doc: dict[str, Any]) -> bool:
    """An id is a table key, in every log line and URL: it cannot be redacted, so it must not hold the password."""
    password, request_id = doc.get("password"), doc.get("id")
    return isinstance(password, str) and isinstance(request_id, str) and len(password) >= 4 \
        and password in request_id


_T = TypeVar("_T")

# What `_check_fields` found: source, source registry, target, target tags, untagged repositories, credentials.
_Checked = tuple[ImageReference, RegistryId | None, RegistryId, tuple[TargetTag, ...], tuple[Repository, ...],
                 SourceCredentials | None]


def _check_fields(doc: dict[str, Any], settings: Settings, bad: set[str], problems: list[Problem]) -> _Checked | None:
    """Rules a schema cannot express: reference grammar, resource ids, credentials, allowlists."""
    def ok(name: str) -> bool:
        return name in doc and name not in bad

    for name, key in (("retry", "firstAttemptAt"), ("operation", "startedAt")):
        if ok(name) and isinstance(doc[name].get(key), str) and _aware_time(doc[name][key]) is None:
            problems.append(Problem(f"{name}.{key}", "must be an RFC 3339 date-time with a UTC offset"))
    source_registry = target = source = None
    if ok("sourceRegistry"):
        source_registry = _registry_id("sourceRegistry", doc["sourceRegistry"], problems)
    if ok("target"):
        target = _registry_id("target", doc["target"], problems)
    elif "target" not in doc:
        if settings.default_target:
            target = settings.default_target
        else:
            problems.append(Problem("target", "is required when the TARGET_REGISTRY setting is not set"))
    if ok("source") and (source_registry or "sourceRegistry" not in doc):
        text = doc["source"]
        if source_registry:
            text = _qualified_source(text, source_registry, settings.acr_login_server_suffix)
        try:
            source = parse_reference(text)
        except InvalidReference as err:
            problems.append(Problem("source", err.reason))
    tags = tuple(_each("targetTags", doc, bad, problems, parse_target_tag))
    untagged = tuple(_each("untaggedTargetRepositories", doc, bad, problems, parse_repository))
    if source and source_registry:
        policy.check_source_matches_registry(source, source_registry, settings, problems)
    credentials = policy.source_credentials(doc, source, source_registry, settings, bad, problems)
    if source:
        policy.check_source_allowed(source, source_registry, settings, problems)
    if target:
        policy.check_target_allowed(target, settings, problems)
    if problems or source is None or target is None:
        return None
    if "targetTags" not in doc and "untaggedTargetRepositories" not in doc:
        tags, untagged = _default_targets(source)
    if not tags and not untagged:
        problems.append(Problem("targetTags", "targetTags and untaggedTargetRepositories are both empty; "
                                              "name at least one target"))
        return None
    return source, source_registry, target, tags, untagged, credentials


def _aware_time(text: str) -> datetime | None:
    """The schema's `date-time` format is not enforced (jsonschema checks it only with an optional package),
    and the worker subtracts these from the current UTC time: a naive or malformed one must not get that far."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo is not None else None


def _each(name: str, doc: dict[str, Any], bad: set[str], problems: list[Problem],
          parse: Callable[[str], _T]) -> list[_T]:
    if name not in doc or name in bad:
        return []
    out: list[_T] = []
    for index, item in enumerate(doc[name]):
        try:
            out.append(parse(item))
        except InvalidReference as err:
            problems.append(Problem(f"{name}[{index}]", err.reason))
    return out


def _registry_id(name: str, value: str, problems: list[Problem]) -> RegistryId | None:
    try:
        return parse_registry_id(value)
    except ValueError as err:
        problems.append(Problem(name, str(err)))
        return None
