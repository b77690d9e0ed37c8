"""The import request (schema v1): decoding a queue body, validating it, and normalising it.

This is the only place a request is judged. The queue worker, the CLI and the HTTP API all call
`parse_request`, so a rule cannot drift between them.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared import policy
from shared.outcome import Problem
from shared.policy import SourceCredentials
from shared.reference import (
    ImageReference,
    InvalidReference,
    names_registry,
    parse_reference,
    parse_repository,
    parse_target_tag,
)
from shared.resource_ids import RegistryId, parse_registry_id
from shared.schemas import validator
from shared.settings import Settings

MAX_MESSAGE_BYTES = 64 * 1024
REQUEST_SCHEMA = "import-request.v1.json"
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
    target_tags: tuple[str, ...]
    untagged_target_repositories: tuple[str, ...]
    mode: str
    # `retry`/`operation` as an older version wrote them on its follow-ups. Never trusted: the app keeps its
    # state on the status row; the worker refuses a message carrying them, except to let a run of an older
    # version that is still in flight go on (from its row, ignoring what the message says).
    app_fields: tuple[str, ...]
    document: dict[str, Any]  # as received (secrets included): what a retry re-enqueues, minus app_fields

    @property
    def inline_credentials(self) -> bool:
        return self.credentials is not None and self.credential_name is None


@dataclass(frozen=True)
class Rejected:
    """A request that cannot be run. `document` is the parsed body when there was one."""

    id: str
    problems: tuple[Problem, ...]
    document: Any = None

    @property
    def reason(self) -> str:
        return "; ".join(str(p) for p in self.problems)


def _validator():
    return validator(REQUEST_SCHEMA)


def decode_body(body: bytes | str) -> tuple[Any, Problem | None]:
    """JSON from a queue body that is plain JSON or base64-encoded JSON (both reach us in practice)."""
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else bytes(body)
    if len(raw) > MAX_MESSAGE_BYTES:
        return None, Problem(MESSAGE, f"is {len(raw)} bytes; the limit is {MAX_MESSAGE_BYTES} bytes (64 KiB)")
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError as err:
        return None, Problem(MESSAGE, f"is not UTF-8 (invalid byte at offset {err.start})")
    if not text:
        return None, Problem(MESSAGE, "is empty; expected a JSON object")
    if text[0] not in "{[":
        try:
            text = base64.b64decode(text, validate=True).decode("utf-8").strip()
        except (binascii.Error, ValueError):
            return None, Problem(MESSAGE, "is neither JSON nor base64-encoded JSON")
    try:
        return json.loads(text), None
    except json.JSONDecodeError as err:
        return None, Problem(MESSAGE, f"is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}")
    except RecursionError:
        return None, Problem(MESSAGE, "is nested too deeply to be a request")


def field_path(parts) -> str:
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or MESSAGE


def _schema_problem(error) -> Problem:
    """A person-readable problem from a jsonschema error, never echoing a secret value."""
    path = field_path(error.absolute_path)
    field = path.rsplit(".", 1)[-1]
    kind, expected = error.validator, error.validator_value
    if kind == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        names = ", ".join(e[:64] for e in extra)
        where = "" if path == MESSAGE else f" in {path}"
        return Problem(names or path, f"unknown field{where}; allowed fields are {', '.join(allowed)}")
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
            return Problem(path, "must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit")
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


def _default_targets(source: ImageReference) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What `az acr import` does without --image: the source's repo:tag, or untagged for a bare digest."""
    repository = source.default_target_repository
    if source.tag is None:
        return (), (repository,)
    return (f"{repository}:{source.tag}",), ()


def parse_request(body: bytes | str, settings: Settings, *, fallback_id: str | None = None) -> ImportRequest | Rejected:
    """Decode, validate and normalise one queue body. Every problem found is reported, each with its field."""
    return parse_decoded(decode_body(body), settings, fallback_id=fallback_id)


def parse_decoded(decoded: tuple[Any, Problem | None], settings: Settings, *,
                  fallback_id: str | None = None) -> ImportRequest | Rejected:
    """`parse_request` for a body `decode_body` already read (the worker looks at it first for events)."""
    doc, problem = decoded
    request_id = fallback_id or uuid.uuid4().hex
    if problem:
        return Rejected(request_id, (problem,))
    return validate_document(doc, settings, fallback_id=request_id)


def validate_document(doc: Any, settings: Settings, *, fallback_id: str | None = None) -> ImportRequest | Rejected:
    request_id = fallback_id or uuid.uuid4().hex
    if isinstance(doc, dict) and isinstance(doc.get("id"), str) and len(doc["id"]) <= 128 and doc["id"]:
        request_id = doc["id"] if _validator().is_valid({"source": "x", "id": doc["id"]}) else request_id
    if not isinstance(doc, dict):
        return Rejected(request_id, (Problem(MESSAGE, f"must be a JSON object, not {_json_type(doc)}"),), doc)
    schema_errors = sorted(_validator().iter_errors(doc), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    problems = [_schema_problem(e) for e in schema_errors]
    bad_fields = {field_path(list(e.absolute_path)[:1]) for e in schema_errors}
    checked = _check_fields(doc, settings, bad_fields, problems)
    if problems or checked is None:
        return Rejected(request_id, tuple(dict.fromkeys(problems)), doc)
    source, source_registry, target, tags, untagged, credentials = checked
    return ImportRequest(
        id=request_id, source=source, source_registry=source_registry,
        credential_name=doc.get("credential"), credentials=credentials, target=target,
        target_tags=tags, untagged_target_repositories=untagged, mode=doc.get("mode", "NoForce"),
        app_fields=tuple(name for name in APP_FIELDS if name in doc),
        document={k: v for k, v in doc.items() if k not in APP_FIELDS},
    )


def _check_fields(doc: dict[str, Any], settings: Settings, bad: set[str], problems: list[Problem]):
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
        if settings.target_registry:
            target = parse_registry_id(settings.target_registry)
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
    tags = tuple(_each("targetTags", doc, bad, problems, lambda t: "{}:{}".format(*parse_target_tag(t))))
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


def _each(name: str, doc: dict[str, Any], bad: set[str], problems: list[Problem], parse) -> list[str]:
    if name not in doc or name in bad:
        return []
    out = []
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
