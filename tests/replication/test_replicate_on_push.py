"""Replication on push, end to end: events reach the app through the runner's real Event Grid webhook or
straight on the import queue (direct delivery), the worker imports through the ACR stand-in, and we read
the target registries. Where the scenario is a push, the ACR stand-in raises the events itself: the
pushed registry's docker-registry notifies it, and it delivers ImagePushed to the subscriptions made on
its control endpoint, as ACR and Event Grid do (including for the stand-in's own imports)."""

from __future__ import annotations

import copy
import json
import random
import time
import uuid

import pytest
import requests
from azure.storage.queue import QueueClient

from dev import layout, oci, seed
from shared.azure.status import StatusStore
from shared.core.outcome import State
from shared.core.resource_ids import parse_registry_id
from shared.replication.events import event_key
from shared.replication.replicate import request_id
from tests.replication.test_events import SAMPLE

A, B, C = layout.SOURCE_ACR, layout.TARGET_ACR, layout.OTHER_SUB_ACR
MODES = ("webhook", "queue")


@pytest.fixture
def world(app_env, control, tmp_path, monkeypatch):
    """Settings allowing every stand-in ACR as a target, the app allowed to import into C, and a way to
    start the runner with a given rule set."""
    control.add_role_assignment(layout.APP_IDENTITY.object_id, "Contributor", C.resource_id)
    monkeypatch.setenv("ALLOWED_TARGET_REGISTRIES", ",".join(acr.resource_id for acr in (A, B, C)))
    started = []

    def start(*rules: dict):
        from dev.runner import Runner
        from shared import app_context

        path = tmp_path / "replication-rules.json"
        path.write_text(json.dumps({"version": 1, "rules": list(rules)}))
        monkeypatch.setenv("REPLICATION_RULES", str(path))
        app_context.reset()
        env = {**app_env, "ALLOWED_TARGET_REGISTRIES": ",".join(acr.resource_id for acr in (A, B, C)),
               "REPLICATION_RULES": str(path)}
        runner = Runner("function_app", env=env, http_port=0).start()
        started.append(runner)
        return runner

    yield start
    control.unsubscribe()
    for runner in started:
        runner.stop()


def webhook_url(runner, code: str | None = None) -> str:
    return (f"http://{layout.HOST}:{runner.http_port}/runtime/webhooks/eventgrid?functionName=replicate_on_push"
            f"&code={runner.eventgrid_key if code is None else code}")


def post_events(runner, events: list, kind: str = "Notification", code: str | None = None) -> requests.Response:
    return requests.post(webhook_url(runner, code), json=events, headers={"aeg-event-type": kind}, timeout=30)


def deliver(mode: str, runner, app_env, events: list) -> None:
    """Hand events to the app as Event Grid would in that mode: a webhook POST, or one queue message each."""
    if mode == "webhook":
        answer = post_events(runner, events)
        assert answer.status_code == 202, answer.text
        return
    client = QueueClient.from_connection_string(layout.AZURITE_CONNECTION_STRING, app_env["IMPORT_QUEUE"])
    for event in events:
        client.send_message(json.dumps(event))


def subscribe(mode: str, control, runner, app_env, acr: layout.AcrSpec) -> None:
    if mode == "webhook":
        control.subscribe_webhook(acr.resource_id, webhook_url(runner), name=f"replicate-{acr.name}")
    else:
        control.subscribe_queue(acr.resource_id, app_env["IMPORT_QUEUE"], name=f"queue-{acr.name}")


def settle(control, runner, timeout: float = 60) -> None:
    """Until no event is being delivered, the queue is drained, and no new event appeared for a moment
    (an import raises events of its own a few milliseconds after it lands)."""
    deadline = time.monotonic() + timeout
    seen = -1
    while time.monotonic() < deadline:
        state = control.event_deliveries()
        if state["pending"] == 0 and runner.wait_idle(timeout=max(1.0, deadline - time.monotonic())):
            if len(state["published"]) == seen:
                return
            seen = len(state["published"])
        time.sleep(0.4)
    raise AssertionError("events and imports did not settle")


def imports_into(control, acr: layout.AcrSpec) -> list[dict]:
    path = f"/registries/{acr.name}/importImage".lower()
    return [r for r in control.requests() if r["method"] == "POST" and r["path"].lower().endswith(path)]


def records(app_env) -> list:
    return StatusStore(app_env["IMPORT_STATUS_TABLE"]).list()


def pushed_event(repository: str, tag: str | None, digest: str, acr: layout.AcrSpec = A) -> dict:
    event = copy.deepcopy(SAMPLE)
    event.update(id=str(uuid.uuid4()), topic=acr.resource_id, subject=f"{repository}:{tag}")
    event["data"]["target"].update(repository=repository, digest=digest, tag=tag)
    if tag is None:
        del event["data"]["target"]["tag"]
    return event


