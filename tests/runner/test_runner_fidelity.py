"""The runner as strict as the host and the Python worker: trigger inputs built by `azure.functions`' own
converters, functionTimeout restarting the worker, the worker's thread pool default (issue 12)."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from azure.storage.queue import QueueServiceClient

from dev import layout
from dev.runner import Runner
from dev.runner.inputs import queue_datums, queue_input
from tests.fixtures import runner_app
from tests.runner import test_runner as base
from tests.runner.test_runner import APP, FIXTURES, IMAGE_PUSHED, client, drain, make_runner, seen, webhook

storage = base.storage        # Azurite for this module too
queue_name = base.queue_name  # a fresh queue name, the fixture app's records cleared

KEY = "test-system-key"


def host_json(tmp_path: Path, **overrides) -> Path:
    """The fixture host.json with some top-level values replaced, in a root of its own."""
    config = json.loads((FIXTURES / "host.json").read_text())
    config.update(overrides)
    (tmp_path / "host.json").write_text(json.dumps(config))
    return tmp_path


# --- Event Grid: both schemas through the real converter ------------------------------------------------

def test_a_cloudevent_reaches_the_function_as_the_converter_makes_it(queue_name):
    cloud = {"specversion": "1.0", "id": "ce-7", "source": IMAGE_PUSHED["topic"], "type": IMAGE_PUSHED["eventType"],
             "subject": "app:7", "time": "2024-05-01T10:00:00.1234567Z", "datacontenttype": "application/json",
             "data": {"target": {"repository": "app", "tag": "7"}}}
    with make_runner(queue_name) as runner:
        assert webhook(runner, "on_event", KEY, "Notification", [cloud]).status_code == 202
        assert webhook(runner, "on_event", KEY, "Notification", [IMAGE_PUSHED]).status_code == 202
    cloud_seen, grid_seen = seen("on_event")
    assert (cloud_seen["kind"], grid_seen["kind"]) == ("CloudEvent", "EventGridEvent")
    assert cloud_seen["event_time"] == datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)  # 7 digits cut to 6
    assert cloud_seen["data"] == cloud["data"]


@pytest.mark.parametrize("bad_time", ["garbage", "2024-13-01T00:00:00Z", 20240501, ["2024-05-01"]])
@pytest.mark.parametrize("schema", ["eventgrid", "cloudevents"])
def test_an_event_the_converter_cannot_read_fails_before_the_function_runs(queue_name, bad_time, schema):
    """The worker decodes the datum before calling the function: a time it cannot parse fails the
    invocation (so the webhook answers 500 and Event Grid redelivers), and the function never sees it."""
    if schema == "eventgrid":
        event = dict(IMAGE_PUSHED, eventTime=bad_time)
    else:
        event = {"specversion": "1.0", "id": "ce-bad", "source": "/x", "type": "t", "time": bad_time, "data": {}}
    with make_runner(queue_name) as runner:
        assert webhook(runner, "on_event", KEY, "Notification", [event]).status_code == 500
    assert seen("on_event") == []
    [invocation] = runner.invocations
    assert invocation.outcome == "error"


# --- HTTP: the request as the host's RpcHttp and the converter build it ------------------------------------

def test_http_request_is_built_as_the_host_sends_it(queue_name):
    with make_runner(queue_name) as runner:
        answer = requests.post(f"http://127.0.0.1:{runner.http_port}/api/echo/42?a=1&empty=&a=2",
                               headers={"X-Custom-Header": "v"}, data=b"\x00\xffbody", timeout=10)
        assert answer.status_code == 200
        assert requests.get(f"http://127.0.0.1:{runner.http_port}/api/echo", timeout=10).status_code == 200
    with_body, without_body = seen("http_echo")
    assert with_body["params"] == {"a": "1,2"}  # empty values dropped, repeated ones joined (StringValues)
    assert with_body["route_params"] == {"id": "42"}
    assert with_body["headers"]["x-custom-header"] == "v"
    assert with_body["body"] == b"\x00\xffbody" and with_body["method"] == "POST"
    assert without_body["body"] == b"" and without_body["route_params"] == {}


# --- queue: the message and its metadata as the host's datums ----------------------------------------------

def test_queue_metadata_is_json_as_the_host_serialises_it():
    """ToRpc: strings stay strings, bytes stay bytes, everything else (DequeueCount, the times) is JSON."""
    moment = datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)
    value, metadata = queue_datums(b"\xff\xfe", id="m1", dequeue_count=3, pop_receipt="pr",
                                   insertion_time=moment, expiration_time=moment, next_visible_time=None)
    assert (value.type, value.value) == ("bytes", b"\xff\xfe")  # not UTF-8: bytes; "QueueTrigger" absent
    assert {k: d.type for k, d in metadata.items()} == {
        "Id": "string", "DequeueCount": "json", "InsertionTime": "json", "ExpirationTime": "json",
        "NextVisibleTime": None, "PopReceipt": "string"}
    message = queue_input(b"text", id="m1", dequeue_count=3, pop_receipt="pr", insertion_time=moment,
                          expiration_time=moment, next_visible_time=None)
    assert (message.get_body(), message.dequeue_count, message.insertion_time, message.time_next_visible) == (
        b"text", 3, moment, None)


# --- functionTimeout: the worker restarts, every invocation in flight ends --------------------------------

@pytest.fixture
def released():
    runner_app.stuck_release.clear()
    yield runner_app.stuck_release
    runner_app.stuck_release.set()  # let the detached threads of the killed worker end


def test_function_timeout_restarts_the_worker_and_messages_come_back(queue_name, tmp_path, released):
    root = host_json(tmp_path, functionTimeout="00:00:02")
    stuck = client(f"{queue_name}-stuck")  # client() creates it, as the deployment would
    for n in (1, 2):  # both on the queue before start: one receive of batchSize 2 takes both
        stuck.send_message(base64.b64encode(json.dumps({"hang": True, "n": n}).encode()).decode())
    with make_runner(queue_name, root=root) as runner:
        assert runner.wait_idle(60)
        restarts = runner._invoker.restarts
    invocations = [i for i in runner.invocations if i.function == "stuck"]
    first = [i for i in invocations if i.outcome == "error"]
    assert len(first) == 2
    assert sorted((i.timed_out, i.abandoned) for i in first) == [(False, True), (True, False)]
    assert restarts == 1
    assert sorted(r["dequeue_count"] for r in seen("stuck")) == [1, 1, 2, 2]
    assert [i.outcome for i in invocations].count("ok") == 2
    assert drain(f"{queue_name}-stuck") == []
    assert not any(q.name == f"{queue_name}-stuck-poison" for q in QueueServiceClient.from_connection_string(
        layout.AZURITE_CONNECTION_STRING).list_queues(name_starts_with=queue_name))


# --- the worker's thread pool ------------------------------------------------------------------------------

@pytest.mark.parametrize(("setting", "expected"), [
    (None, min(32, (os.cpu_count() or 1) + 4)),   # ThreadPoolExecutor(max_workers=None)
    ("7", 7), ("1", 1),
    ("0", min(32, (os.cpu_count() or 1) + 4)),     # invalid: the worker logs it and keeps its default
    ("many", min(32, (os.cpu_count() or 1) + 4)),
])
def test_thread_pool_is_the_workers(queue_name, monkeypatch, setting, expected):
    monkeypatch.delenv("PYTHON_THREADPOOL_THREAD_COUNT", raising=False)
    env = {} if setting is None else {"PYTHON_THREADPOOL_THREAD_COUNT": setting}
    runner = Runner(APP, root=FIXTURES, http_port=None, env={
        "TEST_QUEUE": queue_name, "TEST_SCHEDULE": "0 0 0 1 1 *", **env,
        "AzureWebJobsStorage": make_runner(queue_name).env["AzureWebJobsStorage"]})
    with runner:
        assert runner._invoker.thread_count == expected
