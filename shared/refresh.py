"""The scheduled refresh: which tracked tags changed upstream, and the IfChanged requests that import them.

The timer only reads (HEAD upstream, HEAD target) and enqueues; the queue worker imports. Planning takes a
registry reader, so the dry run, the timer and the benchmark all run the same decisions. An upstream that
answers 429 is left alone for its `Retry-After` (or REFRESH_BACKOFF_SECONDS), in this run and, through
the summary row, in the next ones; every other upstream still refreshes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from shared import telemetry
from shared.registry_client import (
    Auth,
    IdentityAuth,
    ManifestHead,
    RateLimit,
    RateLimited,
    RegistryError,
    source_auth,
)
from shared.request import Rejected, validate_document
from shared.settings import Settings
from shared.tracked import TrackedConfigError, TrackedImage, load_config_text, parse_config, select_tags

log = logging.getLogger("acr_importer")

MISSING, CHANGED, UNCHANGED, SKIPPED, ERROR = "missing", "changed", "unchanged", "skipped", "error"


class RegistryReader(Protocol):
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

    def as_log(self) -> dict[str, Any]:
        fields = {"event": "refresh", **{_camel(k): v for k, v in asdict(self).items()}}
        fields["problems"] = self.problems[:20]
        return fields


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


def request_id(target: str, target_tag: str, source_digest: str, target_digest: str) -> str:
    """Stable for one change: a re-run before the worker got to it yields the same id (idempotent)."""
    key = "|".join((target.lower(), target_tag, source_digest, target_digest))
    return "refresh-" + hashlib.sha256(key.encode()).hexdigest()[:24]


def import_document(image: TrackedImage, tag: str, source_digest: str, target_digest: str) -> dict[str, Any]:
    target_tag = f"{image.target_repository}:{tag}"
    doc: dict[str, Any] = {
        "id": request_id(str(image.target), target_tag, source_digest, target_digest),
        "source": f"{image.source.registry}/{image.source.repository}:{tag}",
        "target": str(image.target), "targetTags": [target_tag], "mode": "IfChanged"}
    if image.credential:
        doc["credential"] = image.credential
    return doc


def plan_refresh(images: list[TrackedImage], reader: RegistryReader, settings: Settings, identity: IdentityAuth, *,
                 backoff_until: dict[str, float] | None = None, clock: Callable[[], float] = time.time) -> RefreshPlan:
    """HEAD every tracked tag upstream and in its target (bounded concurrency); plan imports for the
    missing and the changed."""
    plan = RefreshPlan()
    backoff = _Backoff(backoff_until or {}, clock, settings.refresh_backoff_seconds)
    deadline = time.monotonic() + settings.refresh_time_budget_seconds
    with ThreadPoolExecutor(max_workers=settings.refresh_concurrency, thread_name_prefix="refresh") as pool:
        tag_lists = list(pool.map(lambda i: _tags_of(i, reader, settings, identity, backoff, plan), images))
        work = [(image, tag) for image, tags in zip(images, tag_lists, strict=True) for tag in tags]
        results = list(pool.map(lambda it: _check(*it, reader, settings, identity, backoff, deadline), work))
    for check, planned in results:
        plan.checks.append(check)
        if planned is not None:
            plan.imports.append(planned)
    for host in sorted({i.source.registry for i in images}):
        limit = reader.rate_limit(host)
        if limit is not None:
            plan.rate_limits[host] = limit.remaining
    plan.backoff_until = backoff.active()
    return plan


def _auth(image: TrackedImage, settings: Settings, identity: IdentityAuth) -> Auth:
    credential = settings.credential_set(image.credential) if image.credential else None
    return source_auth(image.source.registry, credential.username if credential else None,
                       credential.password if credential else None, identity, settings.acr_login_server_suffix)


def _tags_of(image: TrackedImage, reader: RegistryReader, settings: Settings, identity: IdentityAuth,
             backoff: _Backoff, plan: RefreshPlan) -> list[str]:
    host = image.source.registry
    if not image.rule.needs_listing or backoff.resting(host):
        return select_tags(image.rule, None) if not image.rule.needs_listing else list(image.rule.tags)
    try:
        listed = reader.list_tags(host, image.source.repository, _auth(image, settings, identity))
    except RateLimited as err:
        backoff.rest(host, err.retry_after)
        return list(image.rule.tags)
    except RegistryError as err:
        plan.problems.append(f"{image.label}: cannot list tags: {err}")
        return list(image.rule.tags)
    return select_tags(image.rule, listed)


def _check(image: TrackedImage, tag: str, reader: RegistryReader, settings: Settings, identity: IdentityAuth,
           backoff: _Backoff, deadline: float) -> tuple[TagCheck, PlannedImport | None]:
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
    try:
        upstream = reader.head_manifest(host, image.source.repository, tag, _auth(image, settings, identity))
    except RateLimited as err:
        until = backoff.rest(host, err.retry_after)
        return verdict(SKIPPED, f"{host} answered 429; backing off until {_iso(until)}"), None
    except RegistryError as err:
        return verdict(ERROR, f"upstream: {err}"), None
    if upstream is None:
        return verdict(ERROR, "tag not found upstream"), None
    try:
        current = reader.head_manifest(target_host, image.target_repository, tag, identity)
    except RegistryError as err:
        return verdict(ERROR, f"target: {err}", upstream.digest), None
    if current is not None and current.digest == upstream.digest:
        return verdict(UNCHANGED, "target has the upstream digest", upstream.digest, current.digest), None
    status = MISSING if current is None else CHANGED
    reason = "not in the target" if current is None else f"upstream moved from {current.digest} to {upstream.digest}"
    check = verdict(status, reason, upstream.digest, current.digest if current else "")
    document = import_document(image, tag, upstream.digest, check.target_digest)
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

    def __init__(self, table_name: str, service=None) -> None:
        from shared.storage import LazyTable

        self._client = LazyTable(table_name, service)

    def latest(self) -> dict[str, Any] | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            entity = self._client().get_entity(self.PARTITION, "latest")
        except ResourceNotFoundError:
            return None
        return json.loads(entity.get("Summary") or "{}")

    def backoff_until(self) -> dict[str, float]:
        latest = self.latest() or {}
        return {host: datetime.fromisoformat(until.replace("Z", "+00:00")).timestamp()
                for host, until in (latest.get("backoffUntil") or {}).items()}

    def record(self, summary: RefreshSummary) -> None:
        from azure.data.tables import UpdateMode

        text = json.dumps(summary.as_log())[:30000]
        for row in (f"run-{summary.started_at}", "latest"):
            self._client().upsert_entity({"PartitionKey": self.PARTITION, "RowKey": row, "Summary": text,
                                          "Checked": summary.checked, "Changed": summary.changed,
                                          "Missing": summary.missing, "Errors": summary.errors,
                                          "Enqueued": summary.enqueued}, mode=UpdateMode.REPLACE)


@dataclass(frozen=True)
class RefreshResult:
    plan: RefreshPlan
    summary: RefreshSummary


def run_refresh(settings: Settings, reader: RegistryReader, identity: IdentityAuth, *, queues=None,
                refresh_log: RefreshLog | None = None, dry_run: bool = False, config_text: str | None = None,
                clock: Callable[[], float] = time.time, status=None) -> RefreshResult:
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
        found = plan_refresh(list(config.images), reader, settings, identity, backoff_until=backoff, clock=clock)
        found.problems[:0] = plan.problems
        plan = found
    except TrackedConfigError as err:
        plan.problems.append(str(err))
    enqueued = 0
    if not dry_run and queues is not None:
        from shared.claims import queue_once
        from shared.status import StatusStore

        status = status or StatusStore(settings.status_table)
        for planned in plan.imports:
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
        backoff_until={h: _iso(u) for h, u in plan.backoff_until.items()}, problems=plan.problems)
    level = logging.WARNING if summary.errors or summary.skipped else logging.INFO
    log.log(level, json.dumps(summary.as_log(), ensure_ascii=False))
    if refresh_log is not None and not dry_run:
        refresh_log.record(summary)
        telemetry.record_refresh(summary.checked, summary.changed + summary.missing, summary.rate_limit_remaining)
    return RefreshResult(plan, summary)


_logs: dict[str, RefreshLog] = {}


def refresh_for(worker) -> RefreshResult:
    """The timer's refresh with the app's long-lived objects (registry client, identity, queues)."""
    settings = worker.settings
    refresh_log = _logs.setdefault(settings.status_table, RefreshLog(settings.status_table))
    return run_refresh(settings, worker.registries, worker.identity, queues=worker.queues, refresh_log=refresh_log,
                       status=worker.status)
