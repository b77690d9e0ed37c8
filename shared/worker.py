"""The queue worker: one import request in, exactly one terminal state out (or a scheduled retry).

The single choke point for policy, retries and status. `function_app.py` hands it the raw message; it
decides, and the adapters (ARM, queues, status table) do the I/O.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from shared import telemetry
from shared.arm import AcrManagement, OperationStatus, OperationUrlRejected, make_credential
from shared.engine import import_parameters, resolve_source_registry
from shared.events import is_event_like
from shared.failures import classify_error, retry_after_of
from shared.outcome import Failure, Kind, Problem, State
from shared.queues import ImportQueues
from shared.redact import describe_unparsed, redact_document, redact_text, secret_values_of
from shared.reference import InvalidReference, parse_reference, parse_target_tag
from shared.registry_client import IdentityAuth, LazyCredential, RegistryClient, RegistryError, source_auth
from shared.request import (
    MODES,
    ImportRequest,
    PendingOperation,
    Rejected,
    decode_body,
    parse_decoded,
    validate_document,
)
from shared.resource_ids import parse_registry_id
from shared.settings import IMPORTS, REPLICATION, STORAGE, Settings, SettingsUnusable
from shared.status import StatusRecord, StatusStore, request_fields, utc_now

log = logging.getLogger("acr_importer")


@dataclass
class Worker:
    settings: Settings
    arm: AcrManagement
    queues: ImportQueues
    status: StatusStore
    clock: Callable[[], datetime] = utc_now
    jitter: Callable[[], float] = random.random
    registries: RegistryClient | None = None  # the app's own reads: digests for IfChanged and conflicts
    identity: IdentityAuth | None = None
    _secrets: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        self._secrets = self.settings.secret_values()
        if self.registries is None:
            self.registries = RegistryClient(endpoints=self.settings.registry_endpoints)
        if self.identity is None:
            settings = self.settings
            self.identity = IdentityAuth(LazyCredential(lambda: make_credential(settings)))


@dataclass(frozen=True)
class Outcome:
    request_id: str
    state: State
    reason: str = ""
    attempts: int = 0
    failure: Failure | None = None
    retry_in_seconds: float | None = None


def retry_delay(attempt: int, settings: Settings, failure: Failure, jitter: float) -> float:
    """Exponential backoff with jitter (attempt 1 -> about base), never sooner than Retry-After."""
    backoff = min(settings.retry_max_seconds, settings.retry_base_seconds * 2 ** max(0, attempt - 1))
    return max(failure.retry_after or 0.0, backoff * (0.5 + jitter / 2))


@telemetry.import_span
def handle_import_message(worker: Worker, body: bytes | str, *, message_id: str,
                          dequeue_count: int = 1) -> Outcome | list:
    """One queue message: an import request, or ACR events delivered straight by Event Grid (a list of
    `replication.EventResult` then)."""
    started = time.monotonic()
    if (refused := refuse_for_settings(worker, body, message_id=message_id)) is not None:
        return refused
    document, problem = decode_body(body)
    if problem is None and is_event_like(document):  # Event Grid delivering straight into the queue
        from shared.replication import replicate

        return replicate(worker, document)
    parsed = parse_decoded((document, problem), worker.settings, fallback_id=message_id)
    if isinstance(parsed, Rejected):
        return _finish_rejected(worker, parsed, body, started)
    request = parsed
    previous = worker.status.get(request.id)
    if previous and _already_handled(request, previous):
        outcome = Outcome(request.id, previous.state, f"already {previous.state}: a repeated delivery changes "
                                                       "nothing", previous.attempts)
        _log(worker, outcome, request, started, dequeue_count=dequeue_count)
        return outcome
    attempt = request.attempt + 1
    first_attempt_at = request.first_attempt_at or worker.clock()
    request = _resume_after_crash(request, previous, attempt)
    note = ""
    if request.operation is None:
        worker.status.transition(request.id, State.RUNNING, attempts=attempt, reason="", **_summary(request))
        if request.mode == "IfChanged":
            same, note = unchanged_digest(worker, request)
            if same:
                return _finish(worker, request, State.SKIPPED, f"unchanged: {same}", attempt, started)
    progress = _drive_import(worker, request, first_attempt_at)
    if isinstance(progress, HandOver):
        return _hand_over(worker, request, progress, attempt, started)
    failure = progress
    if failure is None:
        return _finish(worker, request, State.SUCCEEDED, f"imported{note}", attempt, started,
                       **imported_image(worker, request))
    if request.mode == "NoForce" and _is_tag_conflict(failure):
        same, _ = unchanged_digest(worker, request)
        if same:
            return _finish(worker, request, State.SUCCEEDED, f"already present: the target holds the source "
                                                             f"digest {same}", attempt, started)
    if failure.kind is Kind.TRANSIENT and attempt < worker.settings.max_attempts:
        return _schedule_retry(worker, request, failure, attempt, first_attempt_at, started)
    reason = str(failure) if failure.kind is not Kind.TRANSIENT else \
        f"gave up after {attempt} attempts; last error: {failure}"
    return _finish(worker, request, State.FAILED, reason, attempt, started, failure=failure)


@telemetry.import_span
def handle_poison_message(worker: Worker, body: bytes | str, *, message_id: str,
                          dequeue_count: int = 1) -> Outcome | list[Outcome]:
    """The host gave up on a message after repeated crashes: record it as failed so it is not lost."""
    started = time.monotonic()
    if (refused := refuse_for_settings(worker, body, message_id=message_id)) is not None:
        return refused
    document, problem = decode_body(body)
    if problem is None and is_event_like(document):
        return _events_poisoned(worker, document, started)
    parsed = parse_decoded((document, problem), worker.settings, fallback_id=message_id)
    if isinstance(parsed, Rejected):
        return _finish_rejected(worker, parsed, body, started)
    previous = worker.status.get(parsed.id)
    if previous and previous.state.terminal:
        outcome = Outcome(parsed.id, previous.state, f"already {previous.state}", previous.attempts)
        _log(worker, outcome, parsed, started)
        return outcome
    failure = Failure(Kind.PERMANENT, "WorkerCrashed",
                      "processing raised an unexpected error on every delivery, so the host moved the message "
                      "to the poison queue; the function logs hold the exception")
    attempts = previous.attempts if previous else parsed.attempt
    return _finish(worker, parsed, State.FAILED, str(failure), attempts, started, failure=failure)


def refuse_for_settings(worker: Worker, body: bytes | str, *, message_id: str) -> Outcome | list[Outcome] | None:
    """A request the settings cannot serve ends `failed` at once, its reason naming the setting: no raise,
    no retry into the poison queue (ACR events on the queue likewise, when replication's settings are
    broken). None when the settings it needs are fine. Broken storage settings leave nothing to record in:
    one line, and the host keeps the message (it retries, then parks it in the poison queue)."""
    settings = worker.settings
    document, problem = decode_body(body)
    events = problem is None and is_event_like(document)
    problems = settings.problems_for(REPLICATION if events else IMPORTS)
    if not problems and not events:
        named = document.get("credential") if problem is None and isinstance(document, dict) else None
        broken = settings.credential_problem(named) if isinstance(named, str) and named else None
        problems = (broken,) if broken is not None else ()
    if not problems:
        return None
    reason = redact_text("the app's settings cannot serve this request: " + "; ".join(map(str, problems)),
                         worker._secrets)
    storage = [p for p in problems if p.needed_by == STORAGE]
    if storage:
        log.error(json.dumps({"event": "import", "messageId": message_id, "state": "unrecorded",
                              "reason": redact_text(str(storage[0]), worker._secrets)}))
        raise SettingsUnusable(str(storage[0]))
    if events:
        return _events_refused(worker, document, reason)
    request_id = validate_document(document, settings, fallback_id=message_id).id if problem is None else message_id
    previous = worker.status.get(request_id)
    if previous is not None and previous.state.terminal:
        return Outcome(request_id, previous.state, f"already {previous.state}", previous.attempts)
    started = time.monotonic()
    failure = Failure(Kind.PERMANENT, "SettingsInvalid", reason)
    secrets = _inline_secrets_of(document)
    reason = redact_text(reason, (*worker._secrets, *secrets))
    worker.status.transition(request_id, State.FAILED, reason=reason, kind=str(failure.kind), code=failure.code,
                             **_summary_of(document))
    worker.queues.dead_letter(_letter(worker, request_id, State.FAILED, reason, document if problem is None
                                      else _raw_text(body), failure, 0, extra_secrets=secrets))
    outcome = Outcome(request_id, State.FAILED, reason, 0, failure)
    _log(worker, outcome, None, started, document=document)
    return outcome


def _events_refused(worker: Worker, document: Any, reason: str) -> list[Outcome]:
    """ACR events on the queue while the settings replication needs are broken: each `failed`, with the
    reason, and dead-lettered (re-queue them after the fix)."""
    from shared.events import read_events

    outcomes = []
    failure = Failure(Kind.PERMANENT, "SettingsInvalid", reason)
    for event in read_events(document):
        record_id = f"event-{event.key}"
        previous = worker.status.get(record_id)
        if previous is not None and previous.state.terminal:
            continue
        raw = getattr(event, "document", None) or {"id": event.id, "topic": event.topic,
                                                   "eventType": event.event_type}
        started = time.monotonic()
        worker.status.transition(record_id, State.FAILED, reason=reason, kind=str(failure.kind), code=failure.code)
        worker.queues.dead_letter(_letter(worker, record_id, State.FAILED, reason, raw, failure, 0, extra_secrets=()))
        outcome = Outcome(record_id, State.FAILED, reason, 0, failure)
        _log(worker, outcome, None, started, document=raw)
        outcomes.append(outcome)
    return outcomes


def unchanged_digest(worker: Worker, request: ImportRequest) -> tuple[str | None, str]:
    """The source's digest when every target already holds it, else None, with a note when the digests
    could not be read (the import then goes ahead: comparing is an optimisation, never a gate)."""
    settings, registries = worker.settings, worker.registries
    suffix = settings.acr_login_server_suffix
    source = request.source
    host = request.source_registry.login_server(suffix) if request.source_registry else source.registry
    credentials = request.credentials
    auth = source_auth(host, credentials.username if credentials else None,
                       credentials.password if credentials else None, worker.identity, suffix)
    target_host = request.target.login_server(suffix)
    try:
        upstream = registries.head_manifest(host, source.repository, source.digest or source.tag or "latest", auth)
        if upstream is None:
            return None, ""
        for target_tag in request.target_tags:
            repository, _, tag = target_tag.rpartition(":")
            current = registries.head_manifest(target_host, repository, tag, worker.identity)
            if current is None or current.digest != upstream.digest:
                return None, ""
        for repository in request.untagged_target_repositories:
            if registries.head_manifest(target_host, repository, upstream.digest, worker.identity) is None:
                return None, ""
    except RegistryError as err:
        return None, f" (digests not compared: {err})"
    return upstream.digest, ""


def imported_image(worker: Worker, request: ImportRequest) -> dict[str, Any]:
    """What landed in the target, for the status row: its digest and how many platforms. Best effort: a
    read that fails leaves them out and never changes the outcome."""
    if worker.registries is None:
        return {}
    host = request.target.login_server(worker.settings.acr_login_server_suffix)
    if request.target_tags:
        repository, _, reference = request.target_tags[0].rpartition(":")
    else:
        repository, reference = request.untagged_target_repositories[0], request.source.digest or ""
    if not reference:
        return {}
    try:
        head = worker.registries.head_manifest(host, repository, reference, worker.identity)
        platforms = worker.registries.platforms(host, repository, reference, worker.identity) if head else None
    except RegistryError:
        return {}
    if head is None:
        return {}
    return {"digest": head.digest, "platforms": len(platforms) if platforms else 1}


def _is_tag_conflict(failure: Failure) -> bool:
    return failure.code == "Conflict" or "already exists" in failure.message.lower()


@dataclass(frozen=True)
class HandOver:
    """An import still running when this invocation's wait budget ran out: watch it from a later one."""

    url: str
    started_at: datetime
    checks: int
    delay: float
    pending: int | None