def push_new_image(acr: layout.AcrSpec, platforms: tuple[str, ...]) -> tuple[str, str, seed.BuiltImage]:
    """A fresh image (new digest) pushed straight to the registry's data plane, as `docker push` would."""
    repository = f"team/app{uuid.uuid4().hex[:8]}"
    image = seed.build_image(repository, platforms, version=random.randint(2, 10**9))
    digest = seed.push_image(seed.admin_client(acr.login_server), repository, "v1", image)
    return repository, digest, image


def in_registry(acr: layout.AcrSpec, repository: str, ref: str) -> oci.ImageSummary:
    return oci.inspect_image(seed.admin_client(acr.login_server), repository, ref)


# --- the webhook's own contract -------------------------------------------------------------------------------
def test_webhook_refuses_a_wrong_key_and_answers_the_validation_handshake(world):
    runner = world({"source": A.resource_id, "targets": [B.resource_id]})
    assert post_events(runner, [SAMPLE], code="not-the-key").status_code == 401
    assert post_events(runner, [SAMPLE], code="").status_code == 401
    validation = {"id": "v1", "topic": A.resource_id, "subject": "", "eventType":
                  "Microsoft.EventGrid.SubscriptionValidationEvent", "eventTime": "2024-01-01T00:00:00Z",
                  "data": {"validationCode": "code-123"}, "dataVersion": "2"}
    answer = post_events(runner, [validation], kind="SubscriptionValidation")
    assert answer.status_code == 200 and answer.json() == {"validationResponse": "code-123"}
    assert runner.invocations == []


# --- the documented sample ------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_the_documented_sample_imports_the_pushed_digest_once(world, control, app_env, stack, mode):
    prefix = f"{mode}{uuid.uuid4().hex[:6]}/"
    runner = world({"source": A.resource_id, "targets": [B.resource_id], "targetPrefix": prefix})
    digest = stack.digest(A.login_server, "aci-helloworld", "latest")
    event = pushed_event("aci-helloworld", "latest", digest)
    deliver(mode, runner, app_env, [event])
    settle(control, runner)
    deliver(mode, runner, app_env, [event])  # Event Grid redelivers: nothing more happens
    settle(control, runner)

    [imported] = imports_into(control, B)
    assert imported["body"]["source"] == {"resourceId": A.resource_id, "sourceImage": f"aci-helloworld@{digest}"}
    [target_tag] = imported["body"]["targetTags"]
    rid = request_id(_event(event), parse_registry_id(B.resource_id), target_tag)
    record = StatusStore(app_env["IMPORT_STATUS_TABLE"]).get(rid)
    assert record is not None and record.state is State.SUCCEEDED, record
    repository, tag = target_tag.rsplit(":", 1)
    assert in_registry(B, repository, tag).digest == digest
    assert repository == f"{prefix}aci-helloworld"


def test_a_cloudevents_push_through_the_webhook_imports_as_the_event_grid_one(world, control, app_env, stack):
    """A CloudEvents 1.0 delivery reaches replicate_on_push as the worker's converter makes it (a
    func.CloudEvent), and the app reads it like the Event Grid schema event."""
    prefix = f"cloud{uuid.uuid4().hex[:6]}/"
    runner = world({"source": A.resource_id, "targets": [B.resource_id], "targetPrefix": prefix})
    digest = stack.digest(A.login_server, "aci-helloworld", "latest")
    grid = pushed_event("aci-helloworld", "latest", digest)
    cloud = {"specversion": "1.0", "id": grid["id"], "source": grid["topic"], "type": grid["eventType"],
             "subject": grid["subject"], "time": grid["eventTime"], "datacontenttype": "application/json",
             "data": grid["data"]}
    assert post_events(runner, [cloud]).status_code == 202
    settle(control, runner)

    [imported] = imports_into(control, B)
    assert imported["body"]["source"] == {"resourceId": A.resource_id, "sourceImage": f"aci-helloworld@{digest}"}
    [target_tag] = imported["body"]["targetTags"]
    record = StatusStore(app_env["IMPORT_STATUS_TABLE"]).get(
        request_id(_event(grid), parse_registry_id(B.resource_id), target_tag))
    assert record is not None and record.state is State.SUCCEEDED, record


def _event(raw: dict):
    from shared.replication.events import read_event

    return read_event(raw)


