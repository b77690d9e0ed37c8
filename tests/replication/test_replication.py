"""Replication rules and what an event becomes, without any service: loading (schema, allowlists, cycles)
and the pure event -> import requests step, checked against the one request validator."""

from __future__ import annotations

import copy
import json

import pytest

from dev import layout
from shared.core.outcome import State
from shared.core.request import ImportRequest, validate_document
from shared.core.settings import load_settings
from shared.replication import events as ev
from shared.replication.replicate import ReplicationConfigError, parse_rules, plan_event
from tests.replication.test_events import SAMPLE

A, B, C = layout.SOURCE_ACR.resource_id, layout.TARGET_ACR.resource_id, layout.OTHER_SUB_ACR.resource_id
SETTINGS = load_settings({"TARGET_REGISTRY": B, "ALLOWED_TARGET_REGISTRIES": f"{A},{B},{C}",
                          "ALLOWED_SOURCE_REGISTRIES": "docker.io,*.azurecr.io"})
DIGEST = SAMPLE["data"]["target"]["digest"]


def rules(*entries: dict, settings=SETTINGS):
    return parse_rules(json.dumps({"version": 1, "rules": list(entries)}), settings)


def pushed(repository="aci-helloworld", tag: str | None = "v1", topic=A, event_id="e1", **changes) -> ev.RegistryEvent:
    raw = copy.deepcopy(SAMPLE)
    raw.update(topic=topic, id=event_id, **changes)
    raw["data"]["target"].update(repository=repository)
    if tag is None:
        del raw["data"]["target"]["tag"]
    else:
        raw["data"]["target"]["tag"] = tag
    return ev.read_event(raw)


def test_the_shipped_rules_file_is_valid_and_empty():
    assert parse_rules((layout.REPO_ROOT / "replication-rules.json").read_text(), SETTINGS).rules == ()


def test_a_push_becomes_one_valid_request_per_target_by_digest():
    plan = plan_event(pushed(), rules({"source": A, "targets": [B, C]}))
    assert plan.state is State.RECEIVED
    assert [(d["target"], d["targetTags"], d["source"], d["sourceRegistry"], d["mode"]) for d in plan.requests] == [
        (B, ["aci-helloworld:v1"], f"aci-helloworld@{DIGEST}", A, "IfChanged"),
        (C, ["aci-helloworld:v1"], f"aci-helloworld@{DIGEST}", A, "IfChanged")]
    for document in plan.requests:
        request = validate_document(document, SETTINGS)
        assert isinstance(request, ImportRequest), request
        assert request.source.digest == DIGEST and request.source_registry.name == "mysourceregistry"


def test_request_ids_are_the_same_for_a_redelivered_event_and_differ_per_target():
    ruleset = rules({"source": A, "targets": [B, C]})
    first, again = plan_event(pushed(), ruleset), plan_event(pushed(), ruleset)
    assert [d["id"] for d in first.requests] == [d["id"] for d in again.requests]
    assert len({d["id"] for d in first.requests}) == 2
    assert {d["id"] for d in plan_event(pushed(event_id="e2"), ruleset).requests}.isdisjoint(
        {d["id"] for d in first.requests})


def test_prefix_mode_and_filters():
    ruleset = rules({"source": A, "targets": [B], "targetPrefix": "mirror/", "mode": "Force",
                     "repositories": {"include": ["team-a/.*", "aci-.*"], "exclude": [".*-test"]},
                     "tags": {"exclude": ["dev-.*"]}})
    [doc] = plan_event(pushed(), ruleset).requests
    assert doc["targetTags"] == ["mirror/aci-helloworld:v1"] and doc["mode"] == "Force"
    assert plan_event(pushed("team-a/api"), ruleset).state is State.RECEIVED
    for event in (pushed("team-b/api"), pushed("aci-helloworld-test"), pushed(tag="dev-42")):
        plan = plan_event(event, ruleset)
        assert plan.state is State.SKIPPED and "not selected by rules[0]" in plan.reason


def test_untagged_children_deletes_and_charts_are_ignored():
    ruleset = rules({"source": A, "targets": [B]})
    untagged = plan_event(pushed(tag=None), ruleset)
    assert untagged.state is State.SKIPPED and "untagged manifest" in untagged.reason and not untagged.requests
    for kind in (ev.IMAGE_DELETED, ev.CHART_PUSHED, ev.CHART_DELETED):
        plan = plan_event(pushed(eventType=kind), ruleset)
        assert plan.state is State.SKIPPED and "only ImagePushed" in plan.reason


