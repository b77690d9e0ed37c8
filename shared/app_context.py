"""The app's long-lived objects, built once per worker process on first use (not at import time)."""

from __future__ import annotations

import threading

from shared.arm import AcrManagement
from shared.queues import ImportQueues
from shared.settings import load_settings
from shared.status import StatusStore
from shared.worker import Worker

_worker: Worker | None = None
_lock = threading.Lock()


def worker() -> Worker:
    global _worker
    with _lock:
        if _worker is None:
            settings = load_settings()
            _worker = Worker(settings=settings, arm=AcrManagement(settings), queues=ImportQueues(settings),
                             status=StatusStore(settings.status_table))
        return _worker


def reset() -> None:
    """Forget the cached objects (tests change settings between cases)."""
    global _worker
    with _lock:
        _worker = None