def _resume_after_crash(request: ImportRequest, previous: StatusRecord | None, attempt: int) -> ImportRequest:
    """The same attempt delivered again while its import was running (the worker died; the host let the
    message reappear): watch the import ARM already has instead of starting a second one."""
    if (request.operation is None and previous is not None and previous.state is State.RUNNING
            and previous.operation and previous.attempts == attempt and previous.operation_started_at):
        started = datetime.fromisoformat(previous.operation_started_at)
        return replace(request, operation=PendingOperation(previous.operation, started, max(previous.checks, 1)))
    return request


def _already_handled(request: ImportRequest, previous: StatusRecord) -> bool:
    """A redelivered success, or a stale copy of a follow-up (a later one has looked since, or it ended)."""
    if request.operation is not None:
        return previous.state.terminal or previous.checks > request.operation.checks
    return previous.state in (State.SUCCEEDED, State.SKIPPED)


def _drive_import(worker: Worker, request: ImportRequest, first_attempt_at: datetime) -> Failure | HandOver | None:
    """Start the import (or pick up one handed over) and watch it: at once, then as Retry-After says, until
    it ends (None, or a Failure) or this invocation's wait budget is spent (a HandOver)."""
    settings = worker.settings
    began = time.monotonic()
    try:
        if request.operation:
            url, operation_started, checks = (request.operation.url, request.operation.started_at,
                                              request.operation.checks)
        else:
            source_registry = resolve_source_registry(request, worker.arm.registry_by_login_server,
                                                      suffix=settings.acr_login_server_suffix)
            url, _ = worker.arm.start_import(request.target, import_parameters(request, source_registry))
            if url is None:
                return None
            operation_started, checks = worker.clock(), 0
            worker.status.transition(request.id, State.RUNNING, operation=url,
                                     operation_started_at=operation_started.isoformat())
        while True:
            status = _look(worker, request, url)
            if status.done:
                return None
            checks += 1
            running_for = (worker.clock() - operation_started).total_seconds()
            delay = poll_delay(running_for, status.retry_after, settings)
            if running_for + delay > settings.import_deadline_seconds:
                return Failure(Kind.PERMANENT, "ImportTimedOut",
                               f"ACR still reported the import running after {running_for:.0f} s "
                               f"(IMPORT_DEADLINE_SECONDS={settings.import_deadline_seconds:.0f}); it may still "
                               "finish: check the target before importing again")
            if time.monotonic() - began + delay > settings.import_wait_seconds:
                return HandOver(url, operation_started, checks, delay, status.pending)
            time.sleep(delay)
    except OperationUrlRejected as err:
        return Failure(Kind.PERMANENT, "OperationUrlRejected", str(err))
    except Exception as exc:
        elapsed = (worker.clock() - first_attempt_at).total_seconds()
        failure = classify_error(exc, seconds_since_first_attempt=elapsed,
                                 authorization_grace_seconds=settings.authorization_grace_seconds)
        if failure is None:
            raise
        return failure


