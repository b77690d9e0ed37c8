"""The import state machine: one import request in, exactly one terminal state out (or a scheduled retry).

The single choke point for retries and the request's status row: it claims the row, starts the import in
ARM (or picks up the one the row says runs), watches it, and ends in one state, recorded by
shared/imports/recorder.py. Whether a queue message is a request at all is decided before it gets here
(shared/dispatch.py); the adapters (ARM, queues, status table) do the I/O.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.app_context import Worker
from shared.azure.arm import OperationStatus, OperationUrlRejected
from shared.azure.arm_budget import Budget, kind_of
from shared.azure.deadlines import referrers_deadline
from shared.azure.queues import MAX_QUEUE_MESSAGE_BYTES, MessageTooLarge, message_size, message_text
from shared.azure.status import MAX_BACKUP_TAGS, StatusRecord, StatusStore, request_fields
from shared.core.failures import classify_error, configuration_failure, retry_after_of
from shared.core.outcome import Failure, Kind, Outcome, Problem, State
from shared.core.redact import redact_text, secret_values_of
from shared.core.reference import TargetTag
from shared.core.request import ImportRequest, Rejected, fingerprint, parse_decoded, validate_document
from shared.core.settings import BACKUP, IMPORTS, SettingProblem, Settings
from shared.imports import claims
from shared.imports.engine import backup_parameters, import_parameters, resolve_source_registry, source_access
from shared.imports.recorder import (
    dead_letter,
    finish_rejected,
    inline_secrets,
    letter,
    log_outcome,
    raw_text,
    redact,
    settings_refusal,
    summary_of,
)
from shared.imports.referrers import Carried, Watch, carry_referrers
from shared.registry.client import RegistryError, index_entries, platforms_of
from shared.registry.referrers import Walk

# The Azure SDK is imported inside the functions that use it, on purpose: it costs about half a second of
# every cold start (docs/benchmarks.md), and a message that is refused at once never needs it.


def retry_delay(attempt: int, settings: Settings, failure: Failure, jitter: float) -> float:
    """Exponential backoff with jitter (attempt 1 -> about base), never sooner than Retry-After."""
    backoff = min(settings.retry_max_seconds, settings.retry_base_seconds * 2.0 ** max(0, attempt - 1))
    return max(failure.retry_after or 0.0, backoff * (0.5 + jitter / 2))


def handle_request(worker: Worker, body: bytes | str, decoded: tuple[Any, Problem | None], *, message_id: str,
                   dequeue_count: int = 1) -> Outcome:
    """One queue message that is not an ACR event (shared/dispatch.py decides): an import request, decoded.

    Nothing the message says about the app's own state is believed: which run it belongs to, its attempt
    and the operation to watch are on the status row, which this delivery claims before it acts."""
    started = time.monotonic()
    admitted = _admitted(worker, body, decoded, message_id, started)
    if isinstance(admitted, Outcome):
        return admitted
    request, document = admitted
    claimed = _claim(worker, request, message_id, document, body, started, dequeue_count,
                     insert_first=not _names_its_id(document) and dequeue_count <= 1)
    if isinstance(claimed, Outcome):
        return claimed
    try:
        return _run(worker, request, claimed, started)
    except ClaimLost:
        return _superseded(worker, request, started)


def _admitted(worker: Worker, body: bytes | str, decoded: tuple[Any, Problem | None], message_id: str,
              started: float) -> tuple[ImportRequest, Any] | Outcome:
    """The request and its document, or the outcome that ends it first: settings that cannot serve it, or a
    message that does not parse (both recorded). Every delivery, poisoned or not, passes this one gate."""
    if (refused := refuse_for_settings(worker, body, decoded, message_id=message_id)) is not None:
        return refused
    parsed = parse_decoded(decoded, worker.settings, fallback_id=message_id)
    if isinstance(parsed, Rejected):
        return _reject_message(worker, parsed, body, started)
    return parsed, decoded[0]


def _run(worker: Worker, request: ImportRequest, claim: Claim, started: float) -> Outcome:
    """The claimed request from where its row says it is: watching ARM's operation, or one attempt."""
    row = claim.record
    attempt = max(row.attempts, 1)
    first_attempt_at = _time(row.first_attempt_at) or worker.clock()
    note = ""
    read: DigestsRead | None = None
    if not _watching(row) and request.mode == "IfChanged":
        read = read_digests(worker, request, every_tag=worker.settings.backup_tag_template is not None)
        same, note = read.unchanged, read.note
        if same:
            return _with_referrers(worker, claim, request, f"unchanged: {same}", attempt, first_attempt_at,
                                   started, {"digest": same}, unchanged=True)
    progress = _drive_import(worker, claim, request, first_attempt_at, read)
    if isinstance(progress, HandOver):
        return _hand_over(worker, claim, request, progress, attempt, started)
    if isinstance(progress, Throttled):
        return _throttled_retry(worker, claim, request, progress, attempt, first_attempt_at, started)
    failure = progress
    if failure is None:
        landed, children = imported_image(worker, request)
        return _with_referrers(worker, claim, request, f"imported{note}{kept_note(claim.record)}", attempt,
                               first_attempt_at, started, landed, children=children)
    if request.mode == "NoForce" and _is_tag_conflict(failure):
        same, _ = unchanged_digest(worker, request)
        if same:
            return _with_referrers(worker, claim, request, f"already present: the target holds the source digest "
                                                           f"{same}", attempt, first_attempt_at, started,
                                   {"digest": same})
    return _failed_attempt(worker, claim, request, failure, attempt, first_attempt_at, started)


