"""Adapter to the request queue and the dead-letter queue (Azure Storage queues).

The app writes plain JSON (host.json sets `messageEncoding: none`); it reads both plain and base64.
"""

from __future__ import annotations

import contextlib
import json
import threading
from typing import Any

from shared.settings import Settings
from shared.storage import queue_service

MAX_QUEUE_MESSAGE_BYTES = 64 * 1024
MAX_VISIBILITY_DELAY_SECONDS = 7 * 24 * 3600


class ImportQueues:
    def __init__(self, settings: Settings, service=None) -> None:
        self._settings = settings
        self._service = service
        self._ready: set[str] = set()
        self._lock = threading.Lock()

    def _queue(self, name: str):
        from azure.core.exceptions import ResourceExistsError

        with self._lock:
            if self._service is None:
                self._service = queue_service()
            client = self._service.get_queue_client(name)
            if name not in self._ready:
                with contextlib.suppress(ResourceExistsError):
                    client.create_queue()
                self._ready.add(name)
        return client

    def enqueue(self, document: dict[str, Any], *, delay_seconds: float = 0) -> str:
        """Put a request on the import queue, visible after `delay_seconds`. Returns the message id."""
        delay = max(0, min(round(delay_seconds), MAX_VISIBILITY_DELAY_SECONDS))
        sent = self._queue(self._settings.import_queue).send_message(
            json.dumps(document, separators=(",", ":")), visibility_timeout=delay or None)
        return sent.id

    def dead_letter(self, letter: dict[str, Any]) -> None:
        """Keep a request that ended rejected or failed, with its reason, for a person to look at.

        ASCII JSON: a hostile body may hold lone surrogates (not encodable) or U+FFFE/U+FFFF (not XML, so the
        queue service refuses them, or Azurite stores them and then fails every peek of the queue)."""
        text = json.dumps(letter, separators=(",", ":"))
        if len(text) > MAX_QUEUE_MESSAGE_BYTES // 2:  # keep the reason; cut the body
            body = json.dumps(letter.get("body"))[:8192]
            text = json.dumps({**letter, "body": body, "bodyTruncated": True}, separators=(",", ":"))
        if len(text) > MAX_QUEUE_MESSAGE_BYTES // 2:  # a reason that long is cut too: the letter must fit
            reason = str(letter.get("reason", ""))[:4000]  # at most 24 KB as escaped JSON
            text = json.dumps({**json.loads(text), "reason": reason, "reasonTruncated": True}, separators=(",", ":"))
        self._queue(self._settings.dead_letter_queue).send_message(text)
