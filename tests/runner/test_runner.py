"""The local Functions runner against real Azurite: queue semantics, timers, the Event Grid webhook."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import shutil
import subprocess
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient

from dev import azurite, layout
from dev.runner import Runner
from dev.runner.schedule import ScheduleError, parse_schedule
from tests.fixtures import runner_app

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
APP = "tests.fixtures.runner_app"


@pytest.fixture(scope="module")
def storage(stack_part, tmp_path_factory):
    """Azurite on its layout ports with a throwaway location (reused if one already answers there)."""
    if azurite.is_ready():
        yield
        return
    process = subprocess.Popen(azurite.command(tmp_path_factory.mktemp("state")),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not azurite.is_ready():
            assert process.poll() is None, "azurite exited"
            assert time.monotonic() < deadline, "azurite did not become ready"
            time.sleep(0.1)
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def queue_name(storage) -> str:
    runner_app.received.clear()
    runner_app.max_running = 0
    return f"t{uuid.uuid4().hex[:12]}"


def client(name: str) -> QueueClient:
    """The queue, created if missing as the deployment would: the runner (like the host) never creates a
    trigger's queue."""
    queue = QueueClient.from_connection_string(layout.AZURITE_CONNECTION_STRING, name)
    with contextlib.suppress(ResourceExistsError):
        queue.create_queue()
    return queue


def drain(name: str) -> list[str]:
    return [m.content for m in client(name).receive_messages(max_messages=32)]


def make_runner(queue: str, root: Path = FIXTURES, **env: str) -> Runner:
    settings = {"TEST_QUEUE": queue, "TEST_SCHEDULE": "0 0 0 1 1 *", "AzureWebJobsStorage":
                layout.AZURITE_CONNECTION_STRING, "EVENTGRID_SYSTEM_KEY": "test-system-key", **env}
    return Runner(APP, root=root, env=settings, http_port=0)


def seen(function: str) -> list[dict]:
    return [r for r in runner_app.received if r["function"] == function]


def test_base64_message_is_decoded_and_output_binding_writes_encoded(queue_name):
    with make_runner(queue_name) as runner:
        client(queue_name).send_message(base64.b64encode(b"forward:hello").decode())
        assert runner.wait_idle(15)
    assert [r["body"] for r in seen("echo")] == ["forward:hello"]
    assert drain(f"{queue_name}-out") == [base64.b64encode(b"hello").decode()]
    assert [i.outcome for i in runner.invocations] == ["ok"]


def test_plain_message_is_poisoned_unread_under_base64_encoding(queue_name):
    with make_runner(queue_name) as runner:
        client(queue_name).send_message('{"source": "nginx"}')
        assert runner.wait_idle(15)
    assert seen("echo") == []
    assert drain(f"{queue_name}-poison") == ['{"source": "nginx"}']


def test_plain_message_is_delivered_as_is_with_encoding_none(queue_name, tmp_path):
    host = json.loads((FIXTURES / "host.json").read_text())
    host["extensions"]["queues"]["messageEncoding"] = "none"
    (tmp_path / "host.json").write_text(json.dumps(host))
    with make_runner(queue_name, root=tmp_path) as runner:
        client(queue_name).send_message('forward:{"source": "nginx"}')
        assert runner.wait_idle(15)
    assert [r["body"] for r in seen("echo")] == ['forward:{"source": "nginx"}']
    assert drain(f"{queue_name}-out") == ['{"source": "nginx"}']


def test_failing_message_is_retried_then_poisoned_with_its_original_body(queue_name):
    original = base64.b64encode(b'{"id": "r1"}').decode()
    with make_runner(queue_name) as runner:
        client(f"{queue_name}-fail").send_message(original)
        assert runner.wait_idle(20)
    assert [r["dequeue_count"] for r in seen("always_fails")] == [1, 2, 3]  # host.json maxDequeueCount 3
    assert drain(f"{queue_name}-fail-poison") == [original]
    assert drain(f"{queue_name}-fail") == []
    assert [i.outcome for i in runner.invocations] == ["error"] * 3


def test_batch_size_plus_new_batch_threshold_bounds_concurrency(queue_name):
    with make_runner(queue_name) as runner:
        for seconds in (0.2, 0.8) * 4:  # uneven, so one finishes while its batch-mate still runs
            body = json.dumps({"seconds": seconds}).encode()
            client(f"{queue_name}-slow").send_message(base64.b64encode(body).decode())
        assert runner.wait_idle(20)
    assert len(seen("slow")) == 8
    assert runner_app.max_running == 3  # batchSize 2 + newBatchThreshold 1


def test_lease_is_renewed_while_a_function_outlasts_it(queue_name):
    with make_runner(queue_name) as runner:
        runner._queues["slow"]._lease = type(runner._queues["slow"]._lease)(seconds=2)
        client(f"{queue_name}-slow").send_message(base64.b64encode(b'{"seconds": 3.5}').decode())
        assert runner.wait_idle(20)
    assert [r["dequeue_count"] for r in seen("slow")] == [1]  # never redelivered while running
    assert drain(f"{queue_name}-slow") == []


