"""Timer triggers as the host runs them: one schedule per function, never overlapping itself, failures not
retried, one instance at a time, and missed occurrences made up once (`useMonitor`).

What the runner follows (azure-webjobs-sdk-extensions, src/WebJobs.Extensions/Extensions/Timers):
- `TimerListener` is `[Singleton(Mode = SingletonMode.Listener)]`: only the instance holding the listener lock
  runs the schedule. The lock is a blob lease in the storage account's `azure-webjobs-hosts` container,
  blob `locks/<host id>/Host.Functions.<function>.Listener` (azure-webjobs-sdk
  `StorageBaseDistributedLockManager`: create the blob on 404, acquire, 409 = held by another). It is taken
  for `singleton.listenerLockPeriod` (default 60 s), renewed halfway, released when the listener stops; an
  instance without it retries every `singleton.listenerLockRecoveryPollingInterval` (default 60 s).
- `useMonitor` (`StorageScheduleMonitorV2`, `ScheduleMonitor.CheckPastDueAsync`): the status blob
  `timers/<host id>/Host.Functions.<function>/status` holds `{"Last", "Next", "LastUpdated"}`. At listener
  start with no status, the next occurrence is recorded; with one, `Next` is recomputed from `Last` (or
  `LastUpdated`) in case the schedule changed; if now is after `Next`, one invocation runs at once with
  `IsPastDue` true (missed occurrences are not run one by one). After every scheduled invocation the status is
  written (best effort). `TimerSchedule.Create` turns the monitor off for schedules recurring more often than
  once a minute.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError

from dev.runner.config import ConfigError, FunctionSpec, timespan
from dev.runner.inputs import timer_input
from dev.runner.invoker import Invocation, Invoker
from dev.runner.schedule import Schedule, parse_schedule
from dev.runner.storage import StorageConnection

log = logging.getLogger("dev.runner")
HOSTS_CONTAINER = "azure-webjobs-hosts"
DEFAULT_TIME = datetime(1, 1, 1, tzinfo=UTC)  # ScheduleMonitor.DefaultDateTime


@dataclass(frozen=True)
class SingletonOptions:
    """host.json `singleton`, with the host's defaults."""

    listener_lock_period: timedelta = timedelta(seconds=60)
    listener_lock_recovery_polling_interval: timedelta = timedelta(seconds=60)


def load_singleton_options(root: Path) -> SingletonOptions:
    path = Path(root) / "host.json"
    raw = (json.loads(path.read_text()).get("singleton") or {}) if path.exists() else {}
    period = timespan(raw.get("listenerLockPeriod", "00:01:00"))
    recovery = timespan(raw.get("listenerLockRecoveryPollingInterval", "00:01:00"))
    if not timedelta(seconds=15) <= period <= timedelta(seconds=60):  # a blob lease lasts 15 to 60 seconds
        raise ConfigError("host.json singleton.listenerLockPeriod must be between 00:00:15 and 00:01:00")
    if recovery < timedelta(seconds=1):
        raise ConfigError("host.json singleton.listenerLockRecoveryPollingInterval must be at least 1 second")
    return SingletonOptions(period, recovery)


def host_id(settings: dict[str, str], root: Path) -> str:
    """The host id naming the lock and status blobs: `AzureFunctionsWebHost__hostid`, else the site name (as
    in Azure), else machine name plus a hash of the app folder (as Core Tools does locally), lowercased and cut
    to 32 characters."""
    explicit = settings.get("AzureFunctionsWebHost__hostid") or settings.get("WEBSITE_SITE_NAME")
    if not explicit:
        digest = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:8]
        explicit = f"{socket.gethostname()}-{digest}"
    cleaned = "".join(c if c.isalnum() or c == "-" else "-" for c in explicit.lower())
    return cleaned[:32].rstrip("-") or "host"


@dataclass(frozen=True)
class ScheduleStatus:
    last: datetime
    next: datetime
    last_updated: datetime

    def document(self) -> dict[str, str]:
        return {"Last": self.last.isoformat(), "Next": self.next.isoformat(),
                "LastUpdated": self.last_updated.isoformat()}

    @classmethod
    def parse(cls, text: str) -> ScheduleStatus:
        raw = json.loads(text)
        return cls(*(_moment(raw[k]) for k in ("Last", "Next", "LastUpdated")))


