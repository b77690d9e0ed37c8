"""Imports that outlive a function invocation: handed over through delayed follow-up messages, bounded by a
deadline, never holding a worker thread while ACR copies. Through the runner and the queue, like the host."""

from __future__ import annotations

import json
import uuid

from azure.storage.queue import QueueClient

from dev import layout, oci, seed
from shared.azure.status import StatusStore
from shared.core.outcome import State
from tests.helpers import deliver, next_retry


def enqueue(app_env, doc: dict) -> str:
    doc.setdefault("id", f"long-{uuid.uuid4().hex[:10]}")
    QueueClient.from_connection_string(layout.AZURITE_CONNECTION_STRING, app_env["IMPORT_QUEUE"]).send_message(
        json.dumps(doc))
    return doc["id"]


def status(app_env, request_id: str):
    return StatusStore(app_env["IMPORT_STATUS_TABLE"]).get(request_id)


def test_an_import_longer_than_the_wait_budget_completes_through_a_follow_up(app_env, control, runner_factory,
                                                                            stack):
    control.add_faults("operation", {"delay": 3})
    runner = runner_factory(IMPORT_WAIT_SECONDS="1")
    tag = f"slow-{uuid.uuid4().hex[:6]}"
    request_id = enqueue(app_env, {"source": "docker.io/library/hello-world:latest", "targetTags": [f"hw:{tag}"]})
    assert runner.wait_idle(timeout=60)
    record = status(app_env, request_id)
    assert record.state is State.SUCCEEDED, record.reason
    assert record.checks >= 2, "the import should have been handed over at least twice"
    invocations = [i for i in runner.invocations if i.function == "import_image"]
    assert len(invocations) >= 2 and all(i.outcome == "ok" for i in invocations)
    target = oci.inspect_image(seed.admin_client(layout.TARGET_ACR.login_server), "hw", tag)
    assert target.digest == stack.digest("docker.io", "library/hello-world", "latest")
    assert len([r for r in control.requests() if r["path"].endswith("/importImage")]) == 1


def test_an_import_that_never_finishes_fails_at_the_deadline(app_env, control, runner_factory):
    control.add_faults("operation", {"hang": True})
    runner = runner_factory(IMPORT_WAIT_SECONDS="0.5", IMPORT_DEADLINE_SECONDS="3")
    request_id = enqueue(app_env, {"source": "nginx:1.27", "targetTags": [f"hang:{uuid.uuid4().hex[:6]}"]})
    assert runner.wait_idle(timeout=60)
    record = status(app_env, request_id)
    assert record.state is State.FAILED and record.code == "ImportTimedOut"
    assert "IMPORT_DEADLINE_SECONDS=3" in record.reason
    letters = QueueClient.from_connection_string(layout.AZURITE_CONNECTION_STRING,
                                                 f"{app_env['IMPORT_QUEUE']}-rejected").peek_messages()
    assert [json.loads(m.content)["id"] for m in letters] == [request_id]


def test_arm_retry_after_is_read_by_the_one_parser_and_bounded(app_env, control):
    """ARM's Retry-After (on the importImage 202 and on each look at the operation) goes through
    shared/core/failures.py's parser like a registry's: bounded by MAX_RETRY_AFTER_SECONDS, not taken as sent."""
    from shared.azure.arm import AcrManagement
    from shared.core.failures import MAX_RETRY_AFTER_SECONDS
    from shared.core.request import ImportRequest, parse_request
    from shared.core.settings import load_settings
    from shared.imports.engine import import_parameters

    control.update_settings(retry_after=99999999999)
    control.add_faults("operation", {"delay": 2})
    settings = load_settings()
    request = parse_request(json.dumps({"source": "docker.io/library/hello-world:latest",
                                        "targetTags": [f"hw:ra-{uuid.uuid4().hex[:6]}"]}), settings)
    assert isinstance(request, ImportRequest)
    arm = AcrManagement(settings)
    url, retry_after = arm.start_import(request.target, import_parameters(request, None))
    assert url is not None and retry_after == MAX_RETRY_AFTER_SECONDS
    assert arm.operation_status(request.target, url).retry_after == MAX_RETRY_AFTER_SECONDS


def test_many_slow_imports_run_at_once_on_two_threads(app_env, control, runner_factory):
    """Eight imports of 5 s each on a two-thread worker: ACR runs them side by side because no thread waits."""
    control.add_faults("operation", *({"delay": 5} for _ in range(8)))
    runner = runner_factory(IMPORT_WAIT_SECONDS="0.3", PYTHON_THREADPOOL_THREAD_COUNT="2")
    ids = [enqueue(app_env, {"source": "nginx:1.27", "targetTags": [f"many:{uuid.uuid4().hex[:6]}"]})
           for _ in range(8)]
    assert runner.wait_idle(timeout=120)
    assert all(status(app_env, i).state is State.SUCCEEDED for i in ids)
    operations = [op for op in control.operations() if op["ended"]]
    most_at_once = max(sum(1 for other in operations if other["started"] <= op["started"] < other["ended"])
                       for op in operations)
    assert most_at_once >= 4, f"at most {most_at_once} imports ran at once on 2 threads"


