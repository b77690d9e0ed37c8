"""Calling a user function the way the Python worker does, and recording each invocation as the host logs it.

Sync functions run in the worker's thread pool; `async def` functions run on one event loop of their own.
Output bindings are `func.Out` objects the function fills; the caller writes them only after success.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func

from dev.runner.config import FunctionSpec

log = logging.getLogger("dev.runner")


@dataclass(frozen=True)
class Invocation:
    function: str
    trigger: str         # queue | timer | eventgrid
    id: str              # the invocation id the host logs
    outcome: str         # ok | error
    duration: float      # seconds
    started: datetime
    trigger_id: str | None = None   # queue message id or event id
    error: str | None = None


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


class Invoker:
    def __init__(self, thread_count: int, function_timeout: timedelta | None) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(thread_count, thread_name_prefix="worker")
        self._timeout = function_timeout.total_seconds() if function_timeout else None
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name="worker-loop", daemon=True)
        self._loop_thread.start()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._generation = 0
        self.invocations: list[Invocation] = []
        self.listeners: list[Callable[[Invocation], None]] = []

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def generation(self) -> int:
        """Changes whenever an invocation starts, so an idle check can tell it raced with one."""
        return self._generation

    def invoke(self, spec: FunctionSpec, kind: str, trigger_value: Any, *, reason: str,
               trigger_id: str | None = None, details: str | None = None) -> Result:
        """Run one invocation to its end (or its timeout) and return its record and output values."""
        invocation_id = str(uuid.uuid4())
        outputs = {b.name: OutValue() for b in spec.outputs if b.name != "$return"}
        kwargs: dict[str, Any] = {spec.trigger.name: trigger_value, **outputs}
        with self._lock:
            self._in_flight += 1
            self._generation += 1
        started = datetime.now(UTC)
        clock = time.monotonic()
        log.info("Executing 'Functions.%s' (Reason='%s', Id=%s)", spec.name, reason, invocation_id)
        if details:
            log.info("Trigger Details: %s", details)
        error: str | None = None
        returned: Any = None
        try:
            if spec.is_async:
                future = asyncio.run_coroutine_threadsafe(spec.user_function(**kwargs), self._loop)
            else:
                future = self._pool.submit(spec.user_function, **kwargs)
            try:
                returned = future.result(timeout=self._timeout)
            except concurrent.futures.TimeoutError:
                error = f"Timeout value of {self._timeout:g}s exceeded by function 'Functions.{spec.name}'"
                log.error("%s (Id: %s). Initiating cancellation.", error, invocation_id)
                future.cancel()
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.error("Executed 'Functions.%s' (Failed, Id=%s): %s", spec.name, invocation_id, error,
                      exc_info=(type(exc), exc, exc.__traceback__))
        duration = time.monotonic() - clock
        record = Invocation(spec.name, kind, invocation_id, "error" if error else "ok", duration, started,
                            trigger_id, error)
        log.info("Executed 'Functions.%s' (%s, Id=%s, Duration=%dms)", spec.name,
                 "Failed" if error else "Succeeded", invocation_id, duration * 1000)
        values = {name: out.get() for name, out in outputs.items()}
        if any(b.name == "$return" for b in spec.outputs):
            values["$return"] = returned
        with self._lock:
            self.invocations.append(record)
            self._in_flight -= 1
        for listener in list(self.listeners):
            listener(record)
        return Result(record, values if not error else {})

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(timeout=5)
        self._loop.close()
