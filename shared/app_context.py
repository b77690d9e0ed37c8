"""The app's long-lived objects (`Worker`: settings, ARM, queues, status table, registry client, identity) and
the one place that builds them: the Function App (`worker()`, once per process, on first use, not at import
time), the CLI and the benchmarks all call the builders here, so there is no second copy of the wiring.

Building them never raises: malformed settings are logged here once, one line per setting naming it, and
the work that needs a broken setting fails with that reason (shared/imports/worker.py `refuse_for_settings`, the
refresh's summary, replication's error). Work that does not need it goes on.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.azure.arm import AcrManagement, make_credential
from shared.azure.arm_budget import BOOK
from shared.azure.config_source import forget_cached
from shared.azure.queues import ImportQueues
from shared.azure.status import StatusStore, utc_now
from shared.azure.storage import settings_problem
from shared.core.failures import NO_IDENTITY_HINT
from shared.core.settings import BACKUP, FEATURE_NEEDS, Settings, read_settings
from shared.registry.client import IdentityAuth, LazyCredential, RegistryClient

log = logging.getLogger("acr_importer")


@dataclass
class Worker:
    """The app's objects one invocation works with (named for the queue worker, their first user); the
    features take it as their first argument. Tests build one around their own fakes."""

    settings: Settings
    arm: AcrManagement
    queues: ImportQueues
    status: StatusStore
    clock: Callable[[], datetime] = utc_now
    jitter: Callable[[], float] = random.random
    registries: RegistryClient | None = None  # the app's own reads: digests for IfChanged and conflicts
    identity: IdentityAuth | None = None
    _secrets: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        self._secrets = self.settings.secret_values()
        if self.registries is None:
            self.registries = registry_client(self.settings)
        if self.identity is None:
            self.identity = identity(self.settings)

    def reader(self) -> tuple[RegistryClient, IdentityAuth]:
        """The app's own registry client and identity: given, or made by __post_init__."""
        assert self.registries is not None and self.identity is not None, "__post_init__ sets both"
        return self.registries, self.identity


# --- the builders -------------------------------------------------------------------------------------
def app_settings(env: Mapping[str, str] | None = None) -> Settings:
    """The Function App's settings: never raises; also checks the storage settings (shared/core/settings.py)."""
    return read_settings(env, check_storage=settings_problem)


def identity(settings: Settings) -> IdentityAuth:
    """The app's Entra identity for registry reads (the token is asked for on first use, not here)."""
    return IdentityAuth(LazyCredential(lambda: make_credential(settings)))


def registry_client(settings: Settings) -> RegistryClient:
    return RegistryClient(endpoints=settings.registry_endpoints)


def import_queues(settings: Settings, service: Any = None) -> ImportQueues:
    """The import queue and its dead-letter queue; `service` a QueueServiceClient (the CLI's, signed in as a
    person), else the app's own from AzureWebJobsStorage."""
    return ImportQueues(settings, service)


def status_store(settings: Settings, service: Any = None) -> StatusStore:
    """The status table; `service` a TableServiceClient (the CLI's), else the app's own."""
    return StatusStore(settings.status_table, service)


def build(settings: Settings, **overrides: Any) -> Worker:
    """Every object the app works with, for `settings`; `overrides` replace any of them (tests, tools)."""
    parts: dict[str, Any] = {"arm": AcrManagement(settings), "queues": import_queues(settings),
                             "status": status_store(settings)}
    return Worker(settings=settings, **{**parts, **overrides})


_worker: Worker | None = None
_lock = threading.Lock()


def worker() -> Worker:
    global _worker
    with _lock:
        if _worker is None:
            settings = app_settings()
            report_problems(settings)
            report_identity()
            _worker = build(settings)
        return _worker


def report_problems(settings: Settings) -> None:
    """One error line per unusable setting: which, why, and what it stops (never its value if secret)."""
    for problem in settings.problems:
        stops = sorted(f for f, needs in FEATURE_NEEDS.items() if problem.needed_by in needs) or \
            (["Force and IfChanged imports"] if problem.needed_by == BACKUP else
             [f"requests naming credential set {problem.needed_by.partition(':')[2]}"])
        log.error(json.dumps({"event": "settings", "setting": problem.setting, "problem": problem.message,
                              "stops": stops}, ensure_ascii=False))


def report_identity() -> None:
    """One line at start when no managed identity endpoint is configured (the Functions host sets
    IDENTITY_ENDPOINT when the app has an identity): imports would fail with IdentityUnavailable, unless
    the app runs where IMDS serves a token (a VM or AKS node), which only a token request can tell."""
    if not (os.environ.get("IDENTITY_ENDPOINT") or os.environ.get("MSI_ENDPOINT")):
        log.warning(json.dumps({"event": "settings", "setting": "IDENTITY_ENDPOINT",
                                "problem": "not set: no App Service managed identity endpoint; tokens are asked "
                                           "of IMDS, which answers only on Azure VMs and AKS; " + NO_IDENTITY_HINT,
                                "stops": ["imports, unless IMDS serves a token"]}, ensure_ascii=False))


def usable_for(feature: str) -> bool:
    """Whether `feature` may run (the timers ask; the problems were logged at start)."""
    blocked = worker().settings.problems_for(feature)
    if blocked:
        log.error(json.dumps({"event": "settings", "feature": feature, "state": "not run",
                              "reason": "; ".join(map(str, blocked))}, ensure_ascii=False))
    return not blocked


def reset() -> None:
    """Forget the cached objects (tests change settings between cases), and what ARM said of its budget."""
    global _worker
    with _lock:
        _worker = None
    forget_cached()
    BOOK.clear()
