"""A conditional status write whose answer is lost after the write landed (the storage call timed out or the
connection dropped after Azurite applied it): azure-core retries the same write with the same ETag, storage
refuses it (412, the ETag moved: by this very write), and the app must recognise its own write instead of
taking it for another delivery's. Found by the scale-out benchmark under load: requests stranded `running`
with no message left to carry them.

The network is the hostile party here: a TCP forwarder in front of Azurite's table endpoint that delivers
the chosen request and then closes the client's connection without passing the answer on."""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid

import pytest

from dev import layout
from shared.azure.status import StatusRecord, StatusStore
from shared.core.outcome import State


class AnswerSwallower:
    """Forwards each client connection to Azurite; the first request whose head starts with `swallow`
    reaches Azurite, its answer is read and thrown away, and the client's connection is closed."""

    def __init__(self, swallow: bytes) -> None:
        self.swallow = swallow
        self.swallowed = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", layout.AZURITE_TABLE_PORT))
        doomed = threading.Event()  # the request on this connection is the one whose answer is swallowed

        def requests_in() -> None:
            with contextlib.suppress(OSError):
                while data := client.recv(65536):
                    if data.startswith(self.swallow) and self.swallowed == 0:
                        self.swallowed += 1
                        doomed.set()
                    upstream.sendall(data)

        threading.Thread(target=requests_in, daemon=True).start()
        try:
            while answer := upstream.recv(65536):
                if doomed.is_set():
                    return  # the write landed; its answer never arrives
                client.sendall(answer)
        except OSError:
            return
        finally:
            for end in (client, upstream):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()

    def close(self) -> None:
        self.sock.close()


def store_through(proxy: AnswerSwallower, table: str) -> StatusStore:
    from shared.azure.storage import service_client

    connection = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={layout._DEV_ACCOUNT_KEY};"
                  f"TableEndpoint=http://127.0.0.1:{proxy.port}/devstoreaccount1;")
    return StatusStore(table, service_client("table", {"AzureWebJobsStorage": connection}))


@pytest.fixture
def swallower():
    proxy = AnswerSwallower(b"PUT ")
    yield proxy
    proxy.close()


def test_an_if_match_write_whose_answer_was_lost_is_recognised_as_this_one(app_env, swallower):
    store = store_through(swallower, app_env["IMPORT_STATUS_TABLE"])
    first = store.create(StatusRecord(id=f"lost-{uuid.uuid4().hex[:8]}", state=State.RUNNING).moved(
        State.RUNNING, carrier="message-1"))
    assert first is not None
    moved = first.moved(State.SUCCEEDED, reason="imported", digest="sha256:" + "a" * 64)
    written = store.replace(moved)
    assert swallower.swallowed == 1, "the forwarder swallowed the PUT's answer, so azure-core retried it"
    assert written is not None and written.state is State.SUCCEEDED and written.etag != first.etag
    assert store.get(first.id).to_entity() == moved.to_entity()


def test_a_write_refused_because_another_changed_the_row_is_still_refused(app_env):
    store = StatusStore(app_env["IMPORT_STATUS_TABLE"])
    first = store.create(StatusRecord(id=f"lost-{uuid.uuid4().hex[:8]}", state=State.RUNNING).moved(
        State.RUNNING, carrier="message-1"))
    theirs = store.replace(first.moved(State.RUNNING, carrier="message-2"))
    assert theirs is not None
    assert store.replace(first.moved(State.SUCCEEDED, reason="mine")) is None
    assert store.create(first.moved(State.SUCCEEDED, reason="mine")) is None
    assert store.get(first.id).carrier == "message-2"


def test_an_insert_replayed_after_it_landed_is_recognised_as_this_one(app_env):
    store = StatusStore(app_env["IMPORT_STATUS_TABLE"])
    record = StatusRecord(id=f"lost-{uuid.uuid4().hex[:8]}", state=State.RUNNING).moved(State.RUNNING, carrier="m")
    first = store.create(record)
    again = store.create(record)  # what a retried insert meets: its own row (409)
    assert first is not None and again is not None and again.etag == first.etag


def test_a_worker_whose_running_write_answer_is_lost_still_finishes_the_request(app_env, control, swallower,
                                                                                  monkeypatch):
    from shared import app_context
    from tests.helpers import deliver, status

    worker = app_context.worker()
    monkeypatch.setattr(worker, "status", store_through(swallower, app_env["IMPORT_STATUS_TABLE"]))
    control.add_faults("operation", {"delay": 1})
    request_id = f"lost-{uuid.uuid4().hex[:8]}"
    deliver({"id": request_id, "source": "nginx:1.27", "targetTags": [f"lost:{request_id}"], "mode": "Force"})
    assert swallower.swallowed == 1
    row = status(request_id)
    assert row.state is State.SUCCEEDED, row.reason


def test_a_withdrawal_whose_answer_was_lost_still_says_the_row_is_gone(app_env):
    proxy = AnswerSwallower(b"DELETE ")
    try:
        store = store_through(proxy, app_env["IMPORT_STATUS_TABLE"])
        row = store.create(StatusRecord(id=f"lost-{uuid.uuid4().hex[:8]}", state=State.RECEIVED).moved(
            State.RECEIVED))
        assert store.withdraw(row) is True and proxy.swallowed == 1
        assert store.get(row.id) is None
    finally:
        proxy.close()