def _with_referrers(worker: Worker, claim: Claim, request: ImportRequest, reason: str, attempt: int,
                    first_attempt_at: datetime, started: float, found: dict[str, Any], *,
                    unchanged: bool = False, children: list[str] | None = None) -> Outcome:
    """The image is in the target: bring its referrers (shared/imports/referrers.py), then end the request.
    An unchanged image whose referrers were all there is `skipped`; one that gained referrers `succeeded`.
    Referrers that could not be imported warn in the reason, or fail the request when it said `required`."""
    digest = found.get("digest", "")
    if digest:
        carried = carry_referrers(worker, request, digest, _watch(worker, request), children=children,
                                  deadline=referrers_deadline(started))
    else:  # the image landed, but reading it back failed: its referrers cannot be looked for; never silently
        carried = Carried(request.referrers, Walk(unread=("the imported image could not be read back from the "
                                                          "target, so its referrers were not looked for",))) \
            if request.referrers.enabled else None
    if carried is None:
        state = State.SKIPPED if unchanged else State.SUCCEEDED
        return _finish(worker, claim, request, state, reason, attempt, started, **found)
    found = {**found, **carried.row_fields()}
    if carried.incomplete and request.referrers.required:
        failure = Failure(Kind.TRANSIENT if carried.retryable else Kind.PERMANENT, "ReferrersMissing",
                          f"{reason}, but not every referrer: {carried.note()} (the request asked for referrers: "
                          "required)")
        return _failed_attempt(worker, claim, request, failure, attempt, first_attempt_at, started, found)
    state = State.SKIPPED if unchanged and not carried.imported else State.SUCCEEDED
    if unchanged and carried.imported:
        reason = f"image unchanged ({reason.removeprefix('unchanged: ')}); new referrers imported"
    return _finish(worker, claim, request, state, f"{reason}; {carried.note()}", attempt, started, **found)


def _watch(worker: Worker, request: ImportRequest) -> Watch:
    """How referrers' imports are watched: as the main import is (`_look`, `poll_delay` and ARM's read budget)."""
    return Watch(look=lambda url: _look(worker, request, url),
                 delay=lambda running_for, retry_after, looks: poll_delay(
                     running_for, retry_after, worker.settings, checks=looks,
                     budget=worker.arm.budget(request.target, "reads")))


def _failed_attempt(worker: Worker, claim: Claim, request: ImportRequest, failure: Failure, attempt: int,
                    first_attempt_at: datetime, started: float, found: dict[str, Any] | None = None) -> Outcome:
    """A transient failure with attempts left is retried; any other ends the request `failed`."""
    if failure.kind is Kind.TRANSIENT and attempt < worker.settings.max_attempts:
        return _schedule_retry(worker, claim, request, failure, attempt, first_attempt_at, started)
    reason = str(failure) if failure.kind is not Kind.TRANSIENT else \
        f"gave up after {attempt} attempts; last error: {failure}"
    return _finish(worker, claim, request, State.FAILED, reason, attempt, started, failure=failure, **(found or {}))


def handle_poisoned_request(worker: Worker, body: bytes | str, decoded: tuple[Any, Problem | None], *,
                            message_id: str) -> Outcome:
    """The host gave up on a request's message after repeated crashes: record it as failed so it is not lost
    (on its row, unless the id is another request's or one of the app's reserved ids that the app never
    opened)."""
    started = time.monotonic()
    admitted = _admitted(worker, body, decoded, message_id, started)
    if isinstance(admitted, Outcome):
        return admitted
    parsed, document = admitted
    failure = Failure(Kind.PERMANENT, "WorkerCrashed",
                      "processing raised an unexpected error on every delivery, so the host moved the message "
                      "to the poison queue; the function logs hold the exception")
    for _ in range(MAX_CLAIM_ROUNDS):
        row = worker.status.get(parsed.id)
        decision = claims.decide(row, parsed, message_id)
        if decision.step in (claims.Step.SQUAT, claims.Step.CONFLICT):
            return _reject_message(worker, Rejected(parsed.id, (Problem("id", decision.reason),), document),
                                   body, started, recorded=row)
        if row is not None and row.state.terminal:
            outcome = Outcome(parsed.id, row.state, f"already {row.state}", row.attempts)
            log_outcome(worker, outcome, parsed, started)
            return outcome
        claim = Claim(worker.status, row or StatusRecord(id=parsed.id, state=State.FAILED))
        try:
            return _finish(worker, claim, parsed, State.FAILED, str(failure), row.attempts if row else 0, started,
                           failure=failure, fingerprint=fingerprint(parsed))
        except ClaimLost:
            continue
    return _superseded(worker, parsed, started)


def refuse_for_settings(worker: Worker, body: bytes | str, decoded: tuple[Any, Problem | None], *,
                        message_id: str) -> Outcome | None:
    """A request the settings cannot serve ends `failed` at once, its reason naming the setting: no raise,
    no retry into the poison queue. None when the settings it needs are fine. Broken storage settings
    leave nothing to record in (shared/imports/recorder.py `settings_refusal` raises)."""
    settings = worker.settings
    document, problem = decoded
    problems = settings.problems_for(IMPORTS)
    if not problems:
        named = document.get("credential") if problem is None and isinstance(document, dict) else None
        broken = settings.credential_problem(named) if isinstance(named, str) and named else None
        problems = (broken,) if broken is not None else ()
    if not problems and problem is None and isinstance(document, dict) and document.get("mode") in MOVES_TAGS:
        problems = backup_problems(settings)
    if not problems:
        return None
    reason = settings_refusal(worker, problems, message_id=message_id)
    request_id = validate_document(document, settings, fallback_id=message_id).id if problem is None else message_id
    previous = worker.status.get(request_id)
    if previous is not None and previous.state.terminal:
        return Outcome(request_id, previous.state, f"already {previous.state}", previous.attempts)
    started = time.monotonic()
    failure = Failure(Kind.PERMANENT, "SettingsInvalid", reason)
    secrets = secret_values_of(document)
    reason = redact_text(reason, (*worker._secrets, *secrets))
    worker.status.transition(request_id, State.FAILED, reason=reason, kind=str(failure.kind), code=failure.code,
                             **summary_of(document, (*worker._secrets, *secrets)))
    dead_letter(worker, letter(worker, request_id, State.FAILED, reason, document if problem is None
                               else raw_text(body), failure, 0, extra_secrets=secrets))
    outcome = Outcome(request_id, State.FAILED, reason, 0, failure)
    log_outcome(worker, outcome, None, started, document=document)
    return outcome


