"""Adapter to the request queue and the dead-letter queue (Azure Storage queues).

The app writes plain JSON (host.json sets `messageEncoding: none`); it reads both plain and base64.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.azure.storage import queue_service
from shared.core.settings import Settings

# The Azure SDK is imported inside the functions that use it, on purpose: it costs about half a second of
# every cold start (docs/benchmarks.md), and a message that is refused at once never needs it.

if TYPE_CHECKING:
    from azure.storage.queue import QueueClient, QueueServiceClient

MAX_QUEUE_MESSAGE_BYTES = 64 * 1024
MAX_VISIBILITY_DELAY_SECONDS = 7 * 24 * 3600
_NOT_XML = re.compile("[\ud800-\udfff\ufffe\uffff]")  # after json.dumps has escaped the C0 controls


class MessageTooLarge(ValueError):
    """A document whose message text would exceed the queue's 64 KiB: it was not sent."""

    def __init__(self, size: int) -> None:
        super().__init__(f"the message would be {size} bytes; a queue message holds at most "
                         f"{MAX_QUEUE_MESSAGE_BYTES} bytes (64 KiB)")
        self.size = size


def message_text(document: dict[str, Any]) -> str:
    """The smallest text the queue carries for `document`: compact JSON, UTF-8 as is (`\\uXXXX` escapes
    would make non-ASCII text up to twice as large as the producer's own message), escaping only what XML
    cannot carry (lone surrogates, U+FFFE, U+FFFF). No larger than a compact UTF-8 JSON original of the same
    document but for raw U+FFFE/U+FFFF (3 bytes there, 6 here): `enqueue` measures the result."""
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
    return _NOT_XML.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def message_size(text: str) -> int:
    """What the queue service counts against its limit: the UTF-8 bytes of the message text."""
    return len(text.encode("utf-8"))


class ImportQueues:
    def __init__(self, settings: Settings, service: QueueServiceClient | None = None) -> None:
        self._settings = settings
        self._service = service
        self._ready: set[str] = set()
        self._lock = threading.Lock()

    def _queue(self, name: str) -> QueueClient:
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
        """Put a request on the import queue, visible after `delay_seconds`. Returns the message id.

        Raises MessageTooLarge, before sending anything, when the text would not fit (measured, not assumed)."""
        text = message_text(document)
        size = message_size(text)
        if size > MAX_QUEUE_MESSAGE_BYTES:
            raise MessageTooLarge(size)
        delay = max(0, min(round(delay_seconds), MAX_VISIBILITY_DELAY_SECONDS))
        sent = self._queue(self._settings.import_queue).send_message(text, visibility_timeout=delay or None)
        message_id: str = sent.id
        return message_id

    def dead_letter(self, letter: dict[str, Any]) -> None:
        """Keep a request that ended rejected or failed, with its reason, for a person to look at (`letter_text`
        bounds it to half the queue's limit)."""
        self._queue(self._settings.dead_letter_queue).send_message(letter_text(letter, MAX_QUEUE_MESSAGE_BYTES // 2))

    def look(self, name: str) -> QueueLook:
        """How many messages `name` holds (the service's approximate count) and when its first visible one was
        put there: read only (the queue is not created), and never raising: what went wrong is `error`, the
        service's error code without its message (which names the account's URL)."""
        from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError

        try:
            with self._lock:
                if self._service is None:
                    self._service = queue_service()
                service = self._service
            client = service.get_queue_client(name)
            depth = client.get_queue_properties().approximate_message_count
            first = next(iter(client.peek_messages(max_messages=1)), None)
        except ResourceNotFoundError:
            return QueueLook(name, error="the queue does not exist")
        except HttpResponseError as exc:
            code = getattr(exc, "error_code", None) or getattr(exc, "reason", None) or ""
            return QueueLook(name, error=f"the queue service answered HTTP {exc.status_code} {code}".strip())
        except AzureError as exc:
            return QueueLook(name, error=f"the queue service could not be reached ({type(exc).__name__})")
        except ValueError as exc:  # the storage settings (StorageSettingsError; the SDK's own ValueErrors)
            return QueueLook(name, error=f"the storage settings cannot be used ({type(exc).__name__})")
        return QueueLook(name, depth, first.inserted_on if first is not None else None)


@dataclass(frozen=True)
class QueueLook:
    """`ImportQueues.look`'s answer: a depth and the first visible message's insertion time, or an error."""

    name: str
    depth: int | None = None
    oldest: datetime | None = None
    error: str | None = None


def letter_text(letter: dict[str, Any], limit: int) -> str:
    """A dead letter as ASCII JSON of at most `limit` characters: the id and the start of the reason always
    kept, the body cut first (`bodyTruncated`), then the reason (`reasonTruncated`). ASCII because a hostile
    body may hold lone surrogates (not encodable) or U+FFFE/U+FFFF (not XML, so the queue service refuses them,
    or Azurite stores them and then fails every peek of the queue)."""
    text = json.dumps(letter, separators=(",", ":"))
    if len(text) > limit:  # keep the reason; cut the body
        body = json.dumps(letter.get("body"))[:8192]
        text = json.dumps({**letter, "body": body, "bodyTruncated": True}, separators=(",", ":"))
    if len(text) > limit:  # a reason that long is cut too: the letter must fit
        reason = str(letter.get("reason", ""))[:4000]  # at most 24 KB as escaped JSON
        text = json.dumps({**json.loads(text), "reason": reason, "reasonTruncated": True}, separators=(",", ":"))
    for body_chars in (1024, 0):  # still too long (an escaped reason and body): less of the body
        if len(text) > limit:
            cut = json.loads(text)
            text = json.dumps({**cut, "body": str(cut.get("body"))[:body_chars] or None, "bodyTruncated": True},
                              separators=(",", ":"))
    return text
