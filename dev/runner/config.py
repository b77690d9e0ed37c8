"""What the host reads before it starts: app settings, host.json, and the functions the app declares."""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

_SETTING = re.compile(r"%([^%]+)%")
_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d+))?$")


class ConfigError(ValueError):
    """Something the Functions host would refuse at start-up (it reports these before any invocation)."""


@dataclass(frozen=True)
class QueueOptions:
    """`extensions.queues` of host.json, with the storage extension 5.x defaults."""

    batch_size: int = 16
    new_batch_threshold: int = 8  # host: batchSize/2 * processor count on App Service; see docs/runner.md
    max_dequeue_count: int = 5
    visibility_timeout: timedelta = timedelta(0)
    max_polling_interval: timedelta = timedelta(seconds=2)  # the host's local default; 1 min in Azure
    message_encoding: str = "base64"

    @property
    def concurrency(self) -> int:
        return self.batch_size + self.new_batch_threshold


@dataclass(frozen=True)
class HostConfig:
    queues: QueueOptions = field(default_factory=QueueOptions)
    function_timeout: timedelta | None = timedelta(minutes=5)


@dataclass(frozen=True)
class Binding:
    """One entry of a function's function.json `bindings`, settings already resolved."""

    name: str
    type: str
    direction: str
    settings: dict[str, Any]


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    trigger: Binding
    outputs: tuple[Binding, ...]
    user_function: Any
    is_async: bool


def load_local_settings(root: Path, path: Path | None = None) -> dict[str, str]:
    """`Values` of local.settings.json (in `root`, or `path`), which Core Tools puts into the worker's
    environment."""
    path = path or root / "local.settings.json"
    if not path.exists():
        return {}
    values = json.loads(path.read_text()).get("Values", {}) or {}
    return {str(k): str(v) for k, v in values.items()}


@dataclass(frozen=True)
class SettingLayers:
    """What the app runs with, from local.settings.json's Values, the environment and the runner's `env=`."""

    to_set: dict[str, str]     # what goes into os.environ: file Values the environment lacks, then `env=`
    overridden: list[str]      # names whose file Value the environment replaces with a different one
    effective: dict[str, str]  # every setting the file or `env=` names, as the app will read it


def setting_layers(file_values: Mapping[str, str], environ: Mapping[str, str],
                   explicit: Mapping[str, str] | None = None) -> SettingLayers:
    """The one rule: the environment beats the file (Core Tools skips Values already set, and so do the
    Functions tools); `explicit` (the runner's `env=`) beats both. A file Value the environment sets to the
    same text is no override: nothing to say."""
    explicit = dict(explicit or {})
    to_set = {k: v for k, v in file_values.items() if k not in environ}
    to_set.update(explicit)
    overridden = sorted(k for k, v in file_values.items()
                        if k in environ and environ[k] != v and k not in explicit)
    effective = {**file_values, **{k: environ[k] for k in file_values if k in environ}, **explicit}
    return SettingLayers(to_set, overridden, effective)


def resolve(value: Any, settings: dict[str, str] | None = None) -> Any:
    """Replace `%NAME%` (whole or embedded) with app settings, as the host's name resolver does."""
    if not isinstance(value, str):
        return value
    lookup = os.environ if settings is None else settings

    def setting(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in lookup:
            raise ConfigError(f"'%{name}%' does not resolve to a value (app setting {name} is not set)")
        return lookup[name]

    return _SETTING.sub(setting, value)


def timespan(value: Any, *, milliseconds_if_number: bool = False) -> timedelta:
    """host.json durations: `[d.]hh:mm:ss[.fff]`, or a number of milliseconds where the host allows it."""
    if isinstance(value, int | float) and milliseconds_if_number:
        return timedelta(milliseconds=value)
    match = _TIMESPAN.match(str(value))
    if not match:
        raise ConfigError(f"{value!r} is not a TimeSpan (expected hh:mm:ss)")
    days, hours, minutes, seconds, fraction = match.groups()
    return timedelta(days=int(days or 0), hours=int(hours), minutes=int(minutes), seconds=int(seconds),
                     microseconds=int((fraction or "0")[:6].ljust(6, "0")))


def load_host_config(root: Path) -> HostConfig:
    path = root / "host.json"
    host = json.loads(path.read_text()) if path.exists() else {}
    raw = (host.get("extensions") or {}).get("queues") or {}
    batch = int(raw.get("batchSize", 16))
    if not 1 <= batch <= 32:
        raise ConfigError(f"host.json extensions.queues.batchSize must be 1..32, got {batch}")
    threshold = int(raw.get("newBatchThreshold", batch // 2))
    dequeue = int(raw.get("maxDequeueCount", 5))
    if dequeue < 1:
        raise ConfigError("host.json extensions.queues.maxDequeueCount must be at least 1")
    encoding = str(raw.get("messageEncoding", "base64")).lower()
    if encoding not in ("base64", "none"):
        raise ConfigError(f"host.json extensions.queues.messageEncoding must be base64 or none: {encoding}")
    polling = timespan(raw.get("maxPollingInterval", "00:00:02"), milliseconds_if_number=True)
    if polling < timedelta(milliseconds=100):
        raise ConfigError("host.json extensions.queues.maxPollingInterval must be at least 100 ms")
    queues = QueueOptions(
        batch_size=batch, new_batch_threshold=threshold, max_dequeue_count=dequeue,
        visibility_timeout=timespan(raw.get("visibilityTimeout", "00:00:00")),
        max_polling_interval=polling, message_encoding=encoding,
    )
    timeout_raw = host.get("functionTimeout", "00:05:00")
    timeout = None if timeout_raw in (None, "-1") else timespan(timeout_raw)
    return HostConfig(queues=queues, function_timeout=timeout)


def discover_functions(app_module: str, root: Path) -> list[FunctionSpec]:
    """Index the app as the Python worker does: import the module, read each function's bindings."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    module = importlib.import_module(app_module)
    app = getattr(module, "app", None)
    if app is None or not hasattr(app, "get_functions"):
        raise ConfigError(f"{app_module} has no FunctionApp named 'app'")
    import inspect

    specs = []
    if getattr(app, "functions_bindings", None):
        app.functions_bindings = {}  # get_functions() refuses a second indexing of the same app otherwise
    for function in app.get_functions():
        name = function.get_function_name()
        raw = json.loads(function.get_function_json())["bindings"]
        bindings = [Binding(b["name"], b["type"], b["direction"].upper(),
                            {k: resolve(v) for k, v in b.items() if k not in ("name", "type", "direction")})
                    for b in raw]
        triggers = [b for b in bindings if b.type.endswith("Trigger")]
        if len(triggers) != 1:
            raise ConfigError(f"function {name} must have exactly one trigger, has {len(triggers)}")
        outputs = tuple(b for b in bindings if b.direction == "OUT")
        served = {"queue", "http"} if triggers[0].type == "httpTrigger" else {"queue"}
        unsupported = [b for b in bindings if b not in triggers and b not in outputs] + [
            b for b in outputs if b.type not in served]
        if unsupported:
            kinds = ", ".join(f"{b.name} ({b.type} {b.direction})" for b in unsupported)
            raise ConfigError(f"function {name}: the dev runner does not serve bindings {kinds}")
        user = function.get_user_function()
        specs.append(FunctionSpec(name, triggers[0], outputs, user, inspect.iscoroutinefunction(user)))
    return specs