def unchanged_digest(worker: Worker, request: ImportRequest) -> tuple[str | None, str]:
    """The source's digest when every target already holds it, else None, with a note when the digests
    could not be read (the import then goes ahead: comparing is an optimisation, never a gate)."""
    read = read_digests(worker, request)
    return read.unchanged, read.note


@dataclass(frozen=True)
class DigestsRead:
    """One comparison of the source with the target: the source's digest (None: not read) and each target
    tag's as read (None: the tag does not exist; a tag not listed was not read)."""

    source: str | None = None
    targets: tuple[tuple[str, str | None], ...] = ()  # (str(target tag), digest or None)
    unchanged: str | None = None  # the source's digest when every target already holds it
    note: str = ""  # why the digests could not be compared, for the outcome's reason

    def target(self, target_tag: str) -> tuple[bool, str | None]:
        """(whether it was read, its digest)."""
        for name, digest in self.targets:
            if name == target_tag:
                return True, digest
        return False, None


def read_digests(worker: Worker, request: ImportRequest, *, every_tag: bool = False) -> DigestsRead:
    """The source's digest and the target tags' (stopping at the first that differs, unless `every_tag`: a
    backup needs each moved tag's), and whether every target already holds the source's. A read that fails
    leaves a note and what was read so far."""
    settings, registries, identity = worker.settings, worker.registries, worker.identity
    assert registries is not None and identity is not None, "Worker.__post_init__ sets both"
    suffix = settings.acr_login_server_suffix
    source = request.source
    host, auth = source_access(request, identity, suffix=suffix)
    target_host = request.target.login_server(suffix)
    upstream_digest: str | None = None
    targets: list[tuple[str, str | None]] = []
    try:
        upstream = registries.head_manifest(host, source.repository, source.digest or source.tag or "latest", auth)
        if upstream is None:
            return DigestsRead()
        upstream_digest = upstream.digest
        same = True
        for target_tag in request.target_tags:
            current = registries.head_manifest(target_host, target_tag.repository, target_tag.tag, identity)
            targets.append((str(target_tag), current.digest if current else None))
            if current is None or current.digest != upstream.digest:
                same = False
                if not every_tag:
                    break
        if not same:
            return DigestsRead(upstream_digest, tuple(targets))
        for repository in request.untagged_target_repositories:
            if registries.head_manifest(target_host, repository, upstream.digest, identity) is None:
                return DigestsRead(upstream_digest, tuple(targets))
    except RegistryError as err:
        return DigestsRead(upstream_digest, tuple(targets), note=f" (digests not compared: {err})")
    except Exception as exc:  # no identity, an untrusted certificate: the import itself then fails with the fix
        if (failure := configuration_failure(exc)) is None:
            raise
        return DigestsRead(upstream_digest, tuple(targets), note=f" (digests not compared: {failure.code})")
    return DigestsRead(upstream_digest, tuple(targets), unchanged=upstream.digest)


def imported_image(worker: Worker, request: ImportRequest) -> tuple[dict[str, Any], list[str] | None]:
    """What landed in the target, for the status row (its digest and how many platforms), and the digests of
    its platform manifests (the referrers' subjects), from one GET. Best effort: a read that fails leaves them
    out and never changes the outcome."""
    if worker.registries is None:
        return {}, None
    host = request.target.login_server(worker.settings.acr_login_server_suffix)
    if request.target_tags:
        repository, reference = request.target_tags[0].repository, request.target_tags[0].tag
    else:
        repository, reference = request.untagged_target_repositories[0], request.source.digest or ""
    if not reference:
        return {}, None
    try:
        described = worker.registries.manifest(host, repository, reference, worker.identity)
        if described is None:
            return {}, None
        head, document = described
        platforms = platforms_of(host, document, f"GET {repository}:{reference}")
        children = [e.digest for e in index_entries(host, document, "the imported index")] \
            if isinstance(document.get("manifests"), list) else []
    except RegistryError:
        return {}, None
    return {"digest": head.digest, "platforms": len(platforms) if platforms else 1}, children


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


class ClaimLost(Exception):
    """The request's row changed under this delivery: another delivery (or the poison handler) has it now."""


@dataclass
class Claim:
    """This delivery's hold on a request's row. Every write is conditional on the row as this delivery last
    wrote it (or, for a row not there yet, on there being none), so two deliveries never both act."""

    store: StatusStore
    record: StatusRecord

    def write(self, state: State, **fields: Any) -> StatusRecord:
        moved = self.record.moved(state, **fields)
        written = self.store.create(moved) if self.record.etag is None else self.store.replace(moved)
        if written is None:
            raise ClaimLost(self.record.id)
        self.record = written
        return written


MAX_CLAIM_ROUNDS = 5  # each lost round means another delivery wrote the row: decide again on what it wrote


def _names_its_id(document: Any) -> bool:
    return isinstance(document, dict) and document.get("id") is not None


