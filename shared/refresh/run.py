"""The scheduled refresh: which tracked tags changed upstream, and the IfChanged requests that import them.

The timer only reads (HEAD upstream, HEAD target) and enqueues; the queue worker imports. Planning takes a
registry reader, so the dry run, the timer and the benchmark all run the same decisions. An upstream that
answers 429 is left alone for its `Retry-After` (or REFRESH_BACKOFF_SECONDS), in this run and, through
the summary row, in the next ones; every other upstream still refreshes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from shared.app_context import Worker
from shared.azure import deadlines, telemetry
from shared.azure.status import StatusStore, stored_json
from shared.azure.storage import LazyTable
from shared.core.failures import MAX_RETRY_AFTER_SECONDS, configuration_failure
from shared.core.patterns import valid_tags
from shared.core.reference import TargetTag
from shared.core.request import Rejected, validate_document
from shared.core.settings import Settings
from shared.imports.claims import queue_once
from shared.refresh.referrers import ReferrerChecks
from shared.refresh.tracked import TrackedConfigError, TrackedImage, load_config_text, parse_config, select_tags
from shared.registry.client import (
    Auth,
    IdentityAuth,
    ManifestHead,
    RateLimit,
    RateLimited,
    RegistryError,
    deadline_scope,
    source_auth,
)
from shared.registry.referrers import ReferrerReader

# The Azure SDK is imported inside the functions that use it, on purpose: it costs about half a second of
# every cold start (docs/benchmarks.md), and a message that is refused at once never needs it.

if TYPE_CHECKING:
    from azure.data.tables import TableServiceClient

    from shared.azure.queues import ImportQueues

log = logging.getLogger("acr_importer")

MISSING, CHANGED, UNCHANGED, SKIPPED, ERROR = "missing", "changed", "unchanged", "skipped", "error"
REFERRERS = "referrers"  # the digest is unchanged, but the target lacks some of the source's referrers
MAX_SUMMARY_CHARS = 30_000  # one Azure Tables string property holds 32K UTF-16 characters
RUN_WINDOWS = (1, 7, 31, 0)  # days back from now in which `RefreshLog.runs` looks for the newest runs (0: all)
RUN_SCAN_ROWS = 5000  # run keys one window reads at most


class RegistryReader(ReferrerReader, Protocol):
    def head_manifest(self, host: str, repository: str, reference: str, auth: Auth = None) -> ManifestHead | None:
        ...

    def list_tags(self, host: str, repository: str, auth: Auth = None) -> list[str]:
        ...

    def rate_limit(self, host: str) -> RateLimit | None:
        ...


@dataclass(frozen=True)
class TagCheck:
    """One tracked tag compared: what the upstream and the target hold, and the verdict."""

    image: str
    source: str
    target: str
    status: str
    source_digest: str = ""
    target_digest: str = ""
    reason: str = ""


@dataclass(frozen=True)
class PlannedImport:
    request: dict[str, Any]  # an import request (schema v1) that passed parse_request's validation
    check: TagCheck


@dataclass
class RefreshPlan:
    checks: list[TagCheck] = field(default_factory=list)
    imports: list[PlannedImport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # configuration and listing problems
    rate_limits: dict[str, int | None] = field(default_factory=dict)  # upstream -> ratelimit-remaining
    backoff_until: dict[str, float] = field(default_factory=dict)  # upstream -> epoch seconds
    referrer_checks: int = 0  # unchanged digests whose referrers were read (once per digest and target)

    def count(self, status: str) -> int:
        return sum(1 for c in self.checks if c.status == status)


@dataclass(frozen=True)
class RefreshSummary:
    """The one record a refresh leaves: a log line and a table row."""

    started_at: str
    duration_ms: int
    dry_run: bool
    checked: int
    changed: int
    missing: int
    unchanged: int
    skipped: int
    errors: int
    enqueued: int
    rate_limit_remaining: dict[str, int | None]
    backoff_until: dict[str, str]
    problems: list[str]
    referrers: int = 0  # tags whose digest is unchanged but whose referrers the target lacks (enqueued)

    def as_log(self) -> dict[str, Any]:
        fields = {"event": "refresh", **{_camel(k): v for k, v in asdict(self).items()}}
        fields["problems"] = self.problems[:20]
        return fields

    def as_text(self, limit: int = MAX_SUMMARY_CHARS) -> str:
        """The summary as JSON of at most `limit` characters (ASCII): when it is too long, fewer problems
        and shorter ones are kept (and the number left out is said), never a cut through the JSON."""
        fields = self.as_log()
        for keep, width in ((len(self.problems), 1000), (100, 300), (20, 200), (5, 120), (0, 0)):
            shown = [p if len(p) <= width else p[:width] + "…" for p in self.problems[:keep]]
            fields["problems"] = shown
            if len(shown) < len(self.problems):
                fields["problemsOmitted"] = len(self.problems) - len(shown)
            text = json.dumps(fields)
            if len(text) <= limit:
                return text
        fields["rateLimitRemaining"] = {}
        while fields["backoffUntil"] and len(json.dumps(fields)) > limit:
            fields["backoffUntil"] = dict(list(fields["backoffUntil"].items())[: len(fields["backoffUntil"]) // 2])
        return json.dumps(fields)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


class _Backoff:
    """Upstreams resting after a 429, shared by the threads of one run."""

    def __init__(self, until: dict[str, float], clock: Callable[[], float], default_seconds: float) -> None:
        self._until = dict(until)
        self._clock = clock
        self._default = default_seconds
        self._lock = threading.Lock()
        self._silent: dict[str, str] = {}  # hosts that let a read run out of time in this run

    def silent(self, host: str) -> str | None:
        """Why `host` is not read again in this run: it let a read run into its deadline, and every further
        read would wait as long, eating the time budget of the healthy registries."""
        with self._lock:
            return self._silent.get(host)

    def went_silent(self, host: str, err: RegistryError) -> None:
        if err.code == "TIMEOUT":
            with self._lock:
                self._silent.setdefault(host, str(err))

    def resting(self, host: str) -> float | None:
        with self._lock:
            until = self._until.get(host)
        return until if until is not None and until > self._clock() else None

    def rest(self, host: str, retry_after: float | None) -> float:
        seconds = retry_after if retry_after is not None else self._default
        with self._lock:
            self._until[host] = max(self._until.get(host, 0.0), self._clock() + max(1.0, seconds))
            return self._until[host]

    def active(self) -> dict[str, float]:
        now = self._clock()
        with self._lock:
            return {h: u for h, u in self._until.items() if u > now}


def request_id(target: str, target_tag: str, source_digest: str, target_digest: str,
               missing_referrers: tuple[str, ...] = ()) -> str:
    """Stable for one change: a re-run before the worker got to it yields the same id (idempotent). An
    unchanged image whose referrers the target lacks gets an id of its own per set of missing referrers, so
    the earlier (finished) request for the same digests does not hide a signature added since."""
    parts = [target.lower(), target_tag, source_digest, target_digest]
    if missing_referrers:
        parts.append(hashlib.sha256(",".join(sorted(missing_referrers)).encode()).hexdigest()[:16])
    return "refresh-" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def import_document(image: TrackedImage, tag: str, source_digest: str, target_digest: str,
                    missing_referrers: tuple[str, ...] = ()) -> dict[str, Any]:
    target_tag = str(TargetTag(image.target_repository, tag))
    doc: dict[str, Any] = {
        "id": request_id(str(image.target), target_tag, source_digest, target_digest, missing_referrers),
        "source": f"{image.source.registry}/{image.source.repository}:{tag}",
        "target": str(image.target), "targetTags": [target_tag], "mode": "IfChanged"}
    if image.credential:
        doc["credential"] = image.credential
    if image.referrers is not None:
        doc["referrers"] = image.referrers.as_document()
    return doc


def plan_refresh(images: list[TrackedImage], reader: RegistryReader, settings: Settings, identity: IdentityAuth, *,
                 backoff_until: dict[str, float] | None = None, clock: Callable[[], float] = time.time,
                 progress: Callable[[int, int], None] | None = None) -> RefreshPlan:
    """HEAD every tracked tag upstream and in its target (bounded concurrency); plan imports for the
    missing and the changed. `progress(done, total)` is called as each tag's check ends (from the pool's
    threads), for a person watching a long run."""
    plan = RefreshPlan()
    counted = _Progress(progress)
    backoff = _Backoff(backoff_until or {}, clock, settings.refresh_backoff_seconds)
    deadline = time.monotonic() + settings.refresh_time_budget_seconds
    referrers = ReferrerChecks(reader, settings)
    with ThreadPoolExecutor(max_workers=settings.refresh_concurrency, thread_name_prefix="refresh") as pool:
        tag_lists = list(pool.map(lambda i: _tags_of(i, reader, settings, identity, backoff, plan, deadline), images))
        work = [(image, tag) for image, tags in zip(images, tag_lists, strict=True) for tag in tags]
        # Round robin over the images, so one image with thousands of tags cannot use up the time budget
        # before the others are read; the checks are reported in configuration order all the same.
        order = sorted(range(len(work)), key=_round_robin(work))
        counted.total = len(work)
        done = dict(zip(order, pool.map(lambda i: counted.after(
            _check(*work[i], reader, settings, identity, backoff, deadline, referrers)), order), strict=True))
        results = [done[i] for i in range(len(work))]
    for check, planned in results:
        plan.checks.append(check)
        if planned is not None:
            plan.imports.append(planned)
    for host in sorted({i.source.registry for i in images}):
        limit = reader.rate_limit(host)
        if limit is not None:
            plan.rate_limits[host] = limit.remaining
    plan.backoff_until = backoff.active()
    plan.referrer_checks = referrers.checks
    return plan


_T = TypeVar("_T")


class _Progress:
    """Counts finished checks and tells `report` (done, total); a report that raises stops nothing."""

    def __init__(self, report: Callable[[int, int], None] | None) -> None:
        self.report, self.total, self.done = report, 0, 0
        self._lock = threading.Lock()

    def after(self, result: _T) -> _T:
        if self.report is not None:
            with self._lock:
                self.done += 1
                with contextlib.suppress(Exception):
                    self.report(self.done, self.total)
        return result


def _round_robin(work: list[tuple[TrackedImage, str]]) -> Callable[[int], tuple[int, int]]:
    """Sort key: a tag's rank within its image first, then the image's position."""
    rank: dict[int, int] = {}
    keys = []
    for image, _ in work:
        keys.append((rank.get(image.index, 0), image.index))
        rank[image.index] = rank.get(image.index, 0) + 1
    return keys.__getitem__


def _auth(image: TrackedImage, settings: Settings, identity: IdentityAuth) -> Auth:
    credential = settings.credential_set(image.credential) if image.credential else None
    return source_auth(image.source.registry, credential.username if credential else None,
                       credential.password if credential else None, identity, settings.acr_login_server_suffix)


def _tags_of(image: TrackedImage, reader: RegistryReader, settings: Settings, identity: IdentityAuth,
             backoff: _Backoff, plan: RefreshPlan, deadline: float) -> list[str]:
    """The tags to check for one image. A listing that fails is one problem for this image (its explicit
    tags are still checked); it never stops the others. Only valid tag names reach the operator's patterns."""
    host = image.source.registry
    if not image.rule.needs_listing or backoff.resting(host) or time.monotonic() > deadline:
        return select_tags(image.rule, None) if not image.rule.needs_listing else list(image.rule.tags)
    silent = backoff.silent(host)
    if silent:
        plan.problems.append(f"{image.label}: cannot list tags: not read, {host} did not answer in time "
                             "earlier in this run")
        return list(image.rule.tags)
    try:
        with deadline_scope(deadline):
            listed = reader.list_tags(host, image.source.repository, _auth(image, settings, identity))
        valid, dropped = valid_tags(dict.fromkeys(listed))  # a tag listed twice is checked once
        if dropped:
            plan.problems.append(f"{image.label}: {dropped} tag(s) listed by {host} are not valid tag names "
                                 "(the distribution spec's [A-Za-z0-9_][A-Za-z0-9._-]{0,127}); ignored")
        return select_tags(image.rule, valid)
    except RateLimited as err:
        backoff.rest(host, err.retry_after)
    except RegistryError as err:
        backoff.went_silent(host, err)
        plan.problems.append(f"{image.label}: cannot list tags: {err}")
    except Exception as exc:  # a bug must cost this image, not the run (the trace is in the log)
        if (failure := configuration_failure(exc)) is not None:  # no identity, an untrusted CA: say the fix
            plan.problems.append(f"{image.label}: cannot list tags: {failure}")
        else:
            log.exception("refresh: listing the tags of %s failed unexpectedly", image.label)
            plan.problems.append(f"{image.label}: cannot list tags: unexpected {type(exc).__name__}")
    return list(image.rule.tags)