def test_a_duplicate_follow_up_does_no_harm(app_env, control, monkeypatch):
    """Deliver the same follow-up twice (at-least-once delivery): one import, one success, no second letter."""
    from shared import app_context

    control.add_faults("operation", {"delay": 2})
    monkeypatch.setenv("IMPORT_WAIT_SECONDS", "0.5")
    app_context.reset()
    request_id = deliver({"source": "nginx:1.27", "targetTags": [f"dup:{uuid.uuid4().hex[:6]}"]})
    assert status(app_env, request_id).state is State.RUNNING
    follow_up = next_retry(app_env)
    assert "operation" not in json.loads(follow_up), "the operation is on the status row, not on the message"
    assert status(app_env, request_id).checks >= 1 and status(app_env, request_id).operation
    monkeypatch.setenv("IMPORT_WAIT_SECONDS", "10")
    app_context.reset()
    deliver(follow_up)
    deliver(follow_up, dequeue_count=2)
    record = status(app_env, request_id)
    assert record.state is State.SUCCEEDED
    assert len([r for r in control.requests() if r["path"].endswith("/importImage")]) == 1


def test_a_follow_up_naming_a_foreign_operation_url_is_refused(app_env, control):
    """A queue writer cannot make the app send its ARM token anywhere: the operation is never read from a
    message (tests/imports/test_request_state.py covers the classes of forged URL)."""
    doc = {"id": f"evil-{uuid.uuid4().hex[:6]}", "source": "nginx:1.27",
           "operation": {"url": "https://attacker.example/subscriptions/x/operationResults/1",
                         "startedAt": "2026-11-28T00:00:00+00:00", "checks": 1}}
    deliver(doc)
    record = status(app_env, doc["id"])
    assert record.state is State.REJECTED and record.reason.startswith("operation: ")
    assert control.requests() == []


def test_operation_looks_failing_in_a_row_end_the_watch_with_the_statuses(app_env, control, runner_factory):
    """ARM answering 5xx to every look at a running import no longer counts as "still running" until the
    2-hour deadline: after MAX_POLL_FAILURES looks in a row the attempt fails (transient, naming the operation
    and the statuses), and with one attempt allowed the request ends failed in seconds."""
    from shared.imports.worker import MAX_POLL_FAILURES

    control.add_faults("operation", {"hang": True})
    control.add_faults("poll", *({"status": status} for status in (500, 503, 502, 503, 500, 503)))
    runner = runner_factory(IMPORT_MAX_ATTEMPTS="1", IMPORT_DEADLINE_SECONDS="7200", IMPORT_WAIT_SECONDS="20")
    request_id = enqueue(app_env, {"source": "nginx:1.27", "targetTags": [f"poll5xx:{uuid.uuid4().hex[:6]}"]})
    assert runner.wait_idle(timeout=60)
    record = status(app_env, request_id)
    assert record.state is State.FAILED and record.code == "OperationPollFailed", record.reason
    assert MAX_POLL_FAILURES == 4  # azure-core's poller: 1 answer + retry_status=3 retries
    assert "4 looks in a row" in record.reason and "HTTP 500, HTTP 503, HTTP 502, HTTP 503" in record.reason
    assert "registries-" in record.reason  # the operation's id, as ARM named it
    looks = [r for r in control.requests() if "/operationResults/" in r["path"]]
    assert len(looks) == MAX_POLL_FAILURES


def test_fewer_failed_looks_in_a_row_than_the_bound_are_waited_out(app_env, control, runner_factory, stack):
    """Three 5xx looks in a row (one fewer than the bound), then ARM answers again: the import succeeds, and the
    row's count of failed looks is cleared by the good answer."""
    control.add_faults("operation", {"delay": 2})
    control.add_faults("poll", {"status": 503}, {"status": 500}, {"status": 503})
    runner = runner_factory(IMPORT_MAX_ATTEMPTS="1", IMPORT_POLL_INTERVAL_SECONDS="0.2")
    tag = f"poll-ok-{uuid.uuid4().hex[:6]}"
    request_id = enqueue(app_env, {"source": "docker.io/library/hello-world:latest", "targetTags": [f"hw:{tag}"]})
    assert runner.wait_idle(timeout=60)
    record = status(app_env, request_id)
    assert record.state is State.SUCCEEDED, record.reason
    assert record.poll_failures == ""