def _claim(worker: Worker, request: ImportRequest, message_id: str, document: Any, body: bytes | str,
           started: float, dequeue_count: int, *, insert_first: bool = False) -> Claim | Outcome:
    """Take the request on its row for this delivery, or say (as a logged Outcome) why this delivery does
    nothing: already done, carried by another message, a different request's id, or a reserved id.

    `insert_first` skips the first read when no row can be expected: a message without an `id` of its own is
    named by its queue message id, so on its first delivery nobody else can have written its row. The insert
    is conditional either way: if a row is there after all, it fails (409) and the loop reads and decides as
    usual; the guess saves a round trip, it never decides anything."""
    for round_ in range(MAX_CLAIM_ROUNDS):
        row = None if insert_first and round_ == 0 else worker.status.get(request.id)
        if request.app_fields and not _older_run_in_flight(row):
            problems = tuple(Problem(name, "is kept by the app on the request's status row, never taken from a "
                                           "queue message; send the request without it")
                             for name in request.app_fields)
            return _reject_message(worker, Rejected(request.id, problems, document), body, started)
        decision = claims.decide(row, request, message_id)
        step = decision.step
        if step in (claims.Step.SQUAT, claims.Step.CONFLICT):
            return _reject_message(worker, Rejected(request.id, (Problem("id", decision.reason),), document),
                                   body, started, recorded=row)
        if step in (claims.Step.DONE, claims.Step.DUPLICATE):
            assert row is not None, "claims.decide says DONE or DUPLICATE only about a row"
            outcome = Outcome(request.id, row.state, decision.reason, row.attempts)
            log_outcome(worker, outcome, request, started, dequeue_count=dequeue_count)
            return outcome
        if step is claims.Step.CONTINUE:
            assert row is not None, "claims.decide says CONTINUE only about a row"
            return Claim(worker.status, row)
        now = worker.clock().isoformat()
        mine = {"carrier": message_id, "fingerprint": fingerprint(request), **request_fields(request)}
        if step is claims.Step.START:  # a new run: attempt 1, on a new row or over one that ended badly
            claim = Claim(worker.status, row or StatusRecord(id=request.id, state=State.RUNNING))
            fields = {"attempts": 1, "first_attempt_at": now, "reason": "", "kind": "", "code": "", "checks": 0,
                      "operation": "", "operation_started_at": "", "poll_failures": "", "backup_tags": [], **mine}
        elif row is None:
            raise AssertionError("claims.decide takes a request without a row only to START it")
        elif _watching(row):  # TAKE a handed-over import: watch the operation ARM already runs
            claim, fields = Claim(worker.status, row), mine
        else:  # TAKE a received or retrying request: its next attempt (a lost one without an operation again)
            attempt = row.attempts if row.state is State.RUNNING else row.attempts + 1
            claim = Claim(worker.status, row)
            fields = {"attempts": max(attempt, 1), "first_attempt_at": row.first_attempt_at or now, "reason": "",
                      "operation": "", "operation_started_at": "", "checks": 0, "poll_failures": "", **mine}
        try:
            claim.write(State.RUNNING, **fields)
        except ClaimLost:
            continue
        return claim
    outcome = Outcome(request.id, State.RECEIVED, "other deliveries of this id kept changing its row; this one "
                                                  "changes nothing")
    log_outcome(worker, outcome, request, started, dequeue_count=dequeue_count)
    return outcome


def _older_run_in_flight(row: StatusRecord | None) -> bool:
    """A run of a version that kept its state on the message (rows had no fingerprint then) is let go on,
    from its row; what its message says about the run is still ignored."""
    return row is not None and not row.fingerprint and not row.state.terminal


def _watching(row: StatusRecord) -> bool:
    return row.state is State.RUNNING and bool(row.operation) and bool(row.operation_started_at)


def _time(text: str) -> datetime | None:
    try:
        value = datetime.fromisoformat(text) if text else None
    except ValueError:
        return None
    return value if value is None or value.tzinfo is not None else None


def _superseded(worker: Worker, request: ImportRequest, started: float) -> Outcome:
    """Another delivery changed the row while this one held it: it carries the request now; stop here."""
    row = worker.status.get(request.id)
    state = row.state if row else State.RECEIVED
    outcome = Outcome(request.id, state, f"another delivery took this request over (it is {state}); this one "
                                         "stopped without writing", row.attempts if row else 0)
    log_outcome(worker, outcome, request, started)
    return outcome


def _drive_import(worker: Worker, claim: Claim, request: ImportRequest, first_attempt_at: datetime,
                  read: DigestsRead | None = None) -> Failure | HandOver | Throttled | None:
    """Start the import (or pick up the one the row says ARM runs) and watch it: at once, then sooner at
    first and as the read budget and Retry-After allow (`poll_delay`), until it ends (None, or a Failure) or
    this invocation's wait budget is spent (HandOver). ARM throttling is never a Failure: Throttled.
    A new attempt of a Force or IfChanged import first keeps each tag it would move under its backup tag
    (`keep_backups`, BACKUP_TAG_TEMPLATE; `read` is what IfChanged already read); watching never does.

    The row learns the operation only when there is something to watch: the look right after the POST comes
    first, and when it already says done the caller writes the final row directly (a quick import writes its
    row twice: claimed, then done). When it says "still running" (or when reads run short and the first look
    itself waits, `first_look_delay`), the row is written RUNNING with the operation URL before the first
    sleep or hand-over: that row is what a later delivery (a hand-over, or a redelivery after a crash) watches.
    A crash between the POST and that write (one GET long) leaves the row
    RUNNING without an operation, so the redelivered message POSTs again, which importImage tolerates: `Force`
    copies the same digest again; `NoForce` meets "tag already exists", which `_run` turns into "already
    present" when the target holds the source's digest (and fails, as it should, when it holds another)."""
    settings, arm = worker.settings, worker.arm
    began = time.monotonic()
    try:
        row = claim.record
        recorded = _watching(row)
        if recorded:
            url, checks = row.operation, max(row.checks, 1)
            operation_started = _time(row.operation_started_at) or worker.clock()
        else:
            source_registry = resolve_source_registry(request, arm.registry_by_login_server,
                                                      suffix=settings.acr_login_server_suffix)
            if (kept := keep_backups(worker, claim, request, read, first_attempt_at)) is not None:
                return kept  # a backup could not be made (or waits for ARM's budget): no tag moves
            if (held := _wait_for_write_budget(worker, request)) is not None:
                return held
            started_url, _ = arm.start_import(request.target, import_parameters(request, source_registry))
            if started_url is None:
                return None
            url = started_url
            operation_started, checks = worker.clock(), 0
        failures = [f for f in row.poll_failures.split(",") if f] if recorded else []

        def name_the_operation() -> None:  # the row a hand-over or a redelivery watches, before anything waits
            claim.write(State.RUNNING, operation=url, operation_started_at=operation_started.isoformat(),
                        checks=checks, poll_failures=",".join(failures))

        with arm.watching(request.target):
            pause = 0.0 if recorded else first_look_delay(arm.budget(request.target, "reads"))
            if pause > 0:  # reads run short: the first look waits too, the row naming the operation first
                name_the_operation()
                recorded = True
                time.sleep(min(pause, settings.import_wait_seconds))
            while True:
                status = _look(worker, request, url)
                if status.done:
                    return None
                checks += 1
                failures_changed = False
                if status.throttled:  # no news, and not a failure: wait its Retry-After (poll_delay's budget)
                    pass
                elif status.failed_with is not None:
                    failures.append(status.failed_with)
                    failures_changed = True
                    if len(failures) >= MAX_POLL_FAILURES:
                        return Failure(Kind.TRANSIENT, "OperationPollFailed",
                                       f"ARM answered {len(failures)} looks in a row at the import's operation "
                                       f"{_operation_name(url)} with {', '.join(failures)}; the import may still "
                                       "finish in ACR: it is started again (a NoForce retry that finds the "
                                       "source's digest already in the target succeeds)", status.retry_after)
                elif failures:
                    failures, failures_changed = [], True
                running_for = (worker.clock() - operation_started).total_seconds()
                delay = poll_delay(running_for, status.retry_after, settings, checks=checks,
                                   budget=arm.budget(request.target, "reads"))
                if status.failed_with is not None:  # ARM throttled or failed the look: never sooner than it asked
                    delay = max(delay, status.retry_after or 0.0)
                if not recorded:  # still running: the row names the operation before anything waits
                    name_the_operation()
                    recorded = True
                elif failures_changed:
                    claim.write(State.RUNNING, poll_failures=",".join(failures))
                if running_for + delay > settings.import_deadline_seconds:
                    return Failure(Kind.PERMANENT, "ImportTimedOut",
                                   f"ACR still reported the import running after {running_for:.0f} s "
                                   f"(IMPORT_DEADLINE_SECONDS={settings.import_deadline_seconds:.0f}); it may "
                                   "still finish: check the target before importing again")
                if time.monotonic() - began + delay > settings.import_wait_seconds:
                    return HandOver(url, operation_started, checks, delay, status.pending)
                time.sleep(delay)
    except ClaimLost:
        raise
    except OperationUrlRejected as err:
        return Failure(Kind.PERMANENT, "OperationUrlRejected", str(err))
    except Exception as exc:
        if (throttled := _throttled_by(worker, request, exc)) is not None:
            return throttled
        elapsed = (worker.clock() - first_attempt_at).total_seconds()
        failure = classify_error(exc, seconds_since_first_attempt=elapsed,
                                 authorization_grace_seconds=settings.authorization_grace_seconds,
                                 target=str(request.target))
        if failure is None:
            raise
        return failure