def test_events_from_topics_no_rule_names_are_rejected():
    ruleset = rules({"source": A, "targets": [B]})
    for topic in (C, "/subscriptions/x/evil", "", "attacker.example"):
        plan = plan_event(pushed(topic=topic), ruleset)
        assert plan.state is State.REJECTED and not plan.requests, topic
    assert "no replication rule names this registry" in plan_event(pushed(topic=C), ruleset).reason


@pytest.mark.parametrize("change, words", [
    ({"repository": "UPPER/case"}, "data.target.repository"),
    ({"digest": "sha256:short"}, "data.target.digest"),
    ({"digest": None}, "data.target.digest is missing"),
])
def test_a_malformed_push_from_a_known_topic_is_rejected(change, words):
    raw = copy.deepcopy(SAMPLE)
    raw["topic"] = A
    raw["data"]["target"].update(change)
    plan = plan_event(ev.read_event(raw), rules({"source": A, "targets": [B]}))
    assert plan.state is State.REJECTED and words in plan.reason


def test_cycles_are_refused_naming_the_cycle():
    with pytest.raises(ReplicationConfigError) as two:
        rules({"name": "a to b", "source": A, "targets": [B]}, {"name": "b back", "source": B, "targets": [A]})
    assert "cycle" in str(two.value)
    assert "mysourceregistry -> myregistry -> mysourceregistry" in str(two.value)
    assert "rules[0] (a to b)" in str(two.value) and "rules[1] (b back)" in str(two.value)
    with pytest.raises(ReplicationConfigError, match="myregistry -> myregistry"):
        rules({"source": B, "targets": [B], "targetPrefix": "copy/"})
    with pytest.raises(ReplicationConfigError, match="cycle"):
        rules({"source": A, "targets": [B]}, {"source": B, "targets": [C]}, {"source": C, "targets": [A]})


def test_a_chain_and_a_fan_out_are_fine():
    chain = rules({"source": A, "targets": [B]}, {"source": B, "targets": [C]})
    assert [d["target"] for d in plan_event(pushed(), chain).requests] == [B]
    assert [d["target"] for d in plan_event(pushed(topic=B), chain).requests] == [C]
    assert len(rules({"source": A, "targets": [B, C]}, {"source": B, "targets": [C]}).rules) == 2


@pytest.mark.parametrize("entry, words", [
    ({"source": A, "targets": []}, "rules[0].targets: [] should be non-empty"),
    ({"source": A, "targets": [B], "extra": 1}, "Additional properties"),
    ({"source": A, "targets": [B], "mode": "Sometimes"}, "rules[0].mode"),
    ({"source": A, "targets": ["/subscriptions/nope"]}, "rules[0].targets[0]"),
    ({"source": A, "targets": [B], "tags": {"include": ["("]}}, "rules[0].tags.include[0]: is not a regular"),
    ({"source": A, "targets": [B], "targetPrefix": "Bad Prefix/"}, "rules[0].targetPrefix"),
])
def test_invalid_rules_are_refused_with_the_field(entry, words):
    with pytest.raises(ReplicationConfigError) as refused:
        rules(entry)
    assert words in str(refused.value)


def test_rules_must_respect_the_allowlists():
    narrow = load_settings({"TARGET_REGISTRY": B, "ALLOWED_SOURCE_REGISTRIES": "docker.io"})
    with pytest.raises(ReplicationConfigError) as refused:
        rules({"source": A, "targets": [C]}, settings=narrow)
    assert "rules[0].source" in str(refused.value) and "ALLOWED_SOURCE_REGISTRIES" in str(refused.value)
    assert "rules[0].targets[0]" in str(refused.value) and "ALLOWED_TARGET_REGISTRIES" in str(refused.value)
    by_id = load_settings({"TARGET_REGISTRY": B, "ALLOWED_SOURCE_REGISTRIES": A})
    assert len(rules({"source": A, "targets": [B]}, settings=by_id).rules) == 1


