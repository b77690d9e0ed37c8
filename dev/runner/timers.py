"""Timer triggers: one schedule per function, never overlapping itself, failures not retried (as the host)."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from dev.runner.config import FunctionSpec
from dev.runner.inputs import timer_input
from dev.runner.invoker import Invocation, Invoker
from dev.runner.schedule import parse_schedule

log = logging.getLogger("dev.runner")
PAST_DUE_TOLERANCE = 1.0  # seconds late before a run counts as past due


class TimerListener:
    def __init__(self, spec: FunctionSpec, invoker: Invoker) -> None:
        self.spec = spec
        self.schedule = parse_schedule(str(spec.trigger.settings["schedule"]))
        self.run_on_startup = bool(spec.trigger.settings.get("runOnStartup", False))
        self._invoker = invoker
        self._running = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"timer-{spec.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()

    def fire(self, *, past_due: bool = False) -> Invocation:
        """Run now, after any run in progress ends (a timer never overlaps itself)."""
        with self._running:
            now = datetime.now(UTC)
            result = self._invoker.invoke(
                self.spec, "timer", None, convert=lambda: timer_input(past_due),
                reason=f"Timer fired at {now:%Y-%m-%dT%H:%M:%S.%f}+00:00")
            return result.invocation

    def _run(self) -> None:
        if self.run_on_startup:
            self.fire()
        due = self.schedule.next_after(datetime.now(UTC))
        log.info("Timer %s: next occurrence %s", self.spec.name, due.isoformat())
        while not self._stopping.wait(max(0.0, (due - datetime.now(UTC)).total_seconds())):
            late = (datetime.now(UTC) - due).total_seconds()
            self.fire(past_due=late > PAST_DUE_TOLERANCE)
            due = self.schedule.next_after(datetime.now(UTC))
