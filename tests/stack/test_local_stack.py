"""End to end through the local runner and the queue on Azurite, never by calling the engine directly:
requests go on the queue, the runner drives `function_app` as the host would, the Azure stand-in really
copies between docker-registry processes, and we read the target registry to see what arrived."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from azure.storage.queue import QueueClient

from dev import demo, layout, oci, seed
from shared.azure.status import StatusStore
from shared.core.outcome import State


@pytest.fixture
def runner(app_env):
    from dev.runner import Runner
    from shared import app_context

    app_context.reset()
    with Runner("function_app", env=app_env, http_port=0) as running:
        yield running
    app_context.reset()


def enqueue(app_env, doc: dict, *, encoding: str = "base64") -> str:
    request_id = doc.setdefault("id", f"t-{uuid.uuid4().hex[:10]}")
    text = json.dumps(doc)
    client = QueueClient.from_connection_string(layout.AZURITE_CONNECTION_STRING, app_env["IMPORT_QUEUE"])
    client.send_message(base64.b64encode(text.encode()).decode() if encoding == "base64" else text)
    return request_id


def finished(app_env, runner, *ids: str) -> list:
    assert runner.wait_idle(timeout=90), "the runner did not drain the queue"
    store = StatusStore(app_env["IMPORT_STATUS_TABLE"])
    records = [store.get(i) for i in ids]
    assert all(r is not None and r.state.terminal for r in records), records
    return records


def target_image(repo: str, ref: str) -> oci.ImageSummary:
    return oci.inspect_image(seed.admin_client(layout.TARGET_ACR.login_server), repo, ref)


def test_every_seed_scenario_arrives_with_the_source_digest_and_all_platforms(app_env, runner, stack):
    items = demo.scenarios(stack)
    sent = demo.enqueue_all(app_env["IMPORT_QUEUE"], items)
    records = demo.wait_for(StatusStore(app_env["IMPORT_STATUS_TABLE"]), list(sent), timeout=120)
    for request_id, scenario in sent.items():
        *_, problem, ok = demo.check(scenario, records[request_id])
        assert ok, (scenario.name, problem)
    for request_id in sent:
        assert records[request_id].digest.startswith("sha256:") and records[request_id].platforms >= 1
    signed = [(i, s) for i, s in sent.items() if s.signed is not None]
    assert signed and all(demo.show_referrers(s, records[i]) for i, s in signed)  # every referrer arrived
    hello_record = next(records[i] for i, s in sent.items() if s.target == ("hello-world", "latest"))
    assert hello_record.platforms == 4
    hello = target_image("hello-world", "latest")
    assert hello_record.digest == hello.digest
    assert hello.platforms == ["linux/amd64", "linux/arm64/v8", "linux/arm/v7", "windows/amd64:10.0.20348.2700"]
    assert hello.digest == stack.digest("docker.io", "library/hello-world", "latest")


def test_plain_json_messages_work_as_well_as_base64(app_env, runner):
    tag = f"plain-{uuid.uuid4().hex[:6]}"
    request_id = enqueue(app_env, {"source": "bitnami/redis:7", "targetTags": [f"redis:{tag}"]}, encoding="none")
    [record] = finished(app_env, runner, request_id)
    assert record.state is State.SUCCEEDED
    assert sorted(target_image("redis", tag).platforms) == ["linux/amd64", "linux/arm64"]


def test_no_force_conflict_and_force_overwrite(app_env, runner, stack):
    tag = f"conflict-{uuid.uuid4().hex[:6]}"
    first = enqueue(app_env, {"source": "nginx:1.27", "targetTags": [f"web:{tag}"]})
    finished(app_env, runner, first)
    clash = enqueue(app_env, {"source": "docker.io/library/hello-world:latest", "targetTags": [f"web:{tag}"]})
    [record] = finished(app_env, runner, clash)
    assert record.state is State.FAILED and f"Tag web:{tag} already exists in target registry" in record.reason
    assert target_image("web", tag).digest == stack.digest("docker.io", "library/nginx", "1.27")

    force = enqueue(app_env, {"source": "docker.io/library/hello-world:latest", "targetTags": [f"web:{tag}"],
                              "mode": "Force"})
    [record] = finished(app_env, runner, force)
    assert record.state is State.SUCCEEDED
    assert target_image("web", tag).digest == stack.digest("docker.io", "library/hello-world", "latest")


def test_wrong_credentials_fail_unauthorized(app_env, runner, monkeypatch):
    monkeypatch.setenv("SOURCE_CREDENTIALS__DOCKERHUB__PASSWORD", "not-the-password")
    request_id = enqueue(app_env, {"source": "docker.io/myrepo/image:tag", "credential": "dockerhub",
                                   "targetTags": [f"private:{uuid.uuid4().hex[:6]}"]})
    [record] = finished(app_env, runner, request_id)
    assert record.state is State.FAILED and "UNAUTHORIZED" in record.reason.upper()
    assert "not-the-password" not in record.reason


def test_private_repository_without_credentials_fails_unauthorized(app_env, runner):
    request_id = enqueue(app_env, {"source": "docker.io/myrepo/image:tag",
                                   "targetTags": [f"private:{uuid.uuid4().hex[:6]}"]})
    [record] = finished(app_env, runner, request_id)
    assert record.state is State.FAILED and "UNAUTHORIZED" in record.reason.upper()


def test_missing_role_fails_with_authorization_failed(app_env, runner, monkeypatch):
    monkeypatch.setenv("AZURE_CLIENT_ID", layout.NO_ROLE_IDENTITY.client_id)
    monkeypatch.setenv("AUTHORIZATION_GRACE_SECONDS", "0")
    request_id = enqueue(app_env, {"source": "nginx:1.27", "targetTags": [f"norole:{uuid.uuid4().hex[:6]}"]})
    [record] = finished(app_env, runner, request_id)
    assert record.state is State.FAILED and record.code == "AuthorizationFailed"


def test_missing_source_fails_with_the_registry_error(app_env, runner):
    request_id = enqueue(app_env, {"source": "mcr.microsoft.com/windows/nanoserver:never",
                                   "targetTags": [f"missing:{uuid.uuid4().hex[:6]}"]})
    [record] = finished(app_env, runner, request_id)
    assert record.state is State.FAILED and "MANIFEST_UNKNOWN" in record.reason.upper().replace(" ", "_")


def test_a_message_that_is_not_even_base64_is_rejected_not_lost(app_env, runner):
    client = QueueClient.from_connection_string(layout.AZURITE_CONNECTION_STRING, app_env["IMPORT_QUEUE"])
    sent = client.send_message("this is not a request")
    [record] = finished(app_env, runner, sent.id)
    assert record.state is State.REJECTED and "(message): is neither JSON nor base64" in record.reason
    letters = QueueClient.from_connection_string(layout.AZURITE_CONNECTION_STRING,
                                                 f"{app_env['IMPORT_QUEUE']}-rejected").peek_messages()
    # kept as a description, never as sent: a body the app could not read may be anything, a password included
    assert json.loads(letters[0].content)["body"].startswith('<unparsed: 21 bytes, sha256 ')