def _check(image: TrackedImage, tag: str, reader: RegistryReader, settings: Settings, identity: IdentityAuth,
           backoff: _Backoff, deadline: float, referrers: ReferrerChecks) -> tuple[TagCheck, PlannedImport | None]:
    host = image.source.registry
    target_host = image.target.login_server(settings.acr_login_server_suffix)
    source = f"{host}/{image.source.repository}:{tag}"
    target = f"{target_host}/{image.target_repository}:{tag}"

    def verdict(status: str, reason: str, source_digest: str = "", target_digest: str = "") -> TagCheck:
        return TagCheck(image.label, source, target, status, source_digest, target_digest, reason)

    if time.monotonic() > deadline:
        return verdict(SKIPPED, f"time budget of {settings.refresh_time_budget_seconds:.0f} s used up; "
                                "checked in the next run"), None
    resting = backoff.resting(host)
    if resting:
        return verdict(SKIPPED, f"{host} is backing off after HTTP 429 until {_iso(resting)}"), None
    for side, silent_host in (("upstream", host), ("target", target_host)):
        if backoff.silent(silent_host):
            return verdict(ERROR, f"{side}: not read, {silent_host} did not answer in time earlier in this run"), None
    try:
        with deadline_scope(deadline):
            return _compare(image, tag, reader, settings, identity, backoff, verdict, target_host, referrers)
    except Exception as exc:  # a bug must cost this tag, not the run (the trace is in the log)
        if (failure := configuration_failure(exc)) is not None:  # no identity, an untrusted CA: say the fix
            return verdict(ERROR, str(failure)), None
        log.exception("refresh: checking %s failed unexpectedly", source)
        return verdict(ERROR, f"unexpected {type(exc).__name__}"), None


