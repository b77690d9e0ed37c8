"""Reading ACR events defensively: every payload becomes a typed event or an unreadable one, never a crash."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime

import azure.functions as func
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.replication import events as ev

SAMPLE = {  # REFERENCE.md section 3: the documented ImagePushed sample
    "id": "831e1650-001e-001b-66ab-eeb76e069631",
    "topic": "/subscriptions/11111111-1111-4111-8111-111111111111/resourceGroups/rg-build/providers/"
             "Microsoft.ContainerRegistry/registries/mysourceregistry",
    "subject": "aci-helloworld:v1",
    "eventType": "Microsoft.ContainerRegistry.ImagePushed",
    "eventTime": "2018-04-25T21:39:47.6549614Z",
    "data": {"id": "31c51664-e5bd-416a-a5df-e5206bc47ed0", "timestamp": "2018-04-25T21:39:47.276585742Z",
             "action": "push",
             "target": {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": 3023,
                        "digest": "sha256:213bbc182920ab41e18edc2001e06abcca6735d87782d9cef68abd83941cf0e5",
                        "length": 3023, "repository": "aci-helloworld", "tag": "v1"},
             "request": {"id": "7c66f28b-de19-40a4-821c-6f5f6c0003a4", "host": "demo.azurecr.io",
                         "method": "PUT", "useragent": "docker/18.03.0-ce go/go1.9.4"}},
    "dataVersion": "1.0", "metadataVersion": "1"}


def test_the_documented_sample_reads_as_an_image_push():
    event = ev.read_event(SAMPLE)
    assert isinstance(event, ev.RegistryEvent)
    assert (event.event_type, event.repository, event.tag, event.digest) == (
        ev.IMAGE_PUSHED, "aci-helloworld", "v1", SAMPLE["data"]["target"]["digest"])
    assert event.problems == ()


def test_a_cloudevents_push_reads_the_same():
    cloud = {"specversion": "1.0", "id": SAMPLE["id"], "source": SAMPLE["topic"], "type": SAMPLE["eventType"],
             "subject": SAMPLE["subject"], "time": SAMPLE["eventTime"], "data": SAMPLE["data"]}
    assert ev.read_event(cloud) == ev.read_event(SAMPLE)


def test_both_schemas_read_the_same_through_the_workers_converter():
    """What the function gets is the converter's object: a func.CloudEvent for CloudEvents 1.0."""
    from dev.runner.inputs import eventgrid_input

    cloud = {"specversion": "1.0", "id": SAMPLE["id"], "source": SAMPLE["topic"], "type": SAMPLE["eventType"],
             "subject": SAMPLE["subject"], "time": SAMPLE["eventTime"], "data": SAMPLE["data"]}
    from_cloud = ev.read_event(ev.event_document(eventgrid_input(cloud)))
    from_grid = ev.read_event(ev.event_document(eventgrid_input(SAMPLE)))
    assert isinstance(from_cloud, ev.RegistryEvent) and from_cloud == from_grid


def test_untagged_child_manifest_has_no_tag():
    child = copy.deepcopy(SAMPLE)
    del child["data"]["target"]["tag"]
    event = ev.read_event(child)
    assert isinstance(event, ev.RegistryEvent) and event.tag is None and event.problems == ()


@pytest.mark.parametrize("payload, reason", [
    ([], "must be a JSON object"),
    ("text", "must be a JSON object"),
    ({"topic": SAMPLE["topic"], "eventType": ev.IMAGE_PUSHED}, "id missing"),
    ({**SAMPLE, "eventType": 7}, "eventType missing or not a string"),
    ({**SAMPLE, "data": None}, "data is missing"),
    ({**SAMPLE, "data": {"target": "aci-helloworld:v1"}}, "data.target is missing or not an object"),
])
def test_unreadable_payloads_say_why(payload, reason):
    event = ev.read_event(payload)
    assert isinstance(event, ev.UnreadableEvent) and reason in event.reason


@pytest.mark.parametrize("field, value", [("digest", "md5:abc"), ("digest", 12), ("tag", "v1;rm -rf"),
                                          ("repository", "../../etc"), ("repository", "UPPER")])
def test_invalid_target_fields_are_problems_not_values(field, value):
    bad = copy.deepcopy(SAMPLE)
    bad["data"]["target"][field] = value
    event = ev.read_event(bad)
    assert getattr(event, field) is None
    assert any(f"data.target.{field}" in p for p in event.problems)


def test_events_are_told_apart_from_import_requests():
    assert ev.is_event_like(SAMPLE) and ev.is_event_like([SAMPLE, SAMPLE])
    assert ev.is_event_like({"specversion": "1.0", "type": ev.IMAGE_PUSHED}) and ev.is_event_like({"specversion": 1})
    assert not ev.is_event_like({"source": "nginx:1.27", "targetTags": ["nginx:1.27"]})
    assert not ev.is_event_like([]) and not ev.is_event_like([SAMPLE, {"source": "nginx"}])


def test_a_functions_event_grid_event_becomes_the_same_document():
    event = func.EventGridEvent(id=SAMPLE["id"], data=SAMPLE["data"], topic=SAMPLE["topic"], subject=SAMPLE["subject"],
                                event_type=SAMPLE["eventType"], event_time=datetime(2018, 4, 25, tzinfo=UTC),
                                data_version="1.0")
    read = ev.read_event(ev.event_document(event))
    assert (read.id, read.topic, read.repository, read.tag, read.digest) == (
        SAMPLE["id"], SAMPLE["topic"], "aci-helloworld", "v1", SAMPLE["data"]["target"]["digest"])


def test_the_key_is_stable_per_topic_and_id():
    assert ev.read_event(SAMPLE).key == ev.read_event(copy.deepcopy(SAMPLE)).key
    assert ev.read_event(SAMPLE).key != ev.read_event({**SAMPLE, "id": "other"}).key


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                       max_size=4), max_leaves=20)


@given(st.dictionaries(st.sampled_from(["id", "topic", "eventType", "subject", "data", "specversion", "type",
                                        "source"]), json_values, max_size=8))
def test_no_payload_makes_the_reader_raise(payload):
    for event in ev.read_events(payload):
        assert isinstance(event, ev.RegistryEvent | ev.UnreadableEvent)
        json.dumps(event.key)