FAST_POLL_SECONDS = 60.0


def poll_delay(running_for: float, retry_after: float | None, settings: Settings) -> float:
    """When to look again. ACR answers `Retry-After: 10`, but most imports end within seconds: for the first
    minute we look every IMPORT_POLL_INTERVAL_SECONDS (a GET is a cheap ARM read; the bucket holds 250 and
    refills 25/s per principal, and a throttled look just waits its Retry-After), then as Retry-After says."""
    interval = settings.poll_interval_seconds
    if running_for < FAST_POLL_SECONDS:
        return max(0.05, min(interval, retry_after or interval))
    return max(0.05, retry_after or interval)


def _look(worker: Worker, request: ImportRequest, url: str) -> OperationStatus:
    """One look at the operation. ARM failing to answer (throttling, 5xx, network) is not the import
    failing: it counts as still running, and the deadline bounds how long that can go on."""
    from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

    try:
        return worker.arm.operation_status(request.target, url)
    except (ServiceRequestError, ServiceResponseError):
        return OperationStatus(False)
    except HttpResponseError as exc:
        if exc.status_code == 429 or (exc.status_code or 0) >= 500:
            return OperationStatus(False, retry_after_of(exc))
        raise


def _hand_over(worker: Worker, request: ImportRequest, handover: HandOver, attempt: int, started: float) -> Outcome:
    """A delayed follow-up message carries the operation URL; no thread waits for a long import."""
    document = {**request.document, "id": request.id,
                "operation": {"url": handover.url, "startedAt": handover.started_at.isoformat(),
                              "checks": handover.checks}}
    worker.queues.enqueue(document, delay_seconds=handover.delay)  # first: if it fails, the host retries us
    pending = f"{handover.pending} manifests pending; " if handover.pending else ""
    reason = f"importing: {pending}checking again in {handover.delay:.1f} s (check {handover.checks})"
    worker.status.transition(request.id, State.RUNNING, reason=reason, checks=handover.checks, attempts=attempt)
    outcome = Outcome(request.id, State.RUNNING, reason, attempt, retry_in_seconds=handover.delay)
    _log(worker, outcome, request, started)
    return outcome