# --- a multi-arch push, raised by the registry itself --------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_a_multi_arch_push_is_imported_once_with_every_platform(world, control, app_env, mode):
    runner = world({"source": A.resource_id, "targets": [B.resource_id], "mode": "NoForce"})
    subscribe(mode, control, runner, app_env, A)
    repository, digest, _ = push_new_image(A, ("linux/amd64", "linux/arm64"))
    settle(control, runner)

    raised = [e for e in control.event_deliveries()["published"] if e["topic"] == A.resource_id
              and e["data"]["target"]["repository"] == repository]
    assert [e["data"]["target"].get("tag") for e in raised] == [None, None, "v1"]  # children first, then the index
    [imported] = imports_into(control, B)
    assert imported["body"]["source"]["sourceImage"] == f"{repository}@{digest}"
    assert imported["body"]["targetTags"] == [f"{repository}:v1"]
    summary = in_registry(B, repository, "v1")
    assert summary.digest == digest and sorted(summary.platforms) == ["linux/amd64", "linux/arm64"]
    states = sorted(str(r.state) for r in records(app_env))
    assert states == ["skipped", "skipped", "succeeded"], states  # the two untagged children are recorded


# --- no loops -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_a_chain_replicates_to_the_last_registry_once(world, control, app_env, mode):
    runner = world({"name": "build to prod", "source": A.resource_id, "targets": [B.resource_id]},
                   {"name": "prod to dr", "source": B.resource_id, "targets": [C.resource_id]})
    subscribe(mode, control, runner, app_env, A)
    subscribe(mode, control, runner, app_env, B)
    repository, digest, _ = push_new_image(A, ("linux/amd64",))
    settle(control, runner)

    assert len(imports_into(control, B)) == 1 and len(imports_into(control, C)) == 1
    [from_b] = imports_into(control, C)
    assert from_b["body"]["source"] == {"resourceId": B.resource_id, "sourceImage": f"{repository}@{digest}"}
    assert in_registry(C, repository, "v1").digest == digest
    assert all(r.state in (State.SUCCEEDED, State.SKIPPED) for r in records(app_env))


def test_a_cyclic_rule_set_is_refused_and_event_grid_keeps_the_event(world, control, stack):
    runner = world({"name": "there", "source": A.resource_id, "targets": [B.resource_id]},
                   {"name": "back", "source": B.resource_id, "targets": [A.resource_id]})
    digest = stack.digest(A.login_server, "aci-helloworld", "latest")
    answer = post_events(runner, [pushed_event("aci-helloworld", "latest", digest)])
    assert answer.status_code == 500  # a configuration error: Event Grid retries until it is fixed
    [failed] = [i for i in runner.invocations if i.function == "replicate_on_push"]
    assert "cycle" in failed.error and "mysourceregistry -> myregistry -> mysourceregistry" in failed.error
    assert imports_into(control, B) == [] and imports_into(control, A) == []


# --- refused events -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_unknown_topics_and_malformed_events_end_rejected_without_retries(world, control, app_env, stack, mode):
    runner = world({"source": A.resource_id, "targets": [B.resource_id]})
    digest = stack.digest(A.login_server, "aci-helloworld", "latest")
    stranger = pushed_event("aci-helloworld", "latest", digest, acr=C)  # a registry no rule names
    attacker = {**pushed_event("evil", "latest", digest), "topic": "/subscriptions/x/resourceGroups/y"}
    no_data = {**pushed_event("aci-helloworld", "latest", digest), "data": "push"}
    bad_digest = pushed_event("aci-helloworld", "latest", "sha256:../../etc/passwd")
    no_id = {k: v for k, v in pushed_event("aci-helloworld", "latest", digest).items() if k != "id"}
    deliver(mode, runner, app_env, [stranger, attacker, no_data, bad_digest, no_id])
    settle(control, runner)

    assert all(i.outcome == "ok" for i in runner.invocations)  # nothing for Event Grid or the host to retry
    rejected = {r.id: r.reason for r in records(app_env)}
    assert len(rejected) == 5 and all(r.state is State.REJECTED for r in records(app_env))
    assert "no replication rule names this registry" in rejected[f"event-{event_key(C.resource_id, stranger['id'])}"]
    assert "not a container registry resource id" in rejected[f"event-{event_key(attacker['topic'], attacker['id'])}"]
    assert "data is missing or not an object" in rejected[f"event-{event_key(A.resource_id, no_data['id'])}"]
    assert "data.target.digest" in rejected[f"event-{event_key(A.resource_id, bad_digest['id'])}"]
    assert imports_into(control, B) == []
    letters = QueueClient.from_connection_string(layout.AZURITE_CONNECTION_STRING,
                                                 f"{app_env['IMPORT_QUEUE']}-rejected").peek_messages(max_messages=32)
    assert len(letters) == 5