def test_timer_runs_on_demand_and_on_schedule(queue_name):
    with make_runner(queue_name, TEST_SCHEDULE="*/1 * * * * *") as runner:
        time.sleep(2.5)
        record = runner.trigger_timer("tick")
    assert record.outcome == "ok" and record.trigger == "timer"
    assert len(seen("tick")) >= 3
    assert all(r["past_due"] is False for r in seen("tick"))


def webhook(runner: Runner, function: str, key: str | None, kind: str, body) -> requests.Response:
    params = {"functionName": function} | ({"code": key} if key else {})
    return requests.post(f"http://127.0.0.1:{runner.http_port}/runtime/webhooks/eventgrid", params=params,
                         headers={"aeg-event-type": kind}, json=body, timeout=10)


IMAGE_PUSHED = {
    "id": "831e1650-001e-001b-66ab-eeb76e069631", "topic": layout.SOURCE_ACR.resource_id,
    "subject": "aci-helloworld:v1", "eventType": "Microsoft.ContainerRegistry.ImagePushed",
    "eventTime": "2018-04-25T21:39:47.6549614Z", "dataVersion": "1.0", "metadataVersion": "1",
    "data": {"action": "push", "target": {"repository": "aci-helloworld", "tag": "v1"}},
}


def test_eventgrid_webhook_validation_notification_and_auth(queue_name):
    with make_runner(queue_name) as runner:
        validation = [{"id": "v", "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
                       "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}}]
        answer = webhook(runner, "on_event", "test-system-key", "SubscriptionValidation", validation)
        assert answer.status_code == 200
        assert answer.json() == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}

        second = dict(IMAGE_PUSHED, id="second", subject="aci-helloworld:v2")
        assert webhook(runner, "on_event", "test-system-key", "Notification", [IMAGE_PUSHED, second]).status_code \
            == 202
        assert webhook(runner, "on_event", None, "Notification", [IMAGE_PUSHED]).status_code == 401
        assert webhook(runner, "on_event", "wrong", "Notification", [IMAGE_PUSHED]).status_code == 401
        assert webhook(runner, "no_such_fn", "test-system-key", "Notification", [IMAGE_PUSHED]).status_code == 404
        failing = dict(IMAGE_PUSHED, data={"fail": True})
        assert webhook(runner, "on_event", "test-system-key", "Notification", [failing]).status_code == 500
    events = seen("on_event")
    assert sorted(e["subject"] for e in events[:2]) == ["aci-helloworld:v1", "aci-helloworld:v2"]
    first = next(e for e in events if e["id"] == IMAGE_PUSHED["id"])
    assert first["event_type"] == "Microsoft.ContainerRegistry.ImagePushed"
    assert first["event_time"] == datetime(2018, 4, 25, 21, 39, 47, 654961, tzinfo=UTC)
    assert first["data"]["target"]["tag"] == "v1"
    assert len(events) == 3  # unauthorised and unknown-function requests invoked nothing


BASE = datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)  # a Thursday


@pytest.mark.parametrize(("expression", "expected"), [
    ("*/5 * * * * *", datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)),
    ("0 */5 * * * *", datetime(2026, 1, 1, 0, 5, 0, tzinfo=UTC)),
    ("0 0 9-17 * * MON-FRI", datetime(2026, 1, 1, 9, 0, 0, tzinfo=UTC)),
    ("0 30 9 * * 1", datetime(2026, 1, 5, 9, 30, 0, tzinfo=UTC)),
    ("0 0 0 1 1 *", datetime(2027, 1, 1, tzinfo=UTC)),
    ("0 0 0 29 2 *", datetime(2028, 2, 29, tzinfo=UTC)),
    ("15,45 * * * * *", datetime(2026, 1, 1, 0, 0, 15, tzinfo=UTC)),
    ("5/20 * * * * *", datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)),
    ("0 0 */6 * * *", datetime(2026, 1, 1, 6, 0, 0, tzinfo=UTC)),
    ("0 0 0 13 * FRI", datetime(2026, 2, 13, tzinfo=UTC)),  # day AND weekday, as NCrontab
    ("0 0 12 * DEC SUN", datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC)),
    ("00:00:10", datetime(2026, 1, 1, 0, 0, 10, tzinfo=UTC)),
    ("1.00:00:00", datetime(2026, 1, 2, tzinfo=UTC)),
])
def test_ncrontab_next_occurrence(expression, expected):
    assert parse_schedule(expression).next_after(BASE) == expected


@pytest.mark.parametrize("expression", ["0 */5 * * *", "60 * * * * *", "* * * 0 * *", "*/0 * * * * *",
                                        "a * * * * *", "0 0 0 31 2 *", "5-1 * * * * *"])
def test_ncrontab_refuses_what_the_host_refuses(expression):
    with pytest.raises(ScheduleError):
        parse_schedule(expression).next_after(BASE)