MOVES_TAGS = ("Force", "IfChanged")  # the modes that may move an existing tag to another digest


def backup_problems(settings: Settings) -> tuple[SettingProblem, ...]:
    """A broken BACKUP_TAG_TEMPLATE: the Force and IfChanged requests it affects fail naming it."""
    return tuple(p for p in settings.problems if p.needed_by == BACKUP)


def kept_note(record: StatusRecord) -> str:
    """The outcome's mention of the backups made before tags moved ("; kept the previous sha256:... as ...")."""
    kept = [entry.partition("=") for entry in record.backup_tags]
    return "".join(f"; kept the previous {digest[:19]}… as {name}" for name, _, digest in kept)


def keep_backups(worker: Worker, claim: Claim, request: ImportRequest, read: DigestsRead | None,
                 first_attempt_at: datetime) -> Failure | Throttled | None:
    """Before a Force or IfChanged import starts: with BACKUP_TAG_TEMPLATE set, each target tag that exists
    with a digest other than the source's is first kept under its backup tag (an import inside the target,
    engine.py `backup_parameters`), watched to its end; the row then lists them (`backup_tags`). None: the
    main import may start. A backup that cannot be made is a TRANSIENT failure (retried as usual): the tag is
    never moved without the backup that was asked for.

    The name is rendered at the run's first attempt (`first_attempt_at`), so a redelivery after the backup
    but before the main import renders the same name and imports the same digest again under it (Force: the
    same manifest again, harmless), never a second, different backup."""
    template = worker.settings.backup_tag_template
    if template is None or request.mode not in MOVES_TAGS or not request.target_tags:
        return None
    moving = _moving_tags(worker, request, read)
    if isinstance(moving, Failure):
        return moving
    made: list[str] = []
    names: dict[str, str] = {}
    wanted = {str(t) for t in request.target_tags}
    for target_tag, old in moving:
        backup = f"{target_tag.repository}:{template.render(target_tag.tag, old, first_attempt_at)}"
        if backup in wanted or names.get(backup, old) != old:
            return Failure(Kind.PERMANENT, "BackupNameCollision",
                           f"{target_tag} was left at {old}: BACKUP_TAG_TEMPLATE names its backup {backup}, which "
                           "this request also moves or which another of its tags needs for another image; put "
                           "{tag} in the template")
        names[backup] = old
        outcome = _make_backup(worker, request, target_tag, old, backup)
        if outcome is not None:
            return outcome
        made.append(f"{backup}={old}")
    if made:
        kept = list(dict.fromkeys([*claim.record.backup_tags, *made]))[-MAX_BACKUP_TAGS:]
        claim.write(State.RUNNING, backup_tags=kept)
    return None


def _moving_tags(worker: Worker, request: ImportRequest,
                 read: DigestsRead | None) -> list[tuple[TargetTag, str]] | Failure:
    """The target tags the import would move, each with the digest it holds now: those that exist with
    another digest than the source's. What IfChanged already read is used; the rest is read here. A source
    whose digest cannot be read backs up every existing tag (a backup of the same image costs one manifest);
    a target tag that cannot be read fails the attempt (it might be moved without its backup)."""
    registries, identity = worker.registries, worker.identity
    assert registries is not None and identity is not None, "Worker.__post_init__ sets both"
    if read is None or read.source is None:
        read = read_digests(worker, request, every_tag=True)
    source = read.source or request.source.digest
    target_host = request.target.login_server(worker.settings.acr_login_server_suffix)
    moving: list[tuple[TargetTag, str]] = []
    for target_tag in request.target_tags:
        known, current = read.target(str(target_tag))
        if not known:
            try:
                head = registries.head_manifest(target_host, target_tag.repository, target_tag.tag, identity)
            except RegistryError as err:
                return _backup_failure(target_tag, None, "", f"its digest could not be read: {err}")
            current = head.digest if head else None
        if current is not None and current != source:
            moving.append((target_tag, current))
    return moving


