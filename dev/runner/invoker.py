"""Calling a user function the way the Python worker does, and recording each invocation as the host logs it.

Sync functions run in the worker's thread pool; `async def` functions run on one event loop of their own.
Output bindings are `func.Out` objects the function fills; the caller writes them only after success.

`functionTimeout`: when an invocation outlives it, the host fails that invocation and restarts the language
worker process (azure-functions-host `WebScriptHostExceptionHandler.OnTimeoutExceptionAsync`: "Restarting
language worker processes due to function timing out."), which ends every other invocation in flight on that
worker too: they fail, so their queue messages are released and come back with a higher dequeue count. The
runner mirrors this in process: every invocation in flight is abandoned (recorded as failed, results and
outputs discarded), and a fresh thread pool and event loop take new work. Async invocations are cancelled;
a sync thread cannot be killed in Python and runs on detached (docs/runner.md says what that means).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func

from dev.runner.config import FunctionSpec

log = logging.getLogger("dev.runner")


@dataclass(frozen=True)
class Invocation:
    function: str
    trigger: str         # queue | timer | eventgrid | http
    id: str              # the invocation id the host logs
    outcome: str         # ok | error
    duration: float      # seconds
    started: datetime
    trigger_id: str | None = None   # queue message id or event id
    error: str | None = None
    timed_out: bool = False         # this invocation outlived functionTimeout
    abandoned: bool = False         # ended by a worker restart another invocation's timeout caused


class OutValue(func.Out):
    """What a function's `func.Out[...]` parameter receives."""

    def __init__(self) -> None:
        self._value: Any = None

    def set(self, val: Any) -> None:
        self._value = val

    def get(self) -> Any:
        return self._value


@dataclass
class Result:
    invocation: Invocation
    outputs: dict[str, Any]


class _Worker:
    """One language worker process's execution resources: what a restart replaces."""

    def __init__(self, thread_count: int | None, number: int) -> None:
        self.number = number
        self.pool = concurrent.futures.ThreadPoolExecutor(thread_count, thread_name_prefix=f"worker{number}")
        self.loop = asyncio.new_event_loop()
        self.loop_thread = threading.Thread(target=self.loop.run_forever, name=f"worker{number}-loop", daemon=True)
        self.loop_thread.start()

    def submit(self, spec: FunctionSpec, kwargs: dict[str, Any]) -> concurrent.futures.Future:
        if spec.is_async:
            return asyncio.run_coroutine_threadsafe(spec.user_function(**kwargs), self.loop)
        return self.pool.submit(spec.user_function, **kwargs)

    def kill(self) -> None:
        """What the process's end does to it, as far as Python allows: no new work, async tasks cancelled."""
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.loop.call_soon_threadsafe(self.loop.stop)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.loop_thread.join(timeout=5)
        if not self.loop.is_running():
            self.loop.close()


@dataclass(eq=False)
class _Call:
    worker: _Worker
    done: threading.Event = field(default_factory=threading.Event)
    future: concurrent.futures.Future | None = None
    abandoned_by: str | None = None  # the invocation id whose timeout restarted this call's worker