def _moment(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class HostBlobs:
    """The host's own blobs in `azure-webjobs-hosts` (the AzureWebJobsStorage account)."""

    def __init__(self, connection: StorageConnection, host: str) -> None:
        self.host_id = host
        self._container = connection.blob_service().get_container_client(HOSTS_CONTAINER)

    def blob(self, name: str) -> Any:
        return self._container.get_blob_client(name)

    def ensure(self, name: str) -> Any:
        """The blob, created empty if missing (and its container too), as the lock manager does on a 404."""
        blob = self.blob(name)
        try:
            blob.upload_blob(b"", overwrite=False)
        except ResourceExistsError:  # exists, or leased by someone else
            pass
        except ResourceNotFoundError:
            with contextlib.suppress(ResourceExistsError):
                self._container.create_container()
            with contextlib.suppress(ResourceExistsError):
                blob.upload_blob(b"", overwrite=False)
        return blob


class ScheduleMonitor:
    def __init__(self, blobs: HostBlobs, function: str) -> None:
        self._blob = blobs.blob(f"timers/{blobs.host_id}/Host.Functions.{function}/status")
        self._blobs = blobs

    def status(self) -> ScheduleStatus | None:
        try:
            return ScheduleStatus.parse(self._blob.download_blob().readall().decode("utf-8"))
        except ResourceNotFoundError:
            return None
        except (ValueError, KeyError):  # unreadable: the host's deserializer would fail too; start afresh
            log.warning("Timer status blob %s is unreadable; starting afresh", self._blob.blob_name)
            return None

    def update(self, status: ScheduleStatus) -> None:
        """Best effort, as `UpdateStatusAsync`: a failure is logged, never raised."""
        body = json.dumps(status.document()).encode()
        try:
            try:
                self._blob.upload_blob(body, overwrite=True)
            except ResourceNotFoundError:
                self._blobs.ensure(self._blob.blob_name)
                self._blob.upload_blob(body, overwrite=True)
        except (AzureError, OSError) as exc:
            log.error("Timer status %s could not be written: %s", self._blob.blob_name, type(exc).__name__)

    def check_past_due(self, now: datetime, schedule: Schedule, last: ScheduleStatus | None) -> tuple[
            timedelta, ScheduleStatus]:
        """`CheckPastDueAsync`: how late the recorded next occurrence is (zero if not), and the status to go on
        from, written back when it is new or the schedule changed."""
        if last is None:
            status = ScheduleStatus(DEFAULT_TIME, schedule.next_after(now), now)
            self.update(status)
        else:
            expected = schedule.next_after(last.last if last.last != DEFAULT_TIME else last.last_updated)
            status = last
            if last.next != expected:  # the schedule changed since the status was written
                status = ScheduleStatus(last.last, expected, now)
                self.update(status)
        return (now - status.next if now > status.next else timedelta(0)), status


class ListenerLock:
    """The singleton listener lock: a blob lease, renewed halfway through its period."""

    def __init__(self, blobs: HostBlobs, function: str, period: timedelta) -> None:
        self.name = f"locks/{blobs.host_id}/Host.Functions.{function}.Listener"
        self._blobs = blobs
        self._period = period
        self._lease: Any = None

    @property
    def held(self) -> bool:
        return self._lease is not None

    def try_acquire(self) -> bool:
        from azure.storage.blob import BlobLeaseClient

        try:
            blob = self._blobs.ensure(self.name)
            lease = BlobLeaseClient(blob)
            lease.acquire(lease_duration=int(self._period.total_seconds()))
        except ResourceExistsError:  # 409: another instance holds it
            return False
        except (AzureError, OSError) as exc:
            log.warning("Listener lock %s: acquire failed (%s)", self.name, type(exc).__name__)
            return False
        self._lease = lease
        return True

    def renew(self) -> bool:
        try:
            self._lease.renew()
            return True
        except (AzureError, OSError) as exc:
            log.error("Singleton lock renewal failed for blob '%s' (%s)", self.name, type(exc).__name__)
            self._lease = None
            return False

    def release(self) -> None:
        if self._lease is not None:
            with contextlib.suppress(AzureError, OSError):
                self._lease.release()
            self._lease = None


class TimerListener:
    def __init__(self, spec: FunctionSpec, invoker: Invoker, blobs: HostBlobs | None = None,
                 singleton: SingletonOptions | None = None) -> None:
        self.spec = spec
        self.schedule = parse_schedule(str(spec.trigger.settings["schedule"]))
        self.run_on_startup = bool(spec.trigger.settings.get("runOnStartup", False))
        self.use_monitor = bool(spec.trigger.settings.get("useMonitor", True)) and not _more_than_once_a_minute(
            self.schedule)
        self._singleton = singleton or SingletonOptions()
        self._lock = ListenerLock(blobs, spec.name, self._singleton.listener_lock_period) if blobs else None
        self._monitor = ScheduleMonitor(blobs, spec.name) if blobs and self.use_monitor else None
        self._status: ScheduleStatus | None = None
        self._invoker = invoker
        self._running = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"timer-{spec.name}", daemon=True)
        self.scheduled_runs = 0  # invocations this listener started (not `fire()` from outside)
        self.lock_attempts = 0
        self.ready = threading.Event()  # set once the listener has started: startup checks and runs are done

    @property
    def listening(self) -> bool:
        """True while this instance holds the listener lock (or runs without one)."""
        return self._lock is None or self._lock.held

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()
        if self._lock is not None:
            self._lock.release()

    def fire(self, *, past_due: bool = False) -> Invocation:
        """Run now, after any run in progress ends (a timer never overlaps itself); the admin endpoint's way."""
        with self._running:
            return self._invoke(past_due=past_due, details=None)

    def _invoke(self, *, past_due: bool, details: str | None) -> Invocation:
        now = datetime.now(UTC)
        status = self._status.document() if self._monitor and self._status else None
        result = self._invoker.invoke(
            self.spec, "timer", None, convert=lambda: timer_input(past_due, status),
            reason=f"Timer fired at {now:%Y-%m-%dT%H:%M:%S.%f}+00:00", details=details)
        return result.invocation

    def _run(self) -> None:
        while not self._stopping.is_set():
            self.lock_attempts += 1
            if self._lock is not None and not self._lock.try_acquire():
                self._stopping.wait(self._singleton.listener_lock_recovery_polling_interval.total_seconds())
                continue
            try:
                self._listen()
            except (AzureError, OSError) as exc:  # storage unreachable at start: the host retries the listener
                log.warning("Timer %s: listener start failed (%s); retrying", self.spec.name, type(exc).__name__)
                self._stopping.wait(self._singleton.listener_lock_recovery_polling_interval.total_seconds())
            finally:
                if self._lock is not None:
                    self._lock.release()

    def _listen(self) -> None:
        """The inner listener, while the lock holds: past-due or startup run first, then the schedule."""
        now = datetime.now(UTC)
        late = timedelta(0)
        if self._monitor is not None:
            late, self._status = self._monitor.check_past_due(now, self.schedule, self._monitor.status())
        due = self._status.next if self._status else self.schedule.next_after(now)
        log.info("Timer %s: next occurrence %s%s", self.spec.name, due.isoformat(),
                 f" (past due by {late})" if late else "")
        if late:
            self._scheduled(due, past_due=True, details=f"UnscheduledInvocationReason: IsPastDue, "
                                                       f"OriginalSchedule: {due.isoformat()}")
            due = self._status.next if self._status else self.schedule.next_after(datetime.now(UTC))
        elif self.run_on_startup:
            self._scheduled(now, past_due=False, details="UnscheduledInvocationReason: RunOnStartup")
        self.ready.set()
        renew_every = self._singleton.listener_lock_period.total_seconds() / 2
        next_renewal = datetime.now(UTC) + timedelta(seconds=renew_every)
        while not self._stopping.is_set():
            wake = min(due, next_renewal) if self._lock is not None else due
            if self._stopping.wait(max(0.0, (wake - datetime.now(UTC)).total_seconds())):
                return
            if self._lock is not None and datetime.now(UTC) >= next_renewal:
                if not self._lock.renew():
                    return  # lost: stop listening, try to take the lock again
                next_renewal = datetime.now(UTC) + timedelta(seconds=renew_every)
            if datetime.now(UTC) >= due:
                self._scheduled(due, past_due=False, details=None)
                due = self._status.next if self._status else self.schedule.next_after(datetime.now(UTC))

    def _scheduled(self, due: datetime, *, past_due: bool, details: str | None) -> None:
        """One listener invocation, then the new status (`InvokeJobFunction`)."""
        with self._running:
            self.scheduled_runs += 1
            self._invoke(past_due=past_due, details=details)
            invoked = datetime.now(UTC)
            # the host moves an early firing (clock skew) to the occurrence, so Next never repeats
            if not past_due and due > invoked:
                invoked = due
            self._status = ScheduleStatus(invoked, self.schedule.next_after(invoked), invoked)
            if self._monitor is not None:
                self._monitor.update(self._status)


def _more_than_once_a_minute(schedule: Schedule) -> bool:
    """`TimerSchedule.Create` / `ShouldDisableScheduleMonitor`: the monitor is off for frequent schedules."""
    first = schedule.next_after(datetime.now(UTC))
    return schedule.next_after(first) - first < timedelta(minutes=1)


def timer_storage(settings: dict[str, str], root: Path, connection: StorageConnection | None) -> HostBlobs | None:
    """The host's blobs when AzureWebJobsStorage names a blob service; timers need it (lock and monitor)."""
    if connection is None:
        return None
    try:
        return HostBlobs(connection, host_id(settings or dict(os.environ), root))
    except ConfigError as exc:
        raise ConfigError(f"timer triggers keep their lock and schedule status in AzureWebJobsStorage's blob "
                          f"service: {exc}") from None