def _compare(image: TrackedImage, tag: str, reader: RegistryReader, settings: Settings, identity: IdentityAuth,
             backoff: _Backoff, verdict: Callable[..., TagCheck], target_host: str,
             referrers: ReferrerChecks) -> tuple[TagCheck, PlannedImport | None]:
    host = image.source.registry
    auth = _auth(image, settings, identity)
    try:
        upstream = reader.head_manifest(host, image.source.repository, tag, auth)
    except RateLimited as err:
        until = backoff.rest(host, err.retry_after)
        return verdict(SKIPPED, f"{host} answered 429; backing off until {_iso(until)}"), None
    except RegistryError as err:
        backoff.went_silent(host, err)
        return verdict(ERROR, f"upstream: {err}"), None
    if upstream is None:
        return verdict(ERROR, "tag not found upstream"), None
    try:
        current = reader.head_manifest(target_host, image.target_repository, tag, identity)
    except RegistryError as err:
        backoff.went_silent(target_host, err)
        return verdict(ERROR, f"target: {err}", upstream.digest), None
    missing_referrers: tuple[str, ...] = ()
    if current is not None and current.digest == upstream.digest:
        choice = image.referrers or settings.referrers
        if not choice.enabled:
            return verdict(UNCHANGED, "target has the upstream digest", upstream.digest, current.digest), None
        state = referrers.check(host=host, repository=image.source.repository, auth=auth, digest=upstream.digest,
                                target_host=target_host, target_repository=str(image.target_repository),
                                identity=identity, choice=choice)
        if not state.missing:
            if state.rate_limited:
                until = backoff.rest(host, None)
                return verdict(SKIPPED, f"{host} answered 429 reading the referrers; backing off until "
                                        f"{_iso(until)}", upstream.digest, current.digest), None
            if state.problem:
                return verdict(ERROR, f"referrers: {state.problem}", upstream.digest, current.digest), None
            held = f" and its {state.found} referrer(s)" if state.found else " (no referrers upstream)"
            return verdict(UNCHANGED, f"target has the upstream digest{held}", upstream.digest, current.digest), None
        missing_referrers = state.missing
        status, reason = REFERRERS, (f"digest unchanged; the target lacks {len(state.missing)} of its "
                                     f"{state.found} referrer(s): {', '.join(d[:19] + '…' for d in state.missing[:3])}")
    else:
        status = MISSING if current is None else CHANGED
        reason = ("not in the target" if current is None
                  else f"upstream moved from {current.digest} to {upstream.digest}")
    check = verdict(status, reason, upstream.digest, current.digest if current else "")
    document = import_document(image, tag, upstream.digest, check.target_digest, missing_referrers)
    checked = validate_document(document, settings)
    if isinstance(checked, Rejected):
        return verdict(ERROR, f"request rejected: {checked.reason}", upstream.digest, check.target_digest), None
    return check, PlannedImport(document, check)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the timer and the dry run ----------------------------------------------------------------------------