def _schedule_retry(worker: Worker, request: ImportRequest, failure: Failure, attempt: int,
                    first_attempt_at: datetime, started: float) -> Outcome:
    delay = retry_delay(attempt, worker.settings, failure, worker.jitter())
    reason = _redact(worker, request, f"attempt {attempt} failed ({failure}); retrying in {delay:.0f} s")
    document = {**request.document, "id": request.id,
                "retry": {"attempt": attempt, "firstAttemptAt": first_attempt_at.isoformat(),
                          "lastReason": _redact(worker, request, str(failure))[:2000]}}
    worker.queues.enqueue(document, delay_seconds=delay)  # if this raises, the host retries the original
    worker.status.transition(request.id, State.RETRYING, reason=reason, kind=str(failure.kind),
                             code=failure.code, attempts=attempt)
    outcome = Outcome(request.id, State.RETRYING, reason, attempt, failure, delay)
    _log(worker, outcome, request, started)
    return outcome


def _finish(worker: Worker, request: ImportRequest, state: State, reason: str, attempts: int, started: float,
            *, failure: Failure | None = None, **found: Any) -> Outcome:
    reason = _redact(worker, request, reason)
    worker.status.transition(request.id, state, reason=reason, attempts=attempts,
                             kind=str(failure.kind) if failure else "", code=failure.code if failure else "",
                             **_summary(request), **found)
    if state is State.FAILED:
        worker.queues.dead_letter(_letter(worker, request.id, state, reason, request.document, failure, attempts,
                                          extra_secrets=_inline_secrets(request)))
    outcome = Outcome(request.id, state, reason, attempts, failure)
    _log(worker, outcome, request, started)
    return outcome


