"""The app's long-lived objects, built once per worker process on first use (not at import time).

Building them never raises: malformed settings are logged here once, one line per setting naming it, and
the work that needs a broken setting fails with that reason (shared/worker.py `refuse_for_settings`, the
refresh's summary, replication's error). Work that does not need it goes on.
"""

from __future__ import annotations

import json
import logging
import threading

from shared.arm import AcrManagement
from shared.queues import ImportQueues
from shared.settings import FEATURE_NEEDS, Settings, read_settings
from shared.status import StatusStore
from shared.worker import Worker

log = logging.getLogger("acr_importer")
_worker: Worker | None = None
_lock = threading.Lock()


def worker() -> Worker:
    global _worker
    with _lock:
        if _worker is None:
            settings = read_settings(check_storage=True)
            report_problems(settings)
            report_identity()
            _worker = Worker(settings=settings, arm=AcrManagement(settings), queues=ImportQueues(settings),
                             status=StatusStore(settings.status_table))
        return _worker


def report_problems(settings: Settings) -> None:
    """One error line per unusable setting: which, why, and what it stops (never its value if secret)."""
    for problem in settings.problems:
        stops = sorted(f for f, needs in FEATURE_NEEDS.items() if problem.needed_by in needs) or \
            [f"requests naming credential set {problem.needed_by.partition(':')[2]}"]
        log.error(json.dumps({"event": "settings", "setting": problem.setting, "problem": problem.message,
                              "stops": stops}, ensure_ascii=False))


def report_identity() -> None:
    """One line at start when no managed identity endpoint is configured (the Functions host sets
    IDENTITY_ENDPOINT when the app has an identity): imports would fail with IdentityUnavailable, unless
    the app runs where IMDS serves a token (a VM or AKS node), which only a token request can tell."""
    import os

    if not (os.environ.get("IDENTITY_ENDPOINT") or os.environ.get("MSI_ENDPOINT")):
        from shared.failures import NO_IDENTITY_HINT

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
    """Forget the cached objects (tests change settings between cases)."""
    global _worker
    from shared.config_source import forget_cached

    with _lock:
        _worker = None
    forget_cached()