@pytest.mark.parametrize(("value", "field"), [
    ("signatures", "rules[1].referrers"), (True, "rules[1].referrers"),
    ({"artifactTypes": "application/spdx+json"}, "rules[1].referrers.artifactTypes"),
    ({"artifactTypes": ["spdx"]}, "rules[1].referrers.artifactTypes[0]"),
    ({"required": 1}, "rules[1].referrers.required"),
    ({"types": ["application/spdx+json"]}, "rules[1].referrers.types"),
])
def test_a_malformed_referrers_option_refuses_the_rules_naming_the_rule_and_field(value, field):
    with pytest.raises(ReplicationConfigError) as raised:
        rules({"source": A, "targets": [B]}, {"source": A, "targets": [C], "referrers": value})
    assert f"{field}: " in str(raised.value)


def test_the_rules_referrers_option_reaches_every_request_and_an_absent_one_leaves_it_to_the_setting():
    choice = {"artifactTypes": ["application/vnd.cncf.notary.signature"], "required": True}
    plain = plan_event(pushed(), rules({"source": A, "targets": [B]}))
    chosen = plan_event(pushed(), rules({"source": A, "targets": [B, C], "referrers": choice}))
    assert "referrers" not in plain.requests[0]
    assert [d["referrers"] for d in chosen.requests] == [choice, choice]
    request = validate_document(chosen.requests[0], SETTINGS)
    assert isinstance(request, ImportRequest) and request.referrers.required
    assert request.referrers.artifact_types == ("application/vnd.cncf.notary.signature",)


class Lookup:
    """ReferrerLookup from plain data (the pure step; test_replicate_on_push.py reads real registries)."""

    def __init__(self, referrers: dict | None = None, held: set | None = None, broken: bool = False) -> None:
        self.referrers, self.held, self.broken = referrers or {}, held or set(), broken

    def referrer(self, source, repository, digest):
        from shared.registry.client import RegistryError

        if self.broken:
            raise RegistryError("mysourceregistry.azurecr.io", 503, "UNAVAILABLE", "try later")
        return self.referrers.get((repository, digest))

    def holds(self, target, repository, digest):
        return (target.name, repository, digest) in self.held


SUBJECT = "sha256:" + "5" * 64


def test_an_untagged_push_of_a_referrer_is_imported_by_digest_where_its_subject_was_replicated():
    from shared.replication.replicate import PushedReferrer

    signature = Lookup({("aci-helloworld", DIGEST): PushedReferrer(SUBJECT, "application/vnd.cncf.notary.signature")},
                       held={("myregistry", "mirror/aci-helloworld", SUBJECT)})
    ruleset = rules({"source": A, "targets": [B, C], "targetPrefix": "mirror/"})

    plan = plan_event(pushed(tag=None), ruleset, signature)

    assert plan.state is State.RECEIVED and "referrer aci-helloworld@" in plan.reason
    [document] = plan.requests  # B holds the subject; C does not (its import will bring the referrer along)
    assert (document["target"], document["source"], document["untaggedTargetRepositories"]) == \
        (B, f"aci-helloworld@{DIGEST}", ["mirror/aci-helloworld"])
    request = validate_document(document, SETTINGS)
    assert isinstance(request, ImportRequest) and request.target_tags == ()
    assert plan_event(pushed(tag=None), ruleset, signature).requests[0]["id"] == document["id"]  # redelivery


def test_an_untagged_push_is_ignored_with_the_reason_when_it_is_no_referrer_or_no_rule_wants_it():
    from shared.replication.replicate import PushedReferrer

    sbom = {("aci-helloworld", DIGEST): PushedReferrer(SUBJECT, "application/spdx+json")}
    held = {("myregistry", "aci-helloworld", SUBJECT)}
    platform = plan_event(pushed(tag=None), rules({"source": A, "targets": [B]}), Lookup())
    assert platform.state is State.SKIPPED and "untagged manifest" in platform.reason
    filtered = plan_event(pushed(tag=None), rules({"source": A, "targets": [B], "referrers": {
        "artifactTypes": ["application/vnd.cncf.notary.signature"]}}), Lookup(sbom, held))
    assert filtered.state is State.SKIPPED and "admits its artifact type" in filtered.reason
    off = plan_event(pushed(tag=None), rules({"source": A, "targets": [B], "referrers": "none"}), Lookup(sbom, held))
    assert off.state is State.SKIPPED and "take no referrers" in off.reason
    early = plan_event(pushed(tag=None), rules({"source": A, "targets": [B]}), Lookup(sbom))
    assert early.state is State.SKIPPED and "lacks the subject" in early.reason
    unread = plan_event(pushed(tag=None), rules({"source": A, "targets": [B]}), Lookup(broken=True))
    assert unread.state is State.SKIPPED and "could not read whether it is a referrer" in unread.reason