def test_azurite_command_uses_layout_ports_and_loopback(tmp_path):
    argv = azurite.command(tmp_path)
    assert shutil.which(argv[0]) or Path(argv[0]).exists()
    for flag, value in (("--queuePort", layout.AZURITE_QUEUE_PORT), ("--tablePort", layout.AZURITE_TABLE_PORT),
                        ("--blobPort", layout.AZURITE_BLOB_PORT), ("--queueHost", layout.HOST),
                        ("--location", str(tmp_path / "azurite"))):
        assert argv[argv.index(flag) + 1] == str(value)
    assert "--skipApiVersionCheck" in argv


def test_local_settings_values_fill_the_environment_but_do_not_override_it(queue_name, tmp_path, monkeypatch):
    shutil.copy(FIXTURES / "host.json", tmp_path / "host.json")
    (tmp_path / "local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": {
        "TEST_QUEUE": queue_name, "TEST_SCHEDULE": "0 0 0 1 1 *", "FROM_FILE": "file",
        "AzureWebJobsStorage": "DefaultEndpointsProtocol=http;AccountName=wrong;AccountKey=d3Jvbmc=;"}}))
    monkeypatch.setenv("AzureWebJobsStorage", layout.AZURITE_CONNECTION_STRING)
    monkeypatch.delenv("FROM_FILE", raising=False)
    with Runner(APP, root=tmp_path, http_port=None) as runner:
        assert runner.queue_name("echo") == queue_name
        assert os.environ["FROM_FILE"] == "file"
        client(queue_name).send_message(base64.b64encode(b"hi").decode())
        assert runner.wait_idle(15)
    assert [r["body"] for r in seen("echo")] == ["hi"]
    assert "FROM_FILE" not in os.environ  # restored on stop


def test_each_setting_the_environment_overrides_is_named_at_start_without_its_value(queue_name, tmp_path,
                                                                                      monkeypatch, caplog):
    """As Core Tools, the environment beats local.settings.json; unlike a silent skip, the runner says which
    settings it did that for (one line each, naming the setting, never a value: it may be a secret). A
    variable that only repeats the file's value, or one the file does not name, is not an override."""
    shutil.copy(FIXTURES / "host.json", tmp_path / "host.json")
    (tmp_path / "local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": {
        "TEST_QUEUE": queue_name, "TEST_SCHEDULE": "0 0 0 1 1 *", "EVENTGRID_SYSTEM_KEY": "k",
        "AzureWebJobsStorage": layout.AZURITE_CONNECTION_STRING, "SOURCE_CREDENTIALS__HUB__PASSWORD": "in-the-file"}}))
    monkeypatch.setenv("AzureWebJobsStorage", layout.AZURITE_CONNECTION_STRING)  # the same value: no line
    monkeypatch.setenv("SOURCE_CREDENTIALS__HUB__PASSWORD", "from-the-shell-s3cret")
    monkeypatch.setenv("NOT_IN_THE_FILE", "x")
    caplog.set_level(logging.INFO, logger="dev.runner")
    with Runner(APP, root=tmp_path, http_port=None):
        assert os.environ["SOURCE_CREDENTIALS__HUB__PASSWORD"] == "from-the-shell-s3cret"
    lines = [r.getMessage() for r in caplog.records if r.name == "dev.runner"]
    overrides = [line for line in lines if "overrides" in line]
    assert len(overrides) == 1 and "SOURCE_CREDENTIALS__HUB__PASSWORD" in overrides[0], lines
    assert "local.settings.json" in overrides[0]
    assert not any("s3cret" in line or "in-the-file" in line for line in lines)
    caplog.clear()
    monkeypatch.setenv("SOURCE_CREDENTIALS__HUB__PASSWORD", "in-the-file")
    with Runner(APP, root=tmp_path, http_port=None):
        pass
    assert not [r for r in caplog.records if "overrides" in r.getMessage()]


def test_unresolved_setting_fails_start_with_its_name(queue_name, monkeypatch):
    monkeypatch.delenv("TEST_SCHEDULE", raising=False)
    runner = Runner(APP, root=FIXTURES, env={"TEST_QUEUE": queue_name}, http_port=None)
    with pytest.raises(ValueError, match="TEST_SCHEDULE"):
        runner.start()


def test_eventgrid_accepts_a_single_cloudevent(queue_name):
    cloud_event = {"specversion": "1.0", "id": "ce-1", "source": layout.SOURCE_ACR.resource_id,
                   "type": "Microsoft.ContainerRegistry.ImagePushed", "subject": "app:1",
                   "time": "2024-05-01T10:00:00Z", "data": {"target": {"repository": "app", "tag": "1"}}}
    with make_runner(queue_name) as runner:
        assert webhook(runner, "on_event", "test-system-key", "Notification", cloud_event).status_code == 202
    [event] = seen("on_event")
    assert event["kind"] == "CloudEvent"  # the worker's converter, not a mapping onto EventGridEvent
    assert (event["id"], event["subject"], event["event_type"]) == (
        "ce-1", "app:1", "Microsoft.ContainerRegistry.ImagePushed")
    assert event["event_time"] == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
