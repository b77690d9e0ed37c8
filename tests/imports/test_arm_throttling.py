"""Riding ARM's request budget against the stand-in with its token buckets on (dev/azure_standin/throttling.py):
throttling never fails a request nor uses up its attempts, a 429's Retry-After is waited out, and a quick
import costs its status row two writes. Through the real SDK, Azurite and the queue."""

from __future__ import annotations

import json
import uuid

import pytest
from azure.storage.queue import QueueClient

from dev import layout
from shared.core.outcome import State
from tests.helpers import dead_letters, deliver, next_retry, status


def run_id() -> str:
    return uuid.uuid4().hex[:8]


def arm_requests(control, method: str, path_part: str) -> list[dict]:
    return [r for r in control.requests() if r["method"] == method and path_part in r["path"]]


def enqueue(app_env, doc: dict) -> str:
    doc.setdefault("id", f"budget-{run_id()}")
    QueueClient.from_connection_string(layout.AZURITE_CONNECTION_STRING, app_env["IMPORT_QUEUE"]).send_message(
        json.dumps(doc))
    return doc["id"]


def test_a_quick_import_writes_its_status_row_twice(app_env, control, monkeypatch):
    """Cut 2 of docs/benchmarks.md: the look right after the POST already says done, so no RUNNING row with
    the operation is written in between: the row is claimed, then written done."""
    from shared import app_context

    control.update_settings(data_plane="memory")  # the copy is a catalog entry: done at the first look
    control.put_image("docker.io/library/nginx:1.27", "sha256:" + "c0" * 32)
    store = app_context.worker().status
    writes: list[str] = []
    for name in ("create", "replace", "transition", "pin"):
        method = getattr(store, name)
        monkeypatch.setattr(store, name, lambda *a, _m=method, _n=name, **k: (writes.append(_n), _m(*a, **k))[1])
    request_id = deliver({"source": "nginx:1.27", "targetTags": [f"nginx:quick-{run_id()}"]})
    record = status(request_id)
    assert record.state is State.SUCCEEDED and record.attempts == 1
    assert len(writes) == 2, f"status row writes: {writes}"
    assert [t["state"] for t in record.transitions] == ["running", "succeeded"]
    assert len(arm_requests(control, "POST", "/importImage")) == 1
    assert len(arm_requests(control, "GET", "/operationResults/")) == 1


def test_a_slow_import_names_its_operation_on_the_row_before_it_waits(app_env, control, monkeypatch):
    from shared import app_context

    control.add_faults("operation", {"delay": 2})
    monkeypatch.setenv("IMPORT_WAIT_SECONDS", "0.5")
    app_context.reset()
    request_id = deliver({"source": "nginx:1.27", "targetTags": [f"nginx:slow-{run_id()}"]})
    record = status(request_id)
    assert record.state is State.RUNNING and record.operation and record.operation_started_at
    deliver(next_retry(app_env))
    assert status(request_id).state in (State.SUCCEEDED, State.RUNNING)


def test_a_throttled_post_is_retried_without_using_up_an_attempt(app_env, control, monkeypatch):
    from shared import app_context

    monkeypatch.setenv("IMPORT_MAX_ATTEMPTS", "1")
    app_context.reset()
    control.add_faults("import", {"status": 429, "retry_after": 1}, {"status": 429, "retry_after": 1})
    request_id = deliver({"source": "nginx:1.27", "targetTags": [f"nginx:throttled-{run_id()}"]})
    record = status(request_id)
    assert record.state is State.RETRYING and record.attempts == 0, record.reason
    assert record.reason.startswith("throttled by ARM (subscription writes bucket), retrying in ")
    assert "not counted as an attempt" in record.reason
    deliver(next_retry(app_env))
    assert status(request_id).state is State.RETRYING and status(request_id).attempts == 0
    deliver(next_retry(app_env))
    record = status(request_id)
    assert record.state is State.SUCCEEDED and record.attempts == 1, "one attempt allowed, two 429s met"
    assert len(arm_requests(control, "POST", "/importImage")) == 3
    assert dead_letters(app_env) == []


def test_a_throttled_post_waits_out_its_retry_after(app_env, control):
    control.add_faults("import", {"status": 429, "retry_after": 30})
    request_id = deliver({"source": "nginx:1.27", "targetTags": [f"nginx:ra-{run_id()}"]})
    record = status(request_id)
    assert record.state is State.RETRYING
    delay = int(record.reason.split("retrying in ")[1].split(" s")[0])
    assert 30 <= delay <= 31, record.reason
    queue = QueueClient.from_connection_string(layout.AZURITE_CONNECTION_STRING, app_env["IMPORT_QUEUE"])
    assert queue.peek_messages() == [], "the retry is on the queue but not visible before Retry-After"
    assert queue.get_queue_properties().approximate_message_count == 1