class RefreshLog:
    """Summary rows in the status table (partition `refresh`); the `latest` row carries the backoff."""

    PARTITION = "refresh"

    def __init__(self, table_name: str, service: TableServiceClient | None = None) -> None:
        self._client = LazyTable(table_name, service)

    def latest(self) -> dict[str, Any] | None:
        """The last summary, or None; a row that does not parse is logged and ignored (the next run writes
        a good one), never fatal."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            entity = self._client().get_entity(self.PARTITION, "latest")
        except ResourceNotFoundError:
            return None
        found = stored_json(entity.get("Summary"))
        if not isinstance(found, dict):
            log.warning("refresh: the latest summary row (%s/latest) does not parse; ignored", self.PARTITION)
            return None
        return found

    def backoff_until(self, now: float | None = None) -> dict[str, float]:
        """Hosts still resting after a 429, from the latest summary; entries that are not host -> ISO time
        are logged and ignored, and no rest lasts longer than the longest Retry-After the app honours."""
        latest = self.latest() or {}
        raw = latest.get("backoffUntil") or {}
        if not isinstance(raw, dict):
            log.warning("refresh: backoffUntil of the latest summary is not an object; ignored")
            return {}
        now = time.time() if now is None else now
        found = {}
        for host, until in raw.items():
            try:
                moment = datetime.fromisoformat(until.replace("Z", "+00:00"))
                stamp = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
            except (AttributeError, TypeError, ValueError, OverflowError):
                log.warning("refresh: backoffUntil[%r] of the latest summary is not a time; ignored", host[:100])
                continue
            if math.isfinite(stamp):
                found[host] = min(stamp, now + MAX_RETRY_AFTER_SECONDS)
        return found

    def runs(self, limit: int, now: datetime | None = None) -> tuple[list[dict[str, Any]], list[str]]:
        """The `limit` newest run summaries (`run-<time>` rows), newest first, and the keys of those among them
        whose summary does not parse as an object (left out, so the reader can say so). The partition is read
        oldest first, so the newest are looked for in growing windows back from now (keys only, at most
        RUN_SCAN_ROWS a window), then read in one range from the oldest of them."""
        now = now or datetime.now(UTC)
        table = self._client()
        keys: list[str] = []
        for days in RUN_WINDOWS:
            since = f"run-{(now - timedelta(days=days)).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}" if days else "run-"
            found = table.query_entities("PartitionKey eq @partition and RowKey ge @since and RowKey lt 'run.'",
                                         parameters={"partition": self.PARTITION, "since": since},
                                         select=["RowKey"], results_per_page=1000)
            keys = [e["RowKey"] for _, e in zip(range(RUN_SCAN_ROWS), found, strict=False)]
            if len(keys) >= limit:
                break
        if not keys:
            return [], []
        start = sorted(keys)[-limit:][0]
        rows = table.query_entities("PartitionKey eq @partition and RowKey ge @start and RowKey lt 'run.'",
                                    parameters={"partition": self.PARTITION, "start": start},
                                    select=["RowKey", "Summary"])
        runs: list[tuple[str, dict[str, Any] | None]] = []
        for entity in rows:
            found_run = stored_json(entity.get("Summary"))
            runs.append((str(entity.get("RowKey")), found_run if isinstance(found_run, dict) else None))
        newest = runs[::-1][:limit]
        return [run for _, run in newest if run is not None], [key for key, run in newest if run is None]

    def record(self, summary: RefreshSummary) -> None:
        from azure.data.tables import UpdateMode

        text = summary.as_text()
        for row in (f"run-{summary.started_at}", "latest"):
            self._client().upsert_entity({"PartitionKey": self.PARTITION, "RowKey": row, "Summary": text,
                                          "Checked": summary.checked, "Changed": summary.changed,
                                          "Missing": summary.missing, "Referrers": summary.referrers,
                                          "Errors": summary.errors,
                                          "Enqueued": summary.enqueued}, mode=UpdateMode.REPLACE)


@dataclass(frozen=True)
class RefreshResult:
    plan: RefreshPlan
    summary: RefreshSummary


def run_refresh(settings: Settings, reader: RegistryReader, identity: IdentityAuth, *,
                queues: ImportQueues | None = None, refresh_log: RefreshLog | None = None, dry_run: bool = False,
                config_text: str | None = None,
                clock: Callable[[], float] = time.time, status: StatusStore | None = None,
                progress: Callable[[int, int], None] | None = None) -> RefreshResult:
    """Load the tracked images, plan, enqueue (unless a dry run) and record one summary.

    Each import's `refresh-…` id is reserved for the app: its status row is opened before the message is
    sent (`claims.queue_once`), and the worker runs such an id only on a row the app opened. A re-run before
    the worker got to a request finds the row and sends nothing."""
    started, began = datetime.now(UTC), time.monotonic()
    plan = RefreshPlan()
    try:
        config = parse_config(config_text if config_text is not None else load_config_text(settings),
                              settings)
        plan.problems.extend(str(p) for p in config.problems)
        backoff = refresh_log.backoff_until() if refresh_log else {}
        found = plan_refresh(list(config.images), reader, settings, identity, backoff_until=backoff, clock=clock,
                             progress=progress)
        found.problems[:0] = plan.problems
        plan = found
    except TrackedConfigError as err:
        plan.problems.append(str(err))
    enqueued = 0
    if not dry_run and queues is not None:
        status = status or StatusStore(settings.status_table)
        stop_at = began + deadlines.refresh_enqueue_stop_seconds()
        for planned in plan.imports:
            if time.monotonic() > stop_at:  # past here a send could outlive functionTimeout (shared/azure/deadlines.py)
                plan.problems.append(f"{planned.check.target}: not enqueued: the run is near its function timeout; "
                                     "the next run finds it again")
                continue
            try:
                request = validate_document(planned.request, settings, fallback_id=planned.request["id"])
                if isinstance(request, Rejected):
                    plan.problems.append(f"{planned.check.target}: not enqueued: {request.reason}")
                    continue
                queued = queue_once(status, request, queues.enqueue, "queued by the scheduled refresh",
                                    restart_failed=True)
                enqueued += queued.sent
            except Exception as exc:  # one failed send must not lose the others; reported in the summary
                plan.problems.append(f"{planned.check.target}: could not enqueue: {type(exc).__name__}")
    summary = RefreshSummary(
        started_at=started.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), duration_ms=int((time.monotonic() - began) * 1000),
        dry_run=dry_run, checked=len(plan.checks) - plan.count(SKIPPED), changed=plan.count(CHANGED),
        missing=plan.count(MISSING), unchanged=plan.count(UNCHANGED), skipped=plan.count(SKIPPED),
        errors=plan.count(ERROR) + len(plan.problems), enqueued=enqueued, rate_limit_remaining=plan.rate_limits,
        backoff_until={h: _iso(u) for h, u in plan.backoff_until.items()},
        problems=plan.problems + [f"{c.image}: {c.source}: {c.reason}" for c in plan.checks if c.status == ERROR],
        referrers=plan.count(REFERRERS))
    level = logging.WARNING if summary.errors or summary.skipped else logging.INFO
    log.log(level, json.dumps(summary.as_log(), ensure_ascii=False))
    if refresh_log is not None and not dry_run:
        refresh_log.record(summary)
        telemetry.record_refresh(summary.checked, summary.changed + summary.missing + summary.referrers,
                                 summary.rate_limit_remaining, summary.errors)
    return RefreshResult(plan, summary)


_logs: dict[str, RefreshLog] = {}


def refresh_log(settings: Settings) -> RefreshLog:
    """The refresh's summary rows in the app's status table (one per table and process)."""
    return _logs.setdefault(settings.status_table, RefreshLog(settings.status_table))


def refresh_for(worker: Worker) -> RefreshResult:
    """The timer's refresh with the app's long-lived objects (registry client, identity, queues)."""
    settings = worker.settings
    registries, identity = worker.reader()
    return run_refresh(settings, registries, identity, queues=worker.queues, refresh_log=refresh_log(settings),
                       status=worker.status)
