"""The outcome recorder: how a request or an ACR event that ends is written down, the same way everywhere.

Three records per outcome: the status row (what a person looks up), a dead-letter copy when it failed or was
rejected (what can be re-queued after a fix), and one structured log line (with the telemetry metric). No
record holds a secret: the app's own (`Worker._secrets`) and any inline password are redacted first.
Used by the import state machine (shared/imports/worker.py) and by replication (shared/replication/replicate.py).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from shared.app_context import Worker
from shared.azure import telemetry
from shared.azure.status import StatusRecord, request_fields
from shared.core.outcome import Failure, Kind, Outcome, State
from shared.core.redact import describe_unparsed, redact_document, redact_text, secret_values_of
from shared.core.reference import InvalidReference, parse_reference, parse_target_tag
from shared.core.request import MODES, ImportRequest, Rejected
from shared.core.request_ids import is_safe_request_id
from shared.core.resource_ids import parse_registry_id
from shared.core.settings import STORAGE, SettingProblem, SettingsUnusable

log = logging.getLogger("acr_importer")


def settings_refusal(worker: Worker, problems: Sequence[SettingProblem], *, message_id: str) -> str:
    """The reason a message the settings cannot serve ends with, naming each setting (redacted). Broken
    storage settings leave nothing to record in: one line, and SettingsUnusable, so the host keeps the
    message (it retries, then parks it in the poison queue)."""
    reason = redact_text("the app's settings cannot serve this request: " + "; ".join(map(str, problems)),
                         worker._secrets)
    storage = [p for p in problems if p.needed_by == STORAGE]
    if storage:
        log.error(json.dumps({"event": "import", "messageId": message_id, "state": "unrecorded",
                              "reason": redact_text(str(storage[0]), worker._secrets)}))
        raise SettingsUnusable(str(storage[0]))
    return reason


def finish_rejected(worker: Worker, rejected: Rejected, body: bytes | str, started: float, *,
                     row: str = "replace") -> Outcome:
    """Record a request that will never run. A body that did not decode is kept only as a description (size,
    hash, prefix): it may be anything, a password included; a decoded one is kept with its secrets removed."""
    document = rejected.document
    secrets = (*worker._secrets, *secret_values_of(document))
    reason = redact_text(rejected.reason, secrets)
    failure = Failure(Kind.REJECTED, "InvalidRequest", reason)
    fields = {"reason": reason, "kind": str(Kind.REJECTED), "code": "InvalidRequest",
              **summary_of(document, secrets)}
    written = row == "replace"
    if row == "replace":  # the app's own records (events): the row is the app's
        worker.status.transition(rejected.id, State.REJECTED, **fields)
    elif row == "create":  # a message's: only on an id nobody has (see shared/imports/worker.py `_reject_message`)
        row_of_its_own = StatusRecord(id=rejected.id, state=State.REJECTED).moved(State.REJECTED, **fields)
        written = worker.status.create(row_of_its_own) is not None
    kept = document if document is not None else raw_text(body, secrets)
    dead_letter(worker, letter(worker, rejected.id, State.REJECTED, reason, kept, failure, 0, extra_secrets=secrets),
                keep_copy=written)
    outcome = Outcome(rejected.id, State.REJECTED, reason, 0, failure)
    log_outcome(worker, outcome, None, started, document=document)
    return outcome


def record_rejected(worker: Worker, rejected: Rejected) -> Outcome:
    """Record something that will never be imported (an event we refuse) the way a rejected request is:
    status row, dead-letter copy without secrets, one log line."""
    body = json.dumps(rejected.document, default=str) if rejected.document is not None else ""
    return finish_rejected(worker, rejected, body, time.monotonic())


def record_ignored(worker: Worker, record_id: str, reason: str, document: Any) -> Outcome:
    """Record an input that is fine but asks for nothing (an event no rule selects): skipped, not dead-lettered."""
    started = time.monotonic()
    reason = redact_text(reason, worker._secrets)
    worker.status.transition(record_id, State.SKIPPED, reason=reason, **summary_of(document))
    outcome = Outcome(record_id, State.SKIPPED, reason)
    log_outcome(worker, outcome, None, started, document=document)
    return outcome


def dead_letter(worker: Worker, built: dict[str, Any], *, keep_copy: bool = True) -> None:
    """Send a letter (from `letter`) to the dead-letter queue, then keep a copy in the status table under its id
    so a person can find it by id (GET /api/ops/imports/{id}). The queue's copy comes first and is the one that
    counts; the table's is best effort. No copy (`keep_copy` False) when the letter's id names a row this outcome
    did not write (a message reusing another request's id must not replace that request's letter)."""
    worker.queues.dead_letter(built)
    request_id = str(built.get("id", ""))
    if keep_copy and is_safe_request_id(request_id) and not worker.status.keep_dead_letter(request_id, built):
        log.warning(json.dumps({"event": "deadLetter", "requestId": request_id,
                                "problem": "the copy in the status table was not written; the dead-letter queue "
                                           "holds the letter"}))


def letter(worker: Worker, request_id: str, state: State, reason: str, document: Any, failure: Failure | None,
            attempts: int, *, extra_secrets: tuple[str, ...]) -> dict[str, Any]:
    return {"id": request_id, "state": str(state), "reason": reason,
            "kind": str(failure.kind) if failure else "", "code": failure.code if failure else "",
            "attempts": attempts, "deadLetteredAt": worker.clock().isoformat(),
            "body": redact_document(document, (*worker._secrets, *extra_secrets))}


def raw_text(body: bytes | str, secrets: tuple[str, ...] = ()) -> str:
    """What a dead letter keeps of a body that did not decode: never the bytes themselves."""
    return describe_unparsed(body if isinstance(body, bytes | bytearray) else str(body), secrets)


def inline_secrets(request: ImportRequest) -> tuple[str, ...]:
    return (request.credentials.password.reveal(),) if request.credentials else ()


def redact(worker: Worker, request: ImportRequest | None, text: str) -> str:
    return redact_text(text, (*worker._secrets, *(inline_secrets(request) if request else ())))


def summary_of(document: Any, secrets: tuple[str, ...] = ()) -> dict[str, Any]:
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


def log_outcome(worker: Worker, outcome: Outcome, request: ImportRequest | None, started: float, *,
         document: Any = None, dequeue_count: int | None = None) -> None:
    """One structured line per outcome, with the same field names everywhere."""
    fields: dict[str, Any] = {"event": "import", "requestId": outcome.request_id, "state": str(outcome.state),
                              "reason": outcome.reason, "attempts": outcome.attempts,
                              "durationMs": int((time.monotonic() - started) * 1000)}
    secrets = (*worker._secrets, *(inline_secrets(request) if request else secret_values_of(document)))
    if request:
        summary = request_fields(request)
        fields.update({"source": summary["source"], "target": summary["target"],
                       "targetTags": summary["target_tags"], "mode": request.mode})
    elif isinstance(document, dict):
        names = {"source": "source", "target": "target", "mode": "mode", "target_tags": "targetTags"}
        fields.update({names[k]: v for k, v in summary_of(document, secrets).items() if v})
    if outcome.failure:
        fields.update({"kind": str(outcome.failure.kind), "code": outcome.failure.code})
    if outcome.retry_in_seconds is not None:
        fields["retryInSeconds"] = round(outcome.retry_in_seconds, 1)
    if dequeue_count is not None:
        fields["dequeueCount"] = dequeue_count
    line = redact_text(json.dumps(fields, ensure_ascii=False, default=str), secrets)
    level = logging.WARNING if outcome.state.ended_badly else logging.INFO
    log.log(level, line)
    telemetry.record_import(fields, secrets)