def test_events_on_the_queue_with_unusable_rules_fail_then_end_rejected_from_the_poison_queue(
        app_env, stack, tmp_path, monkeypatch):
    from shared import app_context
    from shared.replication.replicate import ReplicationConfigError
    from tests.helpers import dead_letters, deliver, status

    rules = tmp_path / "cyclic.json"
    rules.write_text(json.dumps({"rules": [{"source": A.resource_id, "targets": [A.resource_id]}]}))
    monkeypatch.setenv("REPLICATION_RULES", str(rules))
    monkeypatch.setenv("ALLOWED_TARGET_REGISTRIES", A.resource_id)
    app_context.reset()
    event = pushed_event("aci-helloworld", "latest", stack.digest(A.login_server, "aci-helloworld", "latest"))
    with pytest.raises(ReplicationConfigError, match="mysourceregistry -> mysourceregistry"):
        deliver(event)  # the host retries, then moves the message to the poison queue
    deliver(event, function="import_image_poison")
    record = status(f"event-{event_key(A.resource_id, event['id'])}")
    assert record.state is State.REJECTED and "poison queue" in record.reason
    assert [letter["body"]["id"] for letter in dead_letters(app_env)] == [event["id"]]


# --- a referrer pushed later ------------------------------------------------------------------------------------
def push_signature(acr: layout.AcrSpec, repository: str, subject: str) -> str:
    """What `notation sign` pushes to ACR (which serves the referrers API): an untagged signature manifest whose
    `subject` is the image, by digest."""
    import hashlib

    client = seed.admin_client(acr.login_server)
    head = client.head_manifest(repository, subject)
    assert head is not None
    envelope = json.dumps({"payload": uuid.uuid4().hex, "signatures": []}).encode()
    signature = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                 "artifactType": "application/vnd.cncf.notary.signature",
                 "config": {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2,
                            "digest": client.put_blob(repository, b"{}")},
                 "layers": [{"mediaType": "application/jose+json", "digest": client.put_blob(repository, envelope),
                             "size": len(envelope)}],
                 "subject": {"mediaType": head.media_type, "digest": subject, "size": head.size}}
    body = json.dumps(signature).encode()
    return client.put_manifest(repository, "sha256:" + hashlib.sha256(body).hexdigest(), body, signature["mediaType"])


def test_a_signature_pushed_after_the_image_was_replicated_follows_it_by_digest(world, control, app_env):
    runner = world({"source": A.resource_id, "targets": [B.resource_id], "mode": "NoForce"})
    subscribe("queue", control, runner, app_env, A)
    repository, digest, _ = push_new_image(A, ("linux/amd64", "linux/arm64"))
    settle(control, runner)
    assert in_registry(B, repository, "v1").digest == digest
    before = len(imports_into(control, B))

    signature = push_signature(A, repository, digest)
    settle(control, runner)

    raised = [e for e in control.event_deliveries()["published"] if e["topic"] == A.resource_id
              and e["data"]["target"]["digest"] == signature]
    assert len(raised) == 1 and "tag" not in raised[0]["data"]["target"]  # Event Grid says no more than this
    [imported] = imports_into(control, B)[before:]
    assert imported["body"]["source"]["sourceImage"] == f"{repository}@{signature}"
    assert imported["body"].get("untaggedTargetRepositories") == [repository]
    held = seed.admin_client(B.login_server).head_manifest(repository, signature)
    assert held is not None and held.digest == signature
    children = [r for r in records(app_env) if r.state is State.SKIPPED]
    assert len(children) == 2 and all("untagged manifest" in r.reason for r in children)  # platforms: no subject


def test_a_signed_image_pushed_with_its_referrers_arrives_with_all_of_them(world, control, app_env):
    """A signed multi-arch image pushed to the source ACR as a signing pipeline does (the image, then its
    signatures, SBOM, attestation and cosign's tags, each raising its own event): whichever comes first, the
    image's import or a referrer's event, every referrer ends in the target."""
    from dev import signed

    runner = world({"source": A.resource_id, "targets": [B.resource_id], "mode": "NoForce"})
    subscribe("queue", control, runner, app_env, A)
    image = signed.seed_signed(signed.SignedSpec(A.login_server, f"team/signed{uuid.uuid4().hex[:8]}"))
    settle(control, runner)
    assert in_registry(B, image.repo, image.tag).digest == image.digest
    target = seed.admin_client(B.login_server)
    for referrer in image.referrers:
        held = target.head_manifest(image.repo, referrer.tag or referrer.digest)
        assert held is not None and held.digest == referrer.digest, referrer
    assert not [r for r in records(app_env) if r.state in (State.FAILED, State.REJECTED)]