@pytest.fixture
def write_limits(app_env, monkeypatch):
    """The stand-in's write bucket and the app's ARM_REQUEST_LIMITS: one write, refilling one every 20 s."""
    from shared import app_context

    monkeypatch.setenv("ARM_REQUEST_LIMITS", "writes=1/0.05")
    app_context.reset()


def test_an_empty_write_bucket_holds_the_post_back_without_spending_a_429(app_env, control, write_limits):
    """The answer to the first POST says no writes are left; the second request is handed to a delayed
    message before it POSTs, so ARM never has to refuse it. (The app estimates the refill since the answer
    from the bucket's refill rate: ARM's documented one, or as here ARM_REQUEST_LIMITS.)"""
    control.throttling(writes=(1, 0.05))
    first = deliver({"source": "nginx:1.27", "targetTags": [f"nginx:w1-{run_id()}"]})
    assert status(first).state is State.SUCCEEDED
    second = deliver({"source": "nginx:1.27", "targetTags": [f"nginx:w2-{run_id()}"]})
    record = status(second)
    assert record.state is State.RETRYING and record.attempts == 0, record.reason
    assert record.reason.startswith("throttled by ARM (subscription writes bucket), retrying in ")
    assert len(arm_requests(control, "POST", "/importImage")) == 1
    assert [r for r in control.requests() if r["status"] == 429] == []


def test_throttled_looks_are_waited_out_and_never_end_the_watch(app_env, control, runner_factory):
    """More 429s in a row than MAX_POLL_FAILURES allows for 5xx: throttling is ARM's budget, not the
    operation failing, so the watch goes on and the import succeeds with one attempt allowed."""
    control.add_faults("operation", {"delay": 2})
    control.add_faults("poll", *({"status": 429, "retry_after": 1} for _ in range(6)))
    runner = runner_factory(IMPORT_MAX_ATTEMPTS="1")
    request_id = enqueue(app_env, {"source": "nginx:1.27", "targetTags": [f"nginx:looks-{run_id()}"]})
    assert runner.wait_idle(timeout=90)
    record = status(request_id)
    assert record.state is State.SUCCEEDED and record.attempts == 1, record.reason
    assert len([r for r in control.requests() if r["status"] == 429]) == 6


def test_many_imports_at_once_on_tiny_buckets_all_succeed(app_env, control, runner_factory):
    """Twelve imports of a second each at once, with a read bucket of 5 refilling 2 per second and a write
    bucket of 3 refilling 1 per second (ARM's: 250/25 and 200/10): every request succeeds on its first
    attempt; POSTs wait for write tokens on the queue, looks slow down and wait out 429s."""
    imports = 12
    control.throttling(reads=(5, 2), writes=(3, 1))
    control.add_faults("operation", *({"delay": 1} for _ in range(imports)))
    runner = runner_factory(IMPORT_WAIT_SECONDS="5")
    ids = [enqueue(app_env, {"source": "nginx:1.27", "targetTags": [f"nginx:tiny-{run_id()}"]})
           for _ in range(imports)]
    assert runner.wait_idle(timeout=240)
    records = [status(i) for i in ids]
    assert [r.state for r in records] == [State.SUCCEEDED] * imports, [r.reason for r in records]
    assert [r.attempts for r in records] == [1] * imports
    assert dead_letters(app_env) == []
    assert len(arm_requests(control, "POST", "/importImage")) >= imports
    held = [r for r in records if "retrying" in [t["state"] for t in r.transitions]]
    assert held, "three write tokens for twelve imports: some must have waited for the write budget"


def test_a_throttled_retry_is_counted_by_its_code_on_the_imports_metric(app_env, control, otel):
    """The workbook's throttling panel splits retries by code: a 429 from ARM is a `retrying` import with
    ARM's code (or TooManyRequests), on the metric as on the log line."""
    control.add_faults("import", {"status": 429, "retry_after": 1})
    request_id = deliver({"source": "nginx:1.27", "targetTags": [f"nginx:counted-{run_id()}"]})
    assert status(request_id).state is State.RETRYING
    points = {(p.attributes["outcome"], p.attributes.get("code")): p.value
              for p in otel.points("acr_importer.imports")}
    [(outcome, code)] = points
    assert outcome == "retrying" and code == status(request_id).code and code
