"""The runner's storage as the host uses it: identity-based AzureWebJobsStorage (what the templates deploy) over
HTTPS with OAuth, trigger queues the host waits for instead of creating, and timers that keep their schedule
status and a singleton listener lock in the host's blob container."""

from __future__ import annotations

import contextlib
import itertools
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableClient
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient

from dev import layout, seed
from dev.app_settings import create_app_queues, identity_storage_settings
from dev.runner import Runner
from dev.runner.config import ConfigError
from tests.fixtures import runner_app

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
APP = "tests.fixtures.runner_app"
STORAGE_AUDIENCE = "https://storage.azure.com"


def wait_for(condition, timeout: float = 60.0, what: str = "condition") -> None:
    """Poll until `condition()` holds: the suite runs on a loaded machine, so no fixed sleeps."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def seen(function: str) -> list[dict]:
    return [r for r in runner_app.received if r["function"] == function]


# --- identity-based AzureWebJobsStorage ------------------------------------------------------------------------

@pytest.fixture(params=[layout.USER_ASSIGNED_IDENTITY.client_id], ids=["user-assigned"])
def identity_env(request, app_env, monkeypatch):
    """The app's settings with AzureWebJobsStorage in its identity-based form (a user-assigned identity unless
    the test asks for the system-assigned one), and the queues the deployment creates, on the HTTPS Azurite that
    takes bearer tokens."""
    from shared import app_context

    env = {k: v for k, v in app_env.items() if k != "AzureWebJobsStorage"}
    env.update(identity_storage_settings(request.param))
    monkeypatch.delenv("AzureWebJobsStorage")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    create_app_queues(env["IMPORT_QUEUE"], layout.AZURITE_IDENTITY_CONNECTION_STRING)
    app_context.reset()
    yield env
    app_context.reset()


def identity_queue(name: str) -> QueueClient:
    """Shared-key access to the identity Azurite, to look at what the runner and the app did there."""
    return QueueClient.from_connection_string(layout.AZURITE_IDENTITY_CONNECTION_STRING, name,
                                              connection_verify=str(layout.CA_CERT))


def storage_tokens(control) -> list[dict]:
    return [r for r in control.requests("identity") if r["query"].get("resource") == STORAGE_AUDIENCE]


@pytest.mark.parametrize("identity_env", [layout.USER_ASSIGNED_IDENTITY.client_id, None], indirect=True,
                         ids=["user-assigned", "system-assigned"])
def test_an_import_runs_end_to_end_on_identity_based_storage(identity_env, control):
    from shared.azure.status import StatusStore
    from shared.core.outcome import State

    tag = uuid.uuid4().hex[:8]
    body = {"source": "docker.io/library/hello-world:latest", "targetTags": [f"id-hello:{tag}"]}
    with Runner("function_app", env=identity_env, http_port=None) as runner:
        identity_queue(identity_env["IMPORT_QUEUE"]).send_message(json.dumps(body))
        assert runner.wait_idle(timeout=120)
        invocations = [i for i in runner.invocations if i.function == "import_image"]
    assert [i.outcome for i in invocations] == ["ok"]
    rows = StatusStore(identity_env["IMPORT_STATUS_TABLE"]).list()  # read with the identity too
    assert [(r.state, r.target_tags) for r in rows] == [(State.SUCCEEDED, [f"id-hello:{tag}"])]
    # the runner's listener and the app's clients asked for storage tokens as the configured identity only
    tokens = storage_tokens(control)
    assert tokens and {t["query"].get("client_id") for t in tokens} == {
        identity_env.get("AzureWebJobsStorage__clientId")}
    # and the connection-string Azurite never saw the status table
    with pytest.raises(ResourceNotFoundError):
        next(TableClient.from_connection_string(layout.AZURITE_CONNECTION_STRING,
                                                identity_env["IMPORT_STATUS_TABLE"]).list_entities(), None)


def test_a_refresh_runs_end_to_end_on_identity_based_storage(identity_env, control, tmp_path):
    from shared.azure.status import StatusStore
    from shared.core.outcome import State
    from shared.refresh.run import RefreshLog

    uid = uuid.uuid4().hex[:8]
    repo = f"id-{uid}/base"
    digest = seed.push_image(seed.admin_client("mcr.microsoft.com"), repo, "v1",
                             seed.build_image(repo, ["linux/amd64"], version=1))
    tracked = tmp_path / "tracked.json"
    tracked.write_text(json.dumps({"version": 1, "images": [
        {"source": f"mcr.microsoft.com/{repo}", "tags": ["v1"], "targetPrefix": f"id{uid}/"}]}))
    env = {**identity_env, "TRACKED_IMAGES": str(tracked), "AzureFunctionsWebHost__hostid": f"id-{uid}"}
    with Runner("function_app", env=env, http_port=None) as runner:
        assert runner.trigger_timer("refresh_tracked_images").outcome == "ok"
        assert runner.wait_idle(timeout=120)
        log = RefreshLog(identity_env["IMPORT_STATUS_TABLE"]).latest()
    assert (log["missing"], log["enqueued"], log["errors"]) == (1, 1, 0), log
    assert [r.state for r in StatusStore(identity_env["IMPORT_STATUS_TABLE"]).list()] == [State.SUCCEEDED]
    found = seed.admin_client(layout.TARGET_ACR.login_server).head_manifest(f"id{uid}/{repo}", "v1")
    assert found and found.digest == digest
    # the timers' lock and status live in the identity account's host container, reached with a token
    blobs = BlobServiceClient.from_connection_string(layout.AZURITE_IDENTITY_CONNECTION_STRING,
                                                     connection_verify=str(layout.CA_CERT))
    names = {b.name for b in blobs.get_container_client("azure-webjobs-hosts").list_blobs()}
    assert f"locks/id-{uid}/Host.Functions.refresh_tracked_images.Listener" in names
    assert f"timers/id-{uid}/Host.Functions.refresh_tracked_images/status" in names


def test_storage_refuses_a_token_for_another_audience(stack):
    """What makes the identity path worth running: Azurite (`--oauth basic`) checks the audience, as Storage
    does, so a token for ARM is refused."""
    import requests
    from azure.identity import ManagedIdentityCredential

    with pytest.MonkeyPatch.context() as patch:
        for name, value in layout.stack_env().items():
            patch.setenv(name, value)
        credential = ManagedIdentityCredential(client_id=layout.USER_ASSIGNED_IDENTITY.client_id)
        arm = credential.get_token("https://management.azure.com/.default").token
        storage = credential.get_token(f"{STORAGE_AUDIENCE}/.default").token
    url = f"{layout.AZURITE_IDENTITY_URIS['queue']}?comp=list"
    answers = {name: requests.get(url, headers={"Authorization": f"Bearer {token}", "x-ms-version": "2021-02-12"},
                                  verify=str(layout.CA_CERT), timeout=10) for name, token in (("arm", arm),
                                                                                              ("storage", storage))}
    assert answers["arm"].status_code == 403 and "AuthenticationFailed" in answers["arm"].text
    assert answers["storage"].status_code == 200


# Identity-based settings the runner refuses at start-up, naming the setting: the class of settings a host
# would refuse or that would send a token where it must not go.
REFUSED = [
    ({"AzureWebJobsStorage__queueServiceUri": "http://127.0.0.1:1/devstoreaccount1"}, "must be an https://"),
    ({"AzureWebJobsStorage__queueServiceUri": "https://127.0.0.1:1/a", "AzureWebJobsStorage__credential": "secret"},
     "AzureWebJobsStorage__credential='secret' is not served"),
    ({"AzureWebJobsStorage__queueServiceUri": "https://127.0.0.1:1/a", "AzureWebJobsStorage__clientId": "a",
      "AzureWebJobsStorage__managedIdentityResourceId": "/subscriptions/x"}, "only one of __clientId"),
    ({"AzureWebJobsStorage__queueServiceUri": "https://127.0.0.1:1/a",
      "AzureWebJobsStorage__managedIdentityResourceId": "/subscriptions/x"}, "by __clientId only"),
    ({"AzureWebJobsStorage__credential": "managedidentity"}, "name no service"),
    ({"AzureWebJobsStorage__queueServiceUri": "https://127.0.0.1:1/a"}, "blobServiceUri"),  # timers need blobs
    ({}, "connection 'AzureWebJobsStorage' is not set"),
]


@pytest.mark.parametrize(("settings", "reason"), REFUSED, ids=[r for _, r in REFUSED])
def test_unusable_identity_based_settings_are_refused_at_start_naming_the_setting(settings, reason, monkeypatch):
    for name in [k for k in __import__("os").environ if k.startswith("AzureWebJobsStorage")]:
        monkeypatch.delenv(name)
    env = {"TEST_QUEUE": "q-refused", "TEST_SCHEDULE": "0 0 0 1 1 *", "EVENTGRID_SYSTEM_KEY": "k", **settings}
    with pytest.raises(ConfigError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        Runner(APP, root=FIXTURES, env=env, http_port=None).start()


# --- trigger queues that do not exist --------------------------------------------------------------------------

def fixture_runner(queue: str, **env: str) -> Runner:
    settings = {"TEST_QUEUE": queue, "TEST_SCHEDULE": "0 0 0 1 1 *", "AzureWebJobsStorage":
                layout.AZURITE_CONNECTION_STRING, "EVENTGRID_SYSTEM_KEY": "test-system-key",
                "AzureFunctionsWebHost__hostid": f"t-{uuid.uuid4().hex[:12]}", **env}
    return Runner(APP, root=FIXTURES, env=settings, http_port=None)


@pytest.fixture
def fresh_queue(stack) -> str:
    runner_app.received.clear()
    return f"w{uuid.uuid4().hex[:12]}"


@pytest.mark.parametrize("suffix", ["", "-fail", "-slow"])
def test_the_runner_waits_for_a_missing_trigger_queue_without_creating_it(fresh_queue, suffix):
    name = fresh_queue + suffix
    client = QueueClient.from_connection_string(layout.AZURITE_CONNECTION_STRING, name)
    function = {"": "echo", "-fail": "always_fails", "-slow": "slow"}[suffix]
    body = {"": "aGVsbG8=", "-fail": "aGVsbG8=", "-slow": "eyJzZWNvbmRzIjogMH0="}[suffix]
    with fixture_runner(fresh_queue) as runner:
        listener = runner.queue_listener(function)
        wait_for(lambda: listener.missing_polls >= 2, what="the listener to find the queue missing twice")
        with pytest.raises(ResourceNotFoundError):
            client.get_queue_properties()  # still missing: the runner did not create it
        assert runner.wait_idle(5), "a missing queue is an empty one"
        client.create_queue()
        client.send_message(body)
        wait_for(lambda: seen(function), what=f"{function} to receive the message once the queue exists")


def test_the_poison_queue_is_created_when_the_first_message_is_moved_there(fresh_queue):
    client = QueueClient.from_connection_string(layout.AZURITE_CONNECTION_STRING, f"{fresh_queue}-fail")
    poison = QueueClient.from_connection_string(layout.AZURITE_CONNECTION_STRING, f"{fresh_queue}-fail-poison")
    client.create_queue()
    with fixture_runner(fresh_queue) as runner:
        client.send_message("cG9pc29u")
        wait_for(lambda: len(seen("always_fails")) == 3, what="three attempts (maxDequeueCount 3)")
        assert runner.wait_idle(30)
    assert [m.content for m in poison.peek_messages()] == ["cG9pc29u"]


# --- timers: schedule monitor (past due) and the singleton listener lock --------------------------------------

def status_blob(host: str, function: str = "tick"):
    service = BlobServiceClient.from_connection_string(layout.AZURITE_CONNECTION_STRING)
    with contextlib.suppress(ResourceExistsError):
        service.create_container("azure-webjobs-hosts")
    return service.get_blob_client("azure-webjobs-hosts", f"timers/{host}/Host.Functions.{function}/status")


def iso(moment: datetime) -> str:
    return moment.isoformat()


NEW_YEAR = datetime(datetime.now(UTC).year + 1, 1, 1, tzinfo=UTC)   # TEST_SCHEDULE: once a year, on 1 January
LAST_NEW_YEAR = NEW_YEAR.replace(year=NEW_YEAR.year - 1)
# (recorded status or None, expected past-due run at start). "Down over an occurrence": Next is behind us.
STATUSES = {
    "down over an occurrence": ({"Last": iso(LAST_NEW_YEAR.replace(year=LAST_NEW_YEAR.year - 1)),
                                 "Next": iso(LAST_NEW_YEAR), "LastUpdated": iso(LAST_NEW_YEAR - timedelta(days=365))},
                                True),
    "down over several occurrences": ({"Last": iso(LAST_NEW_YEAR.replace(year=LAST_NEW_YEAR.year - 3)),
                                       "Next": iso(LAST_NEW_YEAR.replace(year=LAST_NEW_YEAR.year - 2)),
                                       "LastUpdated": iso(LAST_NEW_YEAR.replace(year=LAST_NEW_YEAR.year - 3))}, True),
    "schedule changed while down": ({"Last": iso(LAST_NEW_YEAR - timedelta(days=3)),
                                     "Next": iso(LAST_NEW_YEAR - timedelta(days=2)),
                                     "LastUpdated": iso(LAST_NEW_YEAR - timedelta(days=3))}, True),
    "never run, first occurrence missed": ({"Last": "0001-01-01T00:00:00+00:00", "Next": iso(LAST_NEW_YEAR),
                                            "LastUpdated": iso(LAST_NEW_YEAR - timedelta(days=10))}, True),
    "up to date": ({"Last": iso(LAST_NEW_YEAR), "Next": iso(NEW_YEAR), "LastUpdated": iso(LAST_NEW_YEAR)}, False),
    "no status yet": (None, False),
    "unreadable status": ("{not json", False),
}


@pytest.mark.parametrize("case", list(STATUSES))
def test_a_missed_occurrence_runs_once_past_due_at_start(fresh_queue, case):
    recorded, past_due = STATUSES[case]
    host = f"t-{uuid.uuid4().hex[:12]}"
    blob = status_blob(host)
    if recorded is not None:
        blob.upload_blob(recorded if isinstance(recorded, str) else json.dumps(recorded), overwrite=True)
    with fixture_runner(fresh_queue, AzureFunctionsWebHost__hostid=host) as runner:
        timer = runner.timer("tick")
        wait_for(timer.ready.is_set, what="the timer listener to start")
        ran = seen("tick")
    assert ran == ([{"function": "tick", "past_due": True}] if past_due else [])
    status = json.loads(blob.download_blob().readall())
    assert datetime.fromisoformat(status["Next"]) == NEW_YEAR  # the next occurrence, missed ones not queued up
    if past_due:
        assert datetime.fromisoformat(status["Last"]) > LAST_NEW_YEAR


def test_two_instances_never_run_one_schedule_at_once_and_the_second_takes_over(fresh_queue, monkeypatch):
    host = f"t-{uuid.uuid4().hex[:12]}"
    first = fixture_runner(fresh_queue, AzureFunctionsWebHost__hostid=host, TEST_SCHEDULE="*/1 * * * * *")
    for name, value in first.env.items():  # two runners in one process: each restores what it found at start,
        monkeypatch.setenv(name, value)    # so the test owns the environment and puts it back
    first.start()
    second, running = None, [first]
    try:
        wait_for(lambda: first.timer("tick").scheduled_runs >= 1, what="the first instance to fire")
        second = fixture_runner(fresh_queue, AzureFunctionsWebHost__hostid=host,
                                TEST_SCHEDULE="*/1 * * * * *").start()
        running.append(second)
        wait_for(lambda: second.timer("tick").lock_attempts >= 3, what="the second instance to try the lock")
        wait_for(lambda: first.timer("tick").scheduled_runs >= 3, what="more occurrences")
        assert second.timer("tick").scheduled_runs == 0 and not second.timer("tick").listening
        running.remove(first)
        first.stop()  # releases the lock: the second takes over at its next recovery poll
        wait_for(lambda: second.timer("tick").scheduled_runs >= 2, what="the second instance to take over")
    finally:
        for runner in running:
            runner.stop()
    runs = sorted((i for r in (first, second) for i in r.invocations if i.function == "tick"),
                  key=lambda i: i.started)
    for earlier, later in itertools.pairwise(runs):  # never two at once
        assert later.started >= earlier.started + timedelta(seconds=earlier.duration), (earlier, later)


def test_refresh_on_two_instances_runs_once_per_occurrence(app_env, monkeypatch, tmp_path):
    """The app's own timer on two runners sharing one storage account and host id: one instance runs the
    refresh schedule, the other never fires it, and no two refreshes overlap."""
    from shared import app_context
    from shared.refresh.run import RefreshLog

    uid = uuid.uuid4().hex[:8]
    tracked = tmp_path / "tracked.json"
    tracked.write_text(json.dumps({"version": 1, "images": []}))
    env = {**app_env, "TRACKED_IMAGES": str(tracked), "REFRESH_SCHEDULE": "*/2 * * * * *",
           "AzureFunctionsWebHost__hostid": f"r-{uid}"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    app_context.reset()
    runners = [Runner("function_app", env=env, http_port=None).start()]
    try:
        wait_for(lambda: runners[0].timer("refresh_tracked_images").scheduled_runs >= 1, what="a first refresh")
        runners.append(Runner("function_app", env=env, http_port=None).start())
        other = runners[1].timer("refresh_tracked_images")
        wait_for(lambda: other.lock_attempts >= 1 and runners[0].timer("refresh_tracked_images").scheduled_runs >= 3,
                 what="more occurrences with both instances up")
        assert other.scheduled_runs == 0 and not other.listening
    finally:
        for runner in runners:
            runner.stop()
        app_context.reset()
    runs = sorted((i for r in runners for i in r.invocations if i.function == "refresh_tracked_images"),
                  key=lambda i: i.started)
    assert {r.outcome for r in runs} == {"ok"} and len(runs) >= 3
    for earlier, later in itertools.pairwise(runs):
        assert later.started >= earlier.started + timedelta(seconds=earlier.duration), (earlier, later)
    assert RefreshLog(app_env["IMPORT_STATUS_TABLE"]).latest() is not None