def _finish_rejected(worker: Worker, rejected: Rejected, body: bytes | str, started: float) -> Outcome:
    """Record a request that will never run. A body that did not decode is kept only as a description (size,
    hash, prefix): it may be anything, a password included; a decoded one is kept with its secrets removed."""
    document = rejected.document
    secrets = (*worker._secrets, *_inline_secrets_of(document))
    reason = redact_text(rejected.reason, secrets)
    failure = Failure(Kind.REJECTED, "InvalidRequest", reason)
    worker.status.transition(rejected.id, State.REJECTED, reason=reason, kind=str(Kind.REJECTED),
                             code="InvalidRequest", **_summary_of(document, secrets))
    kept = document if document is not None else _raw_text(body, secrets)
    worker.queues.dead_letter(_letter(worker, rejected.id, State.REJECTED, reason, kept, failure, 0,
                                      extra_secrets=secrets))
    outcome = Outcome(rejected.id, State.REJECTED, reason, 0, failure)
    _log(worker, outcome, None, started, document=document)
    return outcome


def record_rejected(worker: Worker, rejected: Rejected) -> Outcome:
    """Record something that will never be imported (an event we refuse) the way a rejected request is:
    status row, dead-letter copy without secrets, one log line."""
    body = json.dumps(rejected.document, default=str) if rejected.document is not None else ""
    return _finish_rejected(worker, rejected, body, time.monotonic())


def record_ignored(worker: Worker, record_id: str, reason: str, document: Any) -> Outcome:
    """Record an input that is fine but asks for nothing (an event no rule selects): skipped, not dead-lettered."""
    started = time.monotonic()
    reason = redact_text(reason, worker._secrets)
    worker.status.transition(record_id, State.SKIPPED, reason=reason, **_summary_of(document))
    outcome = Outcome(record_id, State.SKIPPED, reason)
    _log(worker, outcome, None, started, document=document)
    return outcome


def _events_poisoned(worker: Worker, document: Any, started: float) -> list[Outcome]:
    """Events whose every delivery crashed (usually unusable replication rules): rejected, so the reason is
    kept; the dead-letter copy can be re-queued once the cause is fixed."""
    from shared.events import read_events

    reason = ("processing this event raised an error on every delivery, so the host moved it to the poison "
              "queue; the function logs say why (unusable replication rules stop every event)")
    outcomes = []
    for event in read_events(document):
        record_id = f"event-{event.key}"
        previous = worker.status.get(record_id)
        if previous and previous.state.terminal:
            continue
        raw = getattr(event, "document", None) or {"id": event.id, "topic": event.topic,
                                                   "eventType": event.event_type}
        outcomes.append(_finish_rejected(worker, Rejected(record_id, (Problem("(event)", reason),), raw),
                                         json.dumps(raw, default=str), started))
    return outcomes