class Invoker:
    def __init__(self, thread_count: int | None, function_timeout: timedelta | None) -> None:
        """`thread_count` None: the worker's default, Python's own `ThreadPoolExecutor()` size."""
        self._thread_count = thread_count
        self._timeout = function_timeout.total_seconds() if function_timeout else None
        self._lock = threading.Lock()
        self._worker = _Worker(thread_count, 1)
        self._dead: list[_Worker] = []
        self._calls: set[_Call] = set()
        self._in_flight = 0
        self._generation = 0
        self.restarts = 0
        self.invocations: list[Invocation] = []
        self.listeners: list[Callable[[Invocation], None]] = []

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def generation(self) -> int:
        """Changes whenever an invocation starts, so an idle check can tell it raced with one."""
        return self._generation

    @property
    def thread_count(self) -> int:
        """The live worker's pool size (Python picks min(32, CPUs + 4) when none was given)."""
        return self._worker.pool._max_workers

    def invoke(self, spec: FunctionSpec, kind: str, trigger_value: Any, *, reason: str,
               trigger_id: str | None = None, details: str | None = None,
               convert: Callable[[], Any] | None = None) -> Result:
        """Run one invocation to its end (or its timeout) and return its record and output values.

        `convert`, when given, builds the trigger value inside the invocation, as the worker decodes the
        datum: a converter that raises fails the invocation before the function runs.
        """
        invocation_id = str(uuid.uuid4())
        outputs = {b.name: OutValue() for b in spec.outputs if b.name != "$return"}
        with self._lock:
            self._in_flight += 1
            self._generation += 1
            call = _Call(self._worker)
            self._calls.add(call)
        started = datetime.now(UTC)
        clock = time.monotonic()
        log.info("Executing 'Functions.%s' (Reason='%s', Id=%s)", spec.name, reason, invocation_id)
        if details:
            log.info("Trigger Details: %s", details)
        error: str | None = None
        returned: Any = None
        timed_out = False
        try:
            if convert is not None:
                trigger_value = convert()
            kwargs: dict[str, Any] = {spec.trigger.name: trigger_value, **outputs}
            call.future = call.worker.submit(spec, kwargs)
            call.future.add_done_callback(lambda _: call.done.set())
            finished = call.done.wait(self._timeout)
            if not finished and self._restart_worker(call, invocation_id):
                timed_out = True
                error = f"Timeout value of {_timespan(self._timeout)} was exceeded by function: Functions.{spec.name}"
                log.error("%s (Id: %s). Initiating cancellation.", error, invocation_id)
            elif call.abandoned_by is not None:  # another call's timeout restarted this call's worker first
                error = (f"Invocation ended: the language worker was restarted because invocation "
                         f"{call.abandoned_by} timed out")
            else:
                returned = call.future.result()
        except (Exception, asyncio.CancelledError) as exc:  # a cancelled async function fails, as in the worker
            error = f"{type(exc).__name__}: {exc}"
            log.error("Executed 'Functions.%s' (Failed, Id=%s): %s", spec.name, invocation_id, error,
                      exc_info=(type(exc), exc, exc.__traceback__))
        duration = time.monotonic() - clock
        record = Invocation(spec.name, kind, invocation_id, "error" if error else "ok", duration, started,
                            trigger_id, error, timed_out, call.abandoned_by is not None)
        log.info("Executed 'Functions.%s' (%s, Id=%s, Duration=%dms)", spec.name,
                 "Failed" if error else "Succeeded", invocation_id, duration * 1000)
        values = {name: out.get() for name, out in outputs.items()}
        if any(b.name == "$return" for b in spec.outputs):
            values["$return"] = returned
        with self._lock:
            self._calls.discard(call)
            self.invocations.append(record)
            self._in_flight -= 1
        for listener in list(self.listeners):
            listener(record)
        return Result(record, values if not error else {})

    def _restart_worker(self, timed_out: _Call, invocation_id: str) -> bool:
        """Replace the worker the timed-out call ran on; every other call on it ends with it. False when
        that worker was already replaced (this call was then ended by that restart, not by its own timeout)."""
        with self._lock:
            if timed_out.worker is not self._worker:
                return False
            old = self._worker
            self.restarts += 1
            self._worker = _Worker(self._thread_count, old.number + 1)
            self._dead.append(old)
            victims = [c for c in self._calls if c.worker is old and c is not timed_out]
            for victim in victims:
                victim.abandoned_by = invocation_id
        log.warning("Restarting language worker processes due to function timing out.")
        for victim in victims:
            victim.done.set()
        for call in [timed_out, *victims]:
            if call.future is not None:
                call.future.cancel()
        old.kill()
        log.warning("Restart of language worker process completed.")
        return True

    def shutdown(self) -> None:
        self._worker.shutdown()
        for dead in self._dead:  # detached sync threads of killed workers are not waited for
            if not dead.loop.is_running():
                dead.loop.close()


def _timespan(seconds: float | None) -> str:
    """The host writes timeouts as TimeSpans (00:10:00)."""
    total = int(seconds or 0)
    fraction = (seconds or 0) - total
    text = f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"
    return text + (f".{round(fraction * 1000):03d}" if fraction else "")
