"""What several test modules do the same way: hand a message to a function as the host would, read the
status row, the queues and the dead letters."""

from __future__ import annotations

import json
import time
import uuid

from azure.functions.queue import QueueMessage
from azure.storage.queue import QueueClient

from dev import layout


def user_functions() -> dict:
    """The app's callables by function name, indexed as the worker does (re-indexing allowed)."""
    import function_app

    function_app.app.functions_bindings = {}  # get_functions() refuses a second indexing otherwise
    return {fn.get_function_name(): fn.get_user_function() for fn in function_app.app.get_functions()}


def user_function(name: str):
    return user_functions()[name]


class Taken(str):
    """A message's text taken off the queue, with its queue message id (the host hands the function both)."""

    message_id: str

    def __new__(cls, text: str, message_id: str) -> Taken:
        taken = super().__new__(cls, text)
        taken.message_id = message_id
        return taken


def deliver(body: str | bytes | dict, *, function: str = "import_image", dequeue_count: int = 1,
            message_id: str | None = None) -> str:
    """Hand one queue message to the function as the host would; returns the message id (a message taken
    off the queue keeps its own: the app names the message that carries a request on its status row)."""
    if isinstance(body, dict):
        body = json.dumps(body)
    message_id = message_id or getattr(body, "message_id", None) or uuid.uuid4().hex
    user_function(function)(QueueMessage(id=message_id, body=body.encode() if isinstance(body, str) else body,
                                         dequeue_count=dequeue_count, pop_receipt="r"))
    return message_id


def status(request_id: str):
    from shared import app_context

    return app_context.worker().status.get(request_id)


def queue(app_env, name: str) -> QueueClient:
    return QueueClient.from_connection_string(layout.AZURITE_CONNECTION_STRING, name)


def dead_letters(app_env) -> list[dict]:
    client = queue(app_env, f"{app_env['IMPORT_QUEUE']}-rejected")
    return [json.loads(m.content) for m in client.peek_messages(max_messages=32)]


def next_retry(app_env, timeout: float = 15.0) -> str:
    """Wait for a re-enqueued copy (retry or follow-up) to become visible and take it off the queue."""
    client = queue(app_env, app_env["IMPORT_QUEUE"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in client.receive_messages(max_messages=1, visibility_timeout=60):
            client.delete_message(message)
            return Taken(message.content, message.id)
        time.sleep(0.2)
    raise AssertionError("no retry message appeared on the queue")


def drain(app_env, name: str) -> list[str]:
    """Every message on a queue (taken off it), however many: `receive_messages` returns at most 32 a call."""
    from azure.core.exceptions import ResourceNotFoundError

    client = queue(app_env, name)
    contents: list[str] = []
    try:
        while True:
            batch = list(client.receive_messages(max_messages=32, visibility_timeout=60))
            if not batch:
                return contents
            for message in batch:
                contents.append(message.content)
                client.delete_message(message)
    except ResourceNotFoundError:
        return contents


def everything_kept(app_env) -> list[str]:
    """Every status row (as JSON) and every message on the import, dead-letter and poison queues (drained)."""
    from shared.azure.status import StatusStore

    texts = [json.dumps(r.__dict__, default=str) for r in StatusStore(app_env["IMPORT_STATUS_TABLE"]).list()]
    for suffix in ("", "-rejected", "-poison"):
        texts += drain(app_env, app_env["IMPORT_QUEUE"] + suffix)
    return texts
