"""The queue function end to end: a message handed to the real `import_image`, the real SDK and
azure-identity talking to the Azure stand-in, Azurite holding queues and status. Each test checks what a
user would see: the body ACR received, the terminal state and its reason, the dead letter."""

from __future__ import annotations

import base64
import json
import time
import uuid

import pytest

from dev import layout
from shared.core.outcome import State
from tests.helpers import dead_letters, deliver, next_retry, status

TARGET = layout.TARGET_ACR.resource_id


def import_posts(control) -> list[dict]:
    return [r for r in control.requests() if r["method"] == "POST" and r["path"].endswith("/importImage")]


def run_id() -> str:
    return uuid.uuid4().hex[:8]


# --- every seed scenario, and the body ACR received, field by field -----------------------------------

def seed_scenarios(seeded, tag):
    digest = seeded.digest(layout.SOURCE_ACR.login_server, "aci-helloworld", "latest")
    hub = layout.DOCKERHUB.users["dockeruser"]
    sp = layout.SERVICE_PRINCIPAL
    return [
        ("same subscription ACR",
         {"source": "mysourceregistry.azurecr.io/aci-helloworld:latest", "targetTags": [f"hello-world:{tag}"]},
         {"resourceId": layout.SOURCE_ACR.resource_id, "sourceImage": "aci-helloworld:latest"}),
        ("ACR in another subscription",
         {"source": "sourceregistry.azurecr.io/aci-helloworld:latest", "targetTags": [f"hello-world-b:{tag}"],
          "sourceRegistry": layout.OTHER_SUB_ACR.resource_id},
         {"resourceId": layout.OTHER_SUB_ACR.resource_id, "sourceImage": "aci-helloworld:latest"}),
        ("Docker Hub official",
         {"source": "docker.io/library/hello-world:latest", "targetTags": [f"hello-world-hub:{tag}"]},
         {"registryUri": "docker.io", "sourceImage": "library/hello-world:latest"}),
        ("Docker Hub namespaced",
         {"source": "docker.io/tensorflow/tensorflow:latest-gpu", "targetTags": [f"tensorflow:{tag}"]},
         {"registryUri": "docker.io", "sourceImage": "tensorflow/tensorflow:latest-gpu"}),
        ("MCR",
         {"source": "mcr.microsoft.com/windows/servercore:latest", "targetTags": [f"servercore:{tag}"]},
         {"registryUri": "mcr.microsoft.com", "sourceImage": "windows/servercore:latest"}),
        ("private Docker Hub repository with a credential set",
         {"source": "docker.io/myrepo/image:tag", "targetTags": [f"privateimage:{tag}"], "credential": "dockerhub"},
         {"registryUri": "docker.io", "sourceImage": "myrepo/image:tag",
          "credentials": {"username": "dockeruser", "password": hub}}),
        ("ACR with service principal credentials",
         {"source": "sourceregistry.azurecr.io/sourcerepo/image:tag", "targetTags": [f"image:{tag}"],
          "credential": "sp"},
         {"registryUri": "sourceregistry.azurecr.io", "sourceImage": "sourcerepo/image:tag",
          "credentials": {"username": sp.client_id, "password": sp.secret}}),
        ("digest import",
         {"source": f"mysourceregistry.azurecr.io/aci-helloworld@{digest}"},
         {"resourceId": layout.SOURCE_ACR.resource_id, "sourceImage": f"aci-helloworld@{digest}"}),
    ]


def test_every_seed_scenario_sends_the_exact_body_and_succeeds(app_env, control, stack):
    tag = run_id()
    for name, doc, expected_source in seed_scenarios(stack, tag):
        control.clear_requests()
        request_id = deliver(doc)
        record = status(request_id)
        assert record.state is State.SUCCEEDED, (name, record.reason)
        [post] = import_posts(control)
        body = post["body"]
        assert body["source"] == expected_source, name
        assert body["mode"] == "NoForce", name
        if "targetTags" in doc:
            assert body["targetTags"] == doc["targetTags"] and "untaggedTargetRepositories" not in body, name
        else:
            assert body["untaggedTargetRepositories"] == ["aci-helloworld"] and "targetTags" not in body, name
        assert post["path"] == f"{TARGET}/importImage", name
        assert post["principal"] == layout.APP_IDENTITY.object_id, name