def _make_backup(worker: Worker, request: ImportRequest, target_tag: TargetTag, old: str,
                 backup: str) -> Failure | Throttled | None:
    """One backup import, watched to its end (it is manifest-only: within this invocation's wait budget)."""
    from azure.core.exceptions import HttpResponseError

    settings, arm = worker.settings, worker.arm
    repository, _, tag = backup.rpartition(":")
    try:
        if (held := _wait_for_write_budget(worker, request)) is not None:
            return held
        url, _ = arm.start_import(request.target, backup_parameters(request.target, repository, old, tag))
        if url is None:
            return None
        began, checks, failures = time.monotonic(), 0, 0
        with arm.watching(request.target):
            while True:
                status = _look(worker, request, url)
                if status.done:
                    return None
                checks += 1
                if status.failed_with is not None and not status.throttled:
                    failures += 1
                    if failures >= MAX_POLL_FAILURES:
                        return _backup_failure(target_tag, old, backup, f"ARM answered {failures} looks at its "
                                                                        f"operation with {status.failed_with}")
                delay = max(poll_delay(time.monotonic() - began, status.retry_after, settings, checks=checks,
                                       budget=arm.budget(request.target, "reads")), status.retry_after or 0.0)
                if time.monotonic() - began + delay > settings.import_wait_seconds:
                    return _backup_failure(target_tag, old, backup, "it was still running after "
                                                                    f"IMPORT_WAIT_SECONDS={settings.import_wait_seconds:g}")
                time.sleep(delay)
    except ClaimLost:
        raise
    except OperationUrlRejected as err:
        return _backup_failure(target_tag, old, backup, str(err))
    except Exception as exc:
        if isinstance(exc, HttpResponseError) and (throttled := _throttled_by(worker, request, exc)) is not None:
            return throttled
        failure = classify_error(exc, seconds_since_first_attempt=0.0,
                                 authorization_grace_seconds=settings.authorization_grace_seconds,
                                 target=str(request.target))
        if failure is None:
            raise
        return _backup_failure(target_tag, old, backup, str(failure))


def _backup_failure(target_tag: TargetTag, old: str | None, backup: str, why: str) -> Failure:
    held = f" at {old}" if old else ""
    what = f"its backup {backup} could not be made" if backup else "its backup could not be made"
    return Failure(Kind.TRANSIENT, "BackupFailed", f"{target_tag} was left where it was{held} (not moved): "
                                                   f"{what}: {why}")


@dataclass(frozen=True)
class Throttled:
    """ARM throttled a request of this attempt before the import started (the POST, or a registry look-up),
    or the write budget this process last saw holds no token for the POST: the request goes on after `delay`
    through a delayed message, and the attempt is not counted (nothing was tried)."""

    bucket: str  # as ARM's headers name it: "subscription writes", "subscription-global reads"
    delay: float
    code: str


THROTTLED_DEFAULT_SECONDS = 5.0  # a 429 without Retry-After (ARM always sends one; a proxy might not)
SHORT_WRITE_WAIT_SECONDS = 0.5   # a wait for the next write token this short is slept; longer: a delayed message
MAX_WRITE_WAITS = 4


def _wait_for_write_budget(worker: Worker, request: ImportRequest) -> Throttled | None:
    """Before the POST: when the writes ARM last said were left (estimated now, shared by this process's
    threads) hold no token, wait for one instead of spending a 429: a short wait here, a longer one through
    a delayed message (no thread sleeps long). None: go ahead (a token of the estimate is taken)."""
    waited = 0
    while True:
        budget = worker.arm.budget(request.target, "writes", take=True)
        wait = max(budget.token_wait, budget.throttled_wait)
        if wait <= 0:
            return None
        if wait > SHORT_WRITE_WAIT_SECONDS or waited >= MAX_WRITE_WAITS:
            return Throttled(budget.bucket, write_wait_delay(wait, worker.jitter()), "ArmWriteBudgetSpent")
        time.sleep(wait)
        waited += 1


def write_wait_delay(wait: float, jitter: float) -> float:
    """How long a POST held back for the write budget waits on the queue: at least until the token (and
    any Retry-After) and at least a second (the queue's granularity), spread by up to as much again so the
    requests held back together do not come back together."""
    base = max(1.0, wait)
    return base + jitter * base


def _throttled_by(worker: Worker, request: ImportRequest, exc: BaseException) -> Throttled | None:
    """ARM answering 429 to a request of this attempt as Throttled, to wait exactly its Retry-After (never
    sooner), spread by up to a second; None for any other error. (A source registry's own rate limit, Docker
    Hub's "toomanyrequests", reaches the app as the import operation's error, not as a 429 answer: it stays
    an ordinary transient failure, shared/core/failures.py.)"""
    from azure.core.exceptions import HttpResponseError

    if not isinstance(exc, HttpResponseError) or exc.status_code != 429:
        return None
    sent = getattr(getattr(exc, "response", None), "request", None)
    if not str(getattr(sent, "url", "")).lower().startswith(worker.settings.arm_endpoint.lower().rstrip("/")):
        return None  # not an answer of ARM's (the status table's service, say): not ARM's budget
    method = getattr(sent, "method", None) or "POST"
    kind = kind_of(method)
    retry_after = retry_after_of(exc)
    delay = (THROTTLED_DEFAULT_SECONDS if retry_after is None else retry_after) + worker.jitter()
    code = getattr(getattr(exc, "error", None), "code", None) or "TooManyRequests"
    return Throttled(worker.arm.budget(request.target, kind).bucket, delay, code)