def _letter(worker: Worker, request_id: str, state: State, reason: str, document: Any, failure: Failure | None,
            attempts: int, *, extra_secrets: tuple[str, ...]) -> dict[str, Any]:
    return {"id": request_id, "state": str(state), "reason": reason,
            "kind": str(failure.kind) if failure else "", "code": failure.code if failure else "",
            "attempts": attempts, "deadLetteredAt": worker.clock().isoformat(),
            "body": redact_document(document, (*worker._secrets, *extra_secrets))}


def _raw_text(body: bytes | str, secrets: tuple[str, ...] = ()) -> str:
    """What a dead letter keeps of a body that did not decode: never the bytes themselves."""
    return describe_unparsed(body if isinstance(body, bytes | bytearray) else str(body), secrets)


def _inline_secrets(request: ImportRequest) -> tuple[str, ...]:
    return (request.credentials.password,) if request.credentials else ()


def _inline_secrets_of(document: Any) -> tuple[str, ...]:
    return secret_values_of(document)


def _redact(worker: Worker, request: ImportRequest | None, text: str) -> str:
    return redact_text(text, (*worker._secrets, *(_inline_secrets(request) if request else ())))


def _summary(request: ImportRequest) -> dict[str, Any]:
    return request_fields(request)


def _summary_of(document: Any, secrets: tuple[str, ...] = ()) -> dict[str, Any]:
    """What a rejected body asked for, for the status row and the log line: each field that parses as what it
    should be (a reference, a registry id, a mode), the rest described, never copied (see `describe_unparsed`)."""
    if not isinstance(document, dict):
        return {}

    def kept(name: str, parse: Callable[[str], object]) -> str | None:
        value = document.get(name)
        if name not in document:
            return None
        if isinstance(value, str) and len(value) <= 1024:
            try:
                parse(value)
                return redact_text(value, secrets)
            except (InvalidReference, ValueError, KeyError):
                pass
        return describe_unparsed(value, secrets)

    def tag(value: Any) -> str:
        if isinstance(value, str) and len(value) <= 512:
            try:
                parse_target_tag(value)
                return redact_text(value, secrets)
            except InvalidReference:
                pass
        return describe_unparsed(value, secrets)

    tags = document.get("targetTags")
    return {"source": kept("source", parse_reference), "target": kept("target", parse_registry_id),
            "mode": kept("mode", _mode),
            "target_tags": [tag(t) for t in tags[:50]] if isinstance(tags, list) else
            [describe_unparsed(tags, secrets)] if tags is not None else None}


def _mode(text: str) -> str:
    if text not in MODES:
        raise ValueError(text)
    return text


def _log(worker: Worker, outcome: Outcome, request: ImportRequest | None, started: float, *,
         document: Any = None, dequeue_count: int | None = None) -> None:
    """One structured line per outcome, with the same field names everywhere."""
    fields: dict[str, Any] = {"event": "import", "requestId": outcome.request_id, "state": str(outcome.state),
                              "reason": outcome.reason, "attempts": outcome.attempts,
                              "durationMs": int((time.monotonic() - started) * 1000)}
    secrets = (*worker._secrets, *(_inline_secrets(request) if request else _inline_secrets_of(document)))
    if request:
        summary = _summary(request)
        fields.update({"source": summary["source"], "target": summary["target"],
                       "targetTags": summary["target_tags"], "mode": request.mode})
    elif isinstance(document, dict):
        names = {"source": "source", "target": "target", "mode": "mode", "target_tags": "targetTags"}
        fields.update({names[k]: v for k, v in _summary_of(document, secrets).items() if v})
    if outcome.failure:
        fields.update({"kind": str(outcome.failure.kind), "code": outcome.failure.code})
    if outcome.retry_in_seconds is not None:
        fields["retryInSeconds"] = round(outcome.retry_in_seconds, 1)
    if dequeue_count is not None:
        fields["dequeueCount"] = dequeue_count
    line = redact_text(json.dumps(fields, ensure_ascii=False, default=str), secrets)
    level = logging.WARNING if outcome.state in (State.FAILED, State.REJECTED) else logging.INFO
    log.log(level, line)
    telemetry.record_import(fields, secrets)