def test_short_docker_hub_name_without_targets_imports_nginx_latest(app_env, control):
    request_id = deliver({"source": "nginx"})
    assert status(request_id).state is State.SUCCEEDED
    [post] = import_posts(control)
    assert post["body"] == {"source": {"registryUri": "docker.io", "sourceImage": "library/nginx:latest"},
                            "targetTags": ["nginx:latest"], "mode": "NoForce"}


def test_base64_message_is_accepted_like_plain_json(app_env, control):
    doc = {"source": "docker.io/library/hello-world:latest", "targetTags": [f"b64:{run_id()}"], "mode": "Force"}
    request_id = deliver(base64.b64encode(json.dumps(doc).encode()))
    assert status(request_id).state is State.SUCCEEDED
    assert import_posts(control)[0]["body"]["mode"] == "Force"


def test_user_assigned_identity_is_used_when_azure_client_id_is_set(app_env, control, monkeypatch):
    from shared import app_context

    monkeypatch.setenv("AZURE_CLIENT_ID", layout.USER_ASSIGNED_IDENTITY.client_id)
    app_context.reset()
    request_id = deliver({"source": "nginx:1.27", "targetTags": [f"nginx:uai-{run_id()}"]})
    assert status(request_id).state is State.SUCCEEDED
    assert import_posts(control)[0]["principal"] == layout.USER_ASSIGNED_IDENTITY.object_id


def test_redelivered_success_is_still_a_success_and_imports_once(app_env, control):
    doc = {"id": f"dup-{run_id()}", "source": "nginx:1.27", "targetTags": [f"nginx:dup-{run_id()}"]}
    deliver(doc)
    deliver(doc, dequeue_count=2)
    assert status(doc["id"]).state is State.SUCCEEDED
    assert len(import_posts(control)) == 1


# --- rejected: bad input never reaches ARM, and is kept with its reason ------------------------------

SECRET = "inline-secret-value-42"

REJECTED = [
    ("malformed JSON", '{"source": "nginx",', "(message)", "not valid JSON"),
    ("oversized", json.dumps({"source": "nginx", "id": "a" * 70_000}), "(message)", "64 KiB"),
    ("inline credentials", {"source": "docker.io/myrepo/image:tag", "username": "u", "password": SECRET},
     "password", "inline credentials are refused"),
    ("forbidden source registry", {"source": "ghcr.io/evil/miner:latest"}, "source", "ALLOWED_SOURCE_REGISTRIES"),
    ("forbidden target registry", {"source": "nginx", "target": layout.SOURCE_ACR.resource_id}, "target",
     "ALLOWED_TARGET_REGISTRIES"),
]


@pytest.mark.parametrize(("body", "field", "rule"), [r[1:] for r in REJECTED], ids=[r[0] for r in REJECTED])
def test_bad_messages_end_rejected_with_a_reason_and_a_dead_letter(app_env, control, body, field, rule):
    request_id = deliver(body)
    record = status(request_id)
    assert record.state is State.REJECTED
    assert record.reason.startswith(f"{field}: ") or f"; {field}: " in record.reason
    assert rule in record.reason
    [letter] = dead_letters(app_env)
    assert letter["id"] == request_id and letter["state"] == "rejected" and rule in letter["reason"]
    assert SECRET not in json.dumps(letter) and SECRET not in record.reason
    assert import_posts(control) == []


# --- failed: permanent errors end at once, with ARM's reason -----------------------------------------

def test_no_force_conflict_fails_with_the_tag_named(app_env, control):
    tag = f"hello-world:conflict-{run_id()}"
    first = deliver({"source": "docker.io/library/hello-world:latest", "targetTags": [tag]})
    assert status(first).state is State.SUCCEEDED
    second = deliver({"source": "docker.io/library/nginx:latest", "targetTags": [tag]})
    record = status(second)
    assert record.state is State.FAILED
    assert f"Tag {tag} already exists in target registry" in record.reason
    assert [d["id"] for d in dead_letters(app_env)] == [second]


def test_force_overwrites_an_existing_tag(app_env, control):
    tag = f"hello-world:force-{run_id()}"
    deliver({"source": "docker.io/library/hello-world:latest", "targetTags": [tag]})
    request_id = deliver({"source": "docker.io/library/nginx:latest", "targetTags": [tag], "mode": "Force"})
    assert status(request_id).state is State.SUCCEEDED