FAST_POLL_SECONDS = 60.0
FIRST_LOOKS = (0.1, 0.2, 0.4)
LOOK_SHARE = 0.1
MIN_LATER_LOOK_SECONDS = 0.15
"""Waits after the first, second and third look at a new import, then LOOK_SHARE of the time it has run (at
least MIN_LATER_LOOK_SECONDS, at most IMPORT_POLL_INTERVAL_SECONDS): most copies end within seconds, so the
first looks come sooner; a look is one ARM read (docs/benchmarks.md)."""
LOW_WATER = 0.5          # below this fraction of the read bucket left, looks slow down as it drains
MIN_FRACTION = 0.004     # 1 token of 250: the floor of the fraction the slow-down divides by
MAX_PACED_POLL_SECONDS = 10.0  # the slowest pace the budget asks for: ACR's own Retry-After, the SDK's pace


def poll_delay(running_for: float, retry_after: float | None, settings: Settings, *, checks: int = 0,
               budget: Budget | None = None) -> float:
    """When to look again. ACR answers `Retry-After: 10`, but most imports end within seconds: in the first
    minute we look after 0.1, 0.2 and 0.4 s (FIRST_LOOKS, by `checks`, the looks so far), then after
    LOOK_SHARE of the time the import has run so far (at least MIN_LATER_LOOK_SECONDS, at most
    IMPORT_POLL_INTERVAL_SECONDS), then as Retry-After says; all of it as ARM's read budget allows
    (`paced_delay`). The share keeps the wait for a copy's end in proportion to the copy (on average half
    the last wait: about 5% of its time), at a number of looks that grows with the logarithm of it."""
    interval = settings.poll_interval_seconds
    if running_for < FAST_POLL_SECONDS:
        scheduled = FIRST_LOOKS[checks - 1] if 1 <= checks <= len(FIRST_LOOKS) else \
            max(MIN_LATER_LOOK_SECONDS, LOOK_SHARE * running_for)
        base = max(0.05, min(scheduled, interval, retry_after or interval))
    else:
        base = max(0.05, retry_after or interval)
    return paced_delay(base, budget)


def first_look_delay(budget: Budget | None) -> float:
    """The wait before the look right after the POST: none while half the read bucket or more is left (a quick
    copy is then seen at once, and its row written once more: done). Below that, the first scheduled wait
    stretched as every other (`paced_delay`): when many imports share the reads, most copies take longer than
    an instant, so the look at once would only say "running", and skipping it leaves a read for another. A
    Retry-After the process holds is waited out either way."""
    if budget is None:
        return 0.0
    if budget.fraction is not None and budget.fraction < LOW_WATER:
        return paced_delay(FIRST_LOOKS[0], budget)
    return budget.throttled_wait


def paced_delay(base: float, budget: Budget | None) -> float:
    """`base` stretched to ARM's read budget, which every instance of the app spends (one identity) and
    which ARM's answers report to each: no coordinator needed.

    - This process's own watchers together stay within the refill: each looks at most every
      watchers / refill seconds (25 per second: 12 watchers every 0.5 s are the most that fit).
    - Below LOW_WATER of the bucket left, the delay grows as low_water / fraction: at half the bucket as
      planned, at a tenth 5x, near empty up to MAX_PACED_POLL_SECONDS. With W watchers in all instances
      looking every d(f) seconds, the bucket settles where W / d(f) equals the refill, above empty for
      W up to refill x MAX_PACED_POLL_SECONDS (250 watchers), so they share the refill without 429s.
    - A 429's Retry-After seen by any thread of the process is waited out by all (never sooner).
    No budget seen (ARM sent no headers): `base`."""
    if budget is None:
        return base
    delay = base
    if budget.fraction is not None:
        delay = max(delay, budget.watchers / budget.refill)
        if budget.fraction < LOW_WATER:
            delay *= LOW_WATER / max(budget.fraction, MIN_FRACTION)
        delay = min(delay, max(base, MAX_PACED_POLL_SECONDS))
    return max(delay, budget.throttled_wait)


MAX_POLL_FAILURES = 4
"""Looks in a row that may fail before the request stops watching: azure-core's RetryPolicy, which the SDK's
own poller sends every status GET through, retries a 5xx (and 408/429) at most `retry_status=3` times, honouring
Retry-After, and then `LROBasePolling` fails the poller (`_raise_if_bad_http_status_and_method`: only 200, 201,
202 and 204 are valid), so `az acr import` gives up after 4 failed answers in a row. ARM's async-operation
guidance (azure-resource-manager-rpc, async-api-reference) gives no number and asks clients to honour
Retry-After; it is honoured here too, as the delay before the next look. A throttled look (429) is not
counted: it is ARM's budget, not the operation, and it is waited out for as long as the deadline allows."""


def _look(worker: Worker, request: ImportRequest, url: str) -> OperationStatus:
    """One look at the operation. ARM failing to answer (5xx, network) is not the import failing, but it is
    not "still running" either: the status says it failed (and with what), and the caller ends the watch
    after MAX_POLL_FAILURES in a row. ARM throttling the look (429) comes back `throttled`, never counted."""
    from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

    try:
        return worker.arm.operation_status(request.target, url)
    except (ServiceRequestError, ServiceResponseError) as exc:
        return OperationStatus(False, failed_with=f"no answer ({type(exc).__name__})")
    except HttpResponseError as exc:
        if exc.status_code == 429:
            return OperationStatus(False, retry_after_of(exc), failed_with="HTTP 429", throttled=True)
        if (exc.status_code or 0) >= 500:
            return OperationStatus(False, retry_after_of(exc), failed_with=f"HTTP {exc.status_code}")
        raise


def _operation_name(url: str) -> str:
    """The operation's id as ARM named it (the last path segment), for messages."""
    return url.split("?", 1)[0].rsplit("/", 1)[-1][:128]


def _hand_over(worker: Worker, claim: Claim, request: ImportRequest, handover: HandOver, attempt: int,
               started: float) -> Outcome:
    """A delayed follow-up message carries the request on; the row says which operation to watch, so the
    message is the request itself and nothing more. No thread waits for a long import."""
    pending = f"{handover.pending} manifests pending; " if handover.pending else ""
    reason = f"importing: {pending}checking again in {handover.delay:.1f} s (check {handover.checks})"
    try:
        _pass_on(worker, claim, request, handover.delay, State.RUNNING, reason=reason, checks=handover.checks,
                 attempts=attempt)
    except MessageTooLarge as err:
        failure = Failure(Kind.PERMANENT, "MessageTooLarge", f"the running import could not be handed over: "
                                                             f"{err}; it may still finish: check the target")
        return _finish(worker, claim, request, State.FAILED, str(failure), attempt, started, failure=failure)
    outcome = Outcome(request.id, State.RUNNING, reason, attempt, retry_in_seconds=handover.delay)
    log_outcome(worker, outcome, request, started)
    return outcome


