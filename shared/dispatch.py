"""The import queue's dispatcher: is this message an import request or ACR events? (The queue carries both:
Event Grid may deliver a registry's events straight into it.) Events go to replication, requests to the
import state machine; `function_app.py` binds the queue triggers to the two functions here.
"""

from __future__ import annotations

from shared.app_context import Worker
from shared.azure import telemetry
from shared.core.outcome import Outcome
from shared.core.request import decode_body
from shared.imports import worker
from shared.replication import replicate as replication
from shared.replication.events import is_event_like
from shared.replication.replicate import EventResult


@telemetry.import_span
def handle_import_message(app: Worker, body: bytes | str, *, message_id: str,
                          dequeue_count: int = 1) -> Outcome | list[Outcome] | list[EventResult]:
    """One queue message: an import request (its Outcome), or ACR events (a list of
    `replication.EventResult`, or of Outcomes when the settings replication needs are broken)."""
    decoded = decode_body(body)
    document, problem = decoded
    if problem is None and is_event_like(document):  # Event Grid delivering straight into the queue
        return replication.from_queue(app, document, message_id=message_id)
    return worker.handle_request(app, body, decoded, message_id=message_id, dequeue_count=dequeue_count)


@telemetry.import_span
def handle_poison_message(app: Worker, body: bytes | str, *, message_id: str,
                          dequeue_count: int = 1) -> Outcome | list[Outcome]:
    """A message the host gave up on after repeated crashes: recorded as failed (or rejected), never lost."""
    decoded = decode_body(body)
    document, problem = decoded
    if problem is None and is_event_like(document):
        return replication.poisoned(app, document, message_id=message_id)
    return worker.handle_poisoned_request(app, body, decoded, message_id=message_id)