def test_missing_source_fails_with_the_registry_error(app_env, control):
    request_id = deliver({"source": "docker.io/library/does-not-exist:1", "targetTags": [f"x:{run_id()}"]})
    record = status(request_id)
    assert record.state is State.FAILED
    assert "not found" in record.reason.lower() or "unknown" in record.reason.lower()


def test_missing_role_fails_after_the_grace_window(app_env, control, monkeypatch):
    from shared import app_context

    monkeypatch.setenv("AZURE_CLIENT_ID", layout.NO_ROLE_IDENTITY.client_id)
    monkeypatch.setenv("AUTHORIZATION_GRACE_SECONDS", "0")
    app_context.reset()
    request_id = deliver({"source": "nginx:1.27", "targetTags": [f"nginx:norole-{run_id()}"]})
    record = status(request_id)
    assert record.state is State.FAILED and record.code == "AuthorizationFailed"
    assert record.attempts == 1 and "likely configuration: still denied after" in record.reason
    assert "importImage/action" in record.reason


# --- transient: retried with backoff through the queue, then succeeded or failed ---------------------

def test_throttling_then_server_error_then_success(app_env, control):
    control.add_faults("import", {"status": 429, "retry_after": 1}, {"status": 500})
    doc = {"source": "nginx:1.27", "targetTags": [f"nginx:retry-{run_id()}"]}
    request_id = deliver(doc)
    record = status(request_id)
    # ARM throttling the POST is not an attempt of the import (tests/imports/test_arm_throttling.py)
    assert record.state is State.RETRYING and record.attempts == 0 and record.code == "TooManyRequests"
    enqueued_at = time.monotonic()
    second = next_retry(app_env)
    assert time.monotonic() - enqueued_at >= 0.9, "Retry-After: 1 was not honoured"
    assert "retry" not in json.loads(second), "the attempt count is on the status row, not on the message"
    deliver(second)
    assert status(request_id).state is State.RETRYING and status(request_id).attempts == 1
    deliver(next_retry(app_env))
    record = status(request_id)
    assert record.state is State.SUCCEEDED and record.attempts == 2
    assert [t["state"] for t in record.transitions] == ["running", "retrying", "running", "retrying", "running",
                                                        "succeeded"]
    assert len(import_posts(control)) == 3


def test_error_copying_blobs_is_retried(app_env, control):
    control.add_faults("operation", {"fail": "copy_blobs"})
    request_id = deliver({"source": "nginx:1.27", "targetTags": [f"nginx:blobs-{run_id()}"]})
    assert status(request_id).state is State.RETRYING
    deliver(next_retry(app_env))
    assert status(request_id).state is State.SUCCEEDED


def test_authorization_failed_right_after_deployment_is_retried(app_env, control):
    control.authorization_outage(seconds=1.5)
    request_id = deliver({"source": "nginx:1.27", "targetTags": [f"nginx:authz-{run_id()}"]})
    assert status(request_id).state is State.RETRYING
    time.sleep(1.5)
    deliver(next_retry(app_env))
    assert status(request_id).state is State.SUCCEEDED


def test_retries_exhausted_end_failed_with_the_last_error(app_env, control, monkeypatch):
    from shared import app_context

    monkeypatch.setenv("IMPORT_MAX_ATTEMPTS", "2")
    app_context.reset()
    control.add_faults("import", {"status": 500}, {"status": 503})
    request_id = deliver({"source": "nginx:1.27", "targetTags": [f"nginx:exhaust-{run_id()}"]})
    deliver(next_retry(app_env))
    record = status(request_id)
    assert record.state is State.FAILED and "gave up after 2 attempts" in record.reason
    assert [d["id"] for d in dead_letters(app_env)] == [request_id]


# --- the poison path: even a crash ends in a terminal state -------------------------------------------

def test_poison_message_is_recorded_failed_and_dead_lettered(app_env, control):
    doc = {"id": f"poison-{run_id()}", "source": "nginx:1.27"}
    deliver(doc, function="import_image_poison", dequeue_count=1)
    record = status(doc["id"])
    assert record.state is State.FAILED and record.code == "WorkerCrashed"
    assert dead_letters(app_env)[0]["id"] == doc["id"]
    assert import_posts(control) == []


def test_unexpected_errors_are_left_to_the_host(app_env, control, monkeypatch):
    from shared import app_context

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(app_context.worker().arm, "start_import", broken)
    with pytest.raises(RuntimeError):
        deliver({"source": "nginx:1.27", "targetTags": [f"nginx:crash-{run_id()}"]})
