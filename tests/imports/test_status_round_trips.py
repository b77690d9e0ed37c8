"""How many status-table calls a request costs the worker, and that the cheaper order never decides
anything: a message without an `id` is inserted first (its id is its queue message id, so no row can be
there on a first delivery); a row that is there after all (a replayed message) makes the insert fail and
the worker reads and decides as usual. Counted on the real StatusStore against Azurite."""

from __future__ import annotations

import json
import uuid
from collections import Counter

import pytest

from shared.core.outcome import State
from tests.helpers import deliver, status


@pytest.fixture
def table_calls(app_env, monkeypatch):
    """Calls made on the worker's status store, by method, in order."""
    from shared import app_context

    store = app_context.worker().status
    calls: list[str] = []
    for name in ("get", "create", "replace", "transition"):
        real = getattr(store, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            answer = _real(*args, **kwargs)
            calls.append(_name if answer is not None or _name == "get" else f"{_name} refused")
            return answer

        monkeypatch.setattr(store, name, counted)
    return calls


def import_posts(control) -> int:
    return sum(1 for r in control.requests() if r["method"] == "POST" and r["path"].endswith("/importImage"))


def test_a_message_without_an_id_is_inserted_without_reading_first(app_env, control, table_calls):
    message_id = uuid.uuid4().hex
    deliver({"source": "nginx:1.27", "targetTags": [f"rt:{message_id[:8]}"], "mode": "Force"},
            message_id=message_id)
    assert status(message_id).state is State.SUCCEEDED
    counts = Counter(table_calls)
    assert table_calls[0] == "create" and counts["get"] == 1  # the one read is this test's own `status`
    # the insert, the final write, and RUNNING with the operation only when the first look saw the copy running
    assert counts["create"] == 1 and 1 <= counts["replace"] <= 2


def test_a_replayed_message_without_an_id_finds_its_row_and_changes_nothing(app_env, control, table_calls):
    message_id = uuid.uuid4().hex
    body = json.dumps({"source": "nginx:1.27", "targetTags": [f"rt:{message_id[:8]}"], "mode": "Force"})
    deliver(body, message_id=message_id)
    before = status(message_id)
    posts = import_posts(control)
    table_calls.clear()
    deliver(body, message_id=message_id)  # the same message again, as a first delivery: the insert is refused
    after = status(message_id)
    writes = [c for c in table_calls if c != "get"]
    assert writes == ["create refused"], "the insert is refused, and nothing is written after it"
    assert "get" in table_calls, "the refused insert is followed by a read of the row"

    assert import_posts(control) == posts
    assert (after.state, after.etag, len(after.transitions)) == (State.SUCCEEDED, before.etag, len(before.transitions))


def test_a_redelivered_message_without_an_id_reads_first(app_env, control, table_calls):
    message_id = uuid.uuid4().hex
    deliver({"source": "nginx:1.27", "targetTags": [f"rt:{message_id[:8]}"], "mode": "Force"},
            message_id=message_id, dequeue_count=2)
    assert table_calls[0] == "get"
    assert status(message_id).state is State.SUCCEEDED


def test_a_message_naming_its_id_reads_first(app_env, control, table_calls):
    request_id = f"rt-{uuid.uuid4().hex[:8]}"
    deliver({"id": request_id, "source": "nginx:1.27", "targetTags": [f"rt:{request_id}"], "mode": "Force"})
    assert table_calls[:2] == ["get", "create"]
    assert status(request_id).state is State.SUCCEEDED