def _schedule_retry(worker: Worker, claim: Claim, request: ImportRequest, failure: Failure, attempt: int,
                    first_attempt_at: datetime, started: float) -> Outcome:
    delay = retry_delay(attempt, worker.settings, failure, worker.jitter())
    reason = redact(worker, request, f"attempt {attempt} failed ({failure}); retrying in {delay:.0f} s")
    try:
        _pass_on(worker, claim, request, delay, State.RETRYING, reason=reason, kind=str(failure.kind),
                 code=failure.code, attempts=attempt, first_attempt_at=first_attempt_at.isoformat())
    except MessageTooLarge as err:
        final = Failure(Kind.PERMANENT, "MessageTooLarge", f"attempt {attempt} failed ({failure}) and its retry "
                                                           f"could not be queued: {err}")
        return _finish(worker, claim, request, State.FAILED, str(final), attempt, started, failure=final)
    outcome = Outcome(request.id, State.RETRYING, reason, attempt, failure, delay)
    log_outcome(worker, outcome, request, started)
    return outcome


def _throttled_retry(worker: Worker, claim: Claim, request: ImportRequest, throttled: Throttled, attempt: int,
                     first_attempt_at: datetime, started: float) -> Outcome:
    """ARM's budget, not the import, stopped this attempt before it started: the request waits on the queue
    (never sooner than Retry-After: the queue counts whole seconds, so the delay is rounded up) and the attempt
    is given back, so throttling never uses up IMPORT_MAX_ATTEMPTS. It is bounded by time instead: a request
    still throttled IMPORT_DEADLINE_SECONDS after its first attempt ends `failed`."""
    settings = worker.settings
    delay = float(math.ceil(throttled.delay))
    waited = (worker.clock() - first_attempt_at).total_seconds()
    if waited + delay > settings.import_deadline_seconds:
        failure = Failure(Kind.TRANSIENT, throttled.code,
                          f"throttled by ARM ({throttled.bucket} bucket) {waited:.0f} s after the first attempt, "
                          f"past IMPORT_DEADLINE_SECONDS={settings.import_deadline_seconds:.0f}; nothing was "
                          "imported: send the request again when the app's ARM requests have calmed down")
        return _finish(worker, claim, request, State.FAILED, str(failure), attempt - 1, started, failure=failure)
    reason = (f"throttled by ARM ({throttled.bucket} bucket), retrying in {delay:.0f} s "
              "(not counted as an attempt)")
    try:
        _pass_on(worker, claim, request, delay, State.RETRYING, reason=reason, kind=str(Kind.TRANSIENT),
                 code=throttled.code, attempts=attempt - 1, first_attempt_at=first_attempt_at.isoformat())
    except MessageTooLarge as err:
        final = Failure(Kind.PERMANENT, "MessageTooLarge", f"{reason}, but the retry could not be queued: {err}")
        return _finish(worker, claim, request, State.FAILED, str(final), attempt - 1, started, failure=final)
    outcome = Outcome(request.id, State.RETRYING, reason, attempt - 1, retry_in_seconds=delay)
    log_outcome(worker, outcome, request, started)
    return outcome


def _pass_on(worker: Worker, claim: Claim, request: ImportRequest, delay: float, state: State,
             **fields: Any) -> None:
    """Hand the request to a new message: the row first (open: `carrier` ""), then the message, then the row
    names it. A message that comes before the row names it (a short delay) finds the row open and takes it;
    if sending fails, the host redelivers this message, which takes the open row again. Either way one
    message carries the request, and whatever takes it goes on from the row, not from the message."""
    copy = {**request.document, "id": request.id}
    size = message_size(message_text(copy))
    if size > MAX_QUEUE_MESSAGE_BYTES:
        raise MessageTooLarge(size)
    opened = claim.write(state, carrier="", **fields)
    message_id = worker.queues.enqueue(copy, delay_seconds=delay)
    worker.status.pin(opened, message_id)


def _finish(worker: Worker, claim: Claim, request: ImportRequest, state: State, reason: str, attempts: int,
            started: float, *, failure: Failure | None = None, **found: Any) -> Outcome:
    reason = redact(worker, request, reason)
    claim.write(state, reason=reason, attempts=attempts, kind=str(failure.kind) if failure else "",
                code=failure.code if failure else "", **request_fields(request), **found)
    if state is State.FAILED:
        dead_letter(worker, letter(worker, request.id, state, reason, request.document, failure, attempts,
                                   extra_secrets=inline_secrets(request)))
    outcome = Outcome(request.id, state, reason, attempts, failure)
    log_outcome(worker, outcome, request, started)
    return outcome


def _reject_message(worker: Worker, rejected: Rejected, body: bytes | str, started: float, *,
                    recorded: StatusRecord | None = None) -> Outcome:
    """A message that will not run. Its rejection gets a status row only when its id has none and is not one
    of the app's reserved ids: a message can neither overwrite another request's row nor take an id of the
    app's in advance. Otherwise the rejection, naming `id`, goes to the log and the dead-letter queue only."""
    row = recorded or worker.status.get(rejected.id)
    prefix = claims.reserved_prefix(rejected.id)
    if row is None and prefix is None:
        return finish_rejected(worker, rejected, body, started, row="create")
    if not any(p.field == "id" for p in rejected.problems):
        why = (f"names a request that is already recorded (it is {row.state}); this message was recorded in the "
               "dead-letter queue only" if row is not None else
               f"starts with {prefix!r}, which only the app's own requests use; this message was recorded in the "
               "dead-letter queue only")
        rejected = Rejected(rejected.id, (Problem("id", why), *rejected.problems), rejected.document)
    return finish_rejected(worker, rejected, body, started, row="none")
