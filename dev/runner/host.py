"""`Runner`: a local stand-in for the Functions host (v4, Python v2 model) driving the app's own functions.

See docs/runner.md for what it does like the host and where it differs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any

from azure.core.exceptions import ResourceExistsError

from dev import layout
from dev.runner.config import (
    ConfigError,
    FunctionSpec,
    HostConfig,
    discover_functions,
    load_host_config,
    load_local_settings,
    setting_layers,
)
from dev.runner.eventgrid import EventGridServer
from dev.runner.http import HttpRoutes
from dev.runner.invoker import Invocation, Invoker
from dev.runner.queues import QueueListener, encode, output_texts
from dev.runner.storage import resolve_connection
from dev.runner.timers import TimerListener, load_singleton_options, timer_storage

log = logging.getLogger("dev.runner")
KEY_FILE = layout.STATE_DIR / "runner" / "eventgrid-system-key"
FUNCTION_KEY_FILE = layout.STATE_DIR / "runner" / "function-key"
FUNCTION_KEY_SETTING = "RUNNER_FUNCTION_KEY"


class Runner:
    """Start with `start()` (or `with Runner(...)`); `stop()` lets in-flight invocations finish."""

    def __init__(self, app_module: str = "function_app", *, root: Path = layout.REPO_ROOT,
                 env: dict[str, str] | None = None, http_port: int | None = layout.RUNNER_PORT,
                 settings_file: Path | None = None) -> None:
        self.app_module = app_module
        self.root = Path(root)
        self.settings_file = Path(settings_file) if settings_file else self.root / "local.settings.json"
        self.env = dict(env or {})
        self.http_port = http_port
        self.config: HostConfig | None = None
        self.functions: dict[str, FunctionSpec] = {}
        self.eventgrid_key = ""
        self.function_key = ""  # what `function`-level HTTP triggers accept (the host's default key)
        self._saved_env: dict[str, str | None] = {}
        self._invoker: Invoker | None = None
        self._queues: dict[str, QueueListener] = {}
        self._timers: dict[str, TimerListener] = {}
        self._eventgrid: EventGridServer | None = None

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> Runner:
        self._apply_settings()
        try:
            self.config = load_host_config(self.root)
            self.functions = {f.name: f for f in discover_functions(self.app_module, self.root)}
            self._invoker = Invoker(self._thread_count(), self.config.function_timeout)
            settings = dict(os.environ)
            timers = [s for s in self.functions.values() if s.trigger.type == "timerTrigger"]
            # timers keep their listener lock and schedule status in AzureWebJobsStorage's blob service
            host_blobs = timer_storage(settings, self.root, resolve_connection(None, settings)) if timers else None
            singleton = load_singleton_options(self.root)
            for spec in self.functions.values():
                kind = spec.trigger.type
                if kind == "queueTrigger":
                    self._queues[spec.name] = QueueListener(
                        spec, self.config.queues, settings, self._invoker, self._write_outputs)
                elif kind == "timerTrigger":
                    self._timers[spec.name] = TimerListener(spec, self._invoker, host_blobs, singleton)
                elif kind not in ("eventGridTrigger", "httpTrigger"):
                    raise ConfigError(f"function {spec.name}: trigger {kind} is not served by the dev runner")
            webhooks = {n: s for n, s in self.functions.items() if s.trigger.type == "eventGridTrigger"}
            http = {n: s for n, s in self.functions.items() if s.trigger.type == "httpTrigger"}
            if (webhooks or http) and self.http_port is not None:
                self.eventgrid_key = self._system_key() if webhooks else ""
                self.function_key = self._function_key() if http else ""
                routes = HttpRoutes(http, self._invoker, self.function_key) if http else None
                self._eventgrid = EventGridServer(
                    webhooks, self._invoker, self.eventgrid_key, self.http_port, self._write_outputs, host=layout.HOST,
                    http_routes=routes)
                self.http_port = self._eventgrid.port
                self._eventgrid.start()
            for listener in self._queues.values():
                listener.start()
            for timer in self._timers.values():
                timer.start()
        except BaseException:
            self.stop()
            raise
        log.info("Host started: %d functions (%s)", len(self.functions), ", ".join(
            f"{n}: {s.trigger.type}" for n, s in self.functions.items()))
        if self._eventgrid and self.function_key:
            log.info("HTTP functions: http://%s:%d/api/<route>?code=<key: setting %s or file %s>", layout.HOST,
                     self.http_port, FUNCTION_KEY_SETTING, FUNCTION_KEY_FILE)
        if self._eventgrid and self.eventgrid_key:
            log.info("Event Grid webhook: http://%s:%d/runtime/webhooks/eventgrid?functionName=<name>"
                     "&code=<key: setting EVENTGRID_SYSTEM_KEY or file %s>", layout.HOST, self.http_port, KEY_FILE)
        return self

    def stop(self) -> None:
        """Stop triggers first, then wait for every invocation in flight (graceful, as the host drains)."""
        if self._eventgrid:
            self._eventgrid.stop()
            self._eventgrid = None
        for timer in self._timers.values():
            timer.stop()
        for listener in self._queues.values():
            listener.stop()
        self._timers.clear()
        self._queues.clear()
        if self._invoker:
            self._invoker.shutdown()
        self._restore_settings()

    def __enter__(self) -> Runner:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # --- what tests and the demo use -------------------------------------------------------------
    @property
    def invocations(self) -> list[Invocation]:
        return list(self._invoker.invocations) if self._invoker else []

    def trigger_timer(self, name: str) -> Invocation:
        """Run a timer function now (what the host's admin endpoint does), waiting for it to finish."""
        if name not in self._timers:
            raise KeyError(f"no timer function named {name!r}; timers: {sorted(self._timers)}")
        return self._timers[name].fire()

    def timer(self, name: str) -> TimerListener:
        """A timer function's listener: whether this instance holds its lock, how often it fired."""
        return self._timers[name]

    @property
    def queue_functions(self) -> list[str]:
        """The functions with a queue trigger, each polled by a listener of its own."""
        return list(self._queues)

    def queue_listener(self, function: str) -> QueueListener:
        return self._queues[function]

    def queue_name(self, function: str) -> str:
        return self._queues[function].queue_name

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """True once every watched queue is empty (retries pending count as work) and nothing runs."""
        deadline = time.monotonic() + timeout
        while True:
            if self._idle():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def _idle(self) -> bool:
        invoker = self._invoker
        if invoker is None:
            return True
        generation = invoker.generation
        if invoker.in_flight or any(q.processing for q in self._queues.values()):
            return False
        if not all(q.is_empty() for q in self._queues.values()):
            return False
        return generation == invoker.generation and invoker.in_flight == 0 and not any(
            q.processing for q in self._queues.values())

    # --- internals -------------------------------------------------------------------------------
    def _apply_settings(self) -> None:
        """Environment beats local.settings.json (Core Tools skips Values already set); `env` beats both.

        Each file Value the environment replaces is named in one line at start (never the value: it may be a
        secret), so a stale `export` in the shell is not a silent mystery."""
        layers = setting_layers(load_local_settings(self.root, self.settings_file), os.environ, self.env)
        for name in layers.overridden:
            log.warning("Setting %s: the environment's value overrides the one in %s (as the Functions tools "
                        "do); unset it to use the file's", name, self.settings_file.name)
        for key, value in layers.to_set.items():
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ[key] = value

    def _restore_settings(self) -> None:
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()

    def _thread_count(self) -> int | None:
        """PYTHON_THREADPOOL_THREAD_COUNT when it is a whole number >= 1, else None: the worker's default.

        The Python worker passes the setting to `ThreadPoolExecutor(max_workers=...)` and, when it is unset,
        passes None (azure-functions-python-worker `_get_sync_tp_max_workers`; an invalid value is logged
        and ignored), so Python's own default applies: min(32, CPUs + 4).
        """
        explicit = os.environ.get("PYTHON_THREADPOOL_THREAD_COUNT")
        if not explicit:
            return None
        try:
            count = int(explicit)
        except ValueError:
            count = 0
        if count < 1:
            log.warning("PYTHON_THREADPOOL_THREAD_COUNT must be a whole number of at least 1, not %r; "
                        "using the default", explicit)
            return None
        return count

    def _system_key(self) -> str:
        return _stored_key(os.environ.get("EVENTGRID_SYSTEM_KEY"), KEY_FILE, "the eventgrid_extension system key")

    def _function_key(self) -> str:
        return _stored_key(os.environ.get(FUNCTION_KEY_SETTING), FUNCTION_KEY_FILE, "the default function key")

    def _write_outputs(self, spec: FunctionSpec, values: dict[str, Any]) -> None:
        """Queue output bindings, written after success with the host's message encoding."""
        assert self.config is not None
        encoding = self.config.queues.message_encoding
        for binding in spec.outputs:
            texts = output_texts(values.get(binding.name))
            if not texts:
                continue
            name = str(binding.settings["queueName"]).lower()
            client = resolve_connection(binding.settings.get("connection"), dict(os.environ)).queue_client(name)
            with contextlib.suppress(ResourceExistsError):
                client.create_queue()
            for text in texts:
                client.send_message(encode(text, encoding))
            for listener in self._queues.values():
                if listener.queue_name == name:
                    listener.notify()


def _stored_key(configured: str | None, path: Path, what: str) -> str:
    """A key from its setting, else from its file, else a new one written there (0600). Never logged."""
    if configured:
        return configured
    if path.exists():
        return path.read_text().strip()
    key = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(key)
    log.info("Generated %s into %s", what, path)
    return key
