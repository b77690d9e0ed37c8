"""Which referrers a request asks for: one grammar for the request field, tracked images, replication rules and
the REFERRERS settings, every malformed form refused naming the field and the rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dev.app_settings import local_app_settings
from shared.core.outcome import Problem
from shared.core.referrers import (
    COSIGN_TAG_TYPES,
    ReferrerChoice,
    cosign_tag,
    count_by_type,
    parse_choice,
    parse_setting,
    schema_tag,
)
from shared.core.request import fingerprint, validate_document
from shared.core.settings import load_settings, read_settings

NOTARY = "application/vnd.cncf.notary.signature"
SPDX = "application/spdx+json"
DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(("value", "expected"), [
    ("all", ReferrerChoice()),
    ("none", ReferrerChoice(enabled=False)),
    ("required", ReferrerChoice(required=True)),
    ({"artifactTypes": [NOTARY]}, ReferrerChoice(artifact_types=(NOTARY,))),
    ({"artifactTypes": [NOTARY, SPDX, NOTARY], "required": True}, ReferrerChoice(artifact_types=(NOTARY, SPDX),
                                                                                 required=True)),
])
def test_each_form_reads_as_the_choice_it_names(value, expected):
    assert parse_choice(value, "referrers") == expected


@pytest.mark.parametrize(("value", "field", "words"), [
    ("All", "referrers", '"all", "none", "required"'),
    ("signatures", "referrers", '"all", "none", "required"'),
    ("", "referrers", '"all", "none", "required"'),
    (True, "referrers", '"all", "none", "required"'),
    (3, "referrers", '"all", "none", "required"'),
    (["all"], "referrers", '"all", "none", "required"'),
    (None, "referrers", '"all", "none", "required"'),
    ({}, "referrers.artifactTypes", "non-empty list"),
    ({"artifactTypes": []}, "referrers.artifactTypes", "non-empty list"),
    ({"artifactTypes": "application/spdx+json"}, "referrers.artifactTypes", "non-empty list"),
    ({"artifactTypes": [3]}, "referrers.artifactTypes[0]", "media type"),
    ({"artifactTypes": [NOTARY, "signature"]}, "referrers.artifactTypes[1]", "media type"),
    ({"artifactTypes": ["application/x y"]}, "referrers.artifactTypes[0]", "media type"),
    ({"artifactTypes": ["a/" + "b" * 200]}, "referrers.artifactTypes[0]", "media type"),
    ({"artifactTypes": [f"application/t{i}" for i in range(21)]}, "referrers.artifactTypes", "at most 20"),
    ({"artifactTypes": [NOTARY], "required": "yes"}, "referrers.required", "true or false"),
    ({"artifactTypes": [NOTARY], "requird": True}, "referrers.requird", "unknown field"),
])
def test_a_malformed_choice_names_the_field_and_the_rule(value, field, words):
    problem = parse_choice(value, "referrers")
    assert isinstance(problem, Problem)
    assert problem.field == field and words in problem.rule


def test_a_request_with_a_bad_referrers_field_is_rejected_with_every_other_problem():
    settings = load_settings(local_app_settings())
    rejected = validate_document({"source": "nginx", "mode": "Sometimes", "referrers": "signatures"}, settings)
    fields = {p.field for p in rejected.problems}
    assert {"mode", "referrers"} <= fields


def test_the_request_field_wins_over_the_setting_and_the_setting_is_the_default():
    settings = load_settings({**local_app_settings(), "REFERRERS": NOTARY, "REFERRERS_REQUIRED": "true"})
    assert validate_document({"source": "nginx"}, settings).referrers == ReferrerChoice((True), (NOTARY,), True)
    assert validate_document({"source": "nginx", "referrers": "all"}, settings).referrers == ReferrerChoice()
    assert validate_document({"source": "nginx", "referrers": "none"}, settings).referrers.enabled is False


def test_the_fingerprint_tells_choices_apart_and_keeps_older_requests_as_they_were():
    settings = load_settings(local_app_settings())
    plain = validate_document({"source": "nginx"}, settings)
    every = validate_document({"source": "nginx", "referrers": "all"}, settings)
    none = validate_document({"source": "nginx", "referrers": "none"}, settings)
    assert fingerprint(plain) != fingerprint(none) and fingerprint(every) != fingerprint(none)
    assert "referrers" not in plain.document  # an older row's fingerprint (no referrers field) still matches


@pytest.mark.parametrize(("text", "required", "expected"), [
    ("", False, ReferrerChoice()),
    ("all", True, ReferrerChoice(required=True)),
    ("none", True, ReferrerChoice(enabled=False)),
    (f"{NOTARY}, {SPDX}", False, ReferrerChoice(artifact_types=(NOTARY, SPDX))),
])
def test_the_setting_reads_all_none_or_types(text, required, expected):
    assert parse_setting(text, required) == expected


def test_a_broken_setting_is_reported_naming_it_and_imports_go_on_with_every_referrer():
    settings = read_settings({**local_app_settings(), "REFERRERS": "signatures"})
    assert [p.setting for p in settings.problems] == ["REFERRERS"]
    assert "media type" in settings.problems[0].message and settings.referrers == ReferrerChoice()


@given(st.lists(st.sampled_from([NOTARY, SPDX, "application/vnd.in-toto+json", *COSIGN_TAG_TYPES.values()]),
                min_size=1, max_size=5, unique=True), st.booleans(), st.sampled_from([NOTARY, SPDX, "x/y"]))
def test_a_choice_round_trips_through_its_document_and_admits_exactly_its_types(types, required, probe):
    choice = ReferrerChoice(artifact_types=tuple(types), required=required)
    assert parse_choice(choice.as_document(), "referrers") == choice
    assert choice.admits(probe) is (probe in types)
    for word in (ReferrerChoice(), ReferrerChoice(required=True), ReferrerChoice(enabled=False)):
        assert parse_choice(word.as_document(), "referrers") == word
    assert not ReferrerChoice(enabled=False).admits(probe)


def test_tags_follow_cosign_and_the_tag_schema():
    assert schema_tag(DIGEST) == "sha256-" + "ab" * 32
    assert cosign_tag(DIGEST, "sig") == "sha256-" + "ab" * 32 + ".sig"
    assert count_by_type([NOTARY, SPDX, NOTARY]) == f"{SPDX}=1, {NOTARY}=2"


@given(st.text(max_size=40))
def test_an_accepted_artifact_type_is_an_ascii_media_type_whatever_the_text(text):
    """Media types are ASCII (RFC 6838): `\\w` alone would let `applicatiön/x` through to a row and a log."""
    choice = parse_choice({"artifactTypes": [text]}, "referrers")
    setting = parse_setting(text, False)
    for accepted in (choice, setting):
        if isinstance(accepted, ReferrerChoice) and accepted.artifact_types:
            assert all(t.isascii() and t.isprintable() and t.count("/") == 1 for t in accepted.artifact_types)
    if isinstance(choice, Problem):
        assert choice.field.startswith("referrers.artifactTypes")


def test_the_counts_stay_short_whatever_the_registry_names():
    """A registry names the artifact types: 1,000 referrers of 1,000 types 250 characters long must not make
    the row too large for a table property (32K characters), which would leave the request unrecorded."""
    types = [f"application/{'x' * 230}{i:04d}" for i in range(1000)] + ["application/spdx+json"] * 3
    text = count_by_type(types)
    assert len(text) <= 2000 and text.startswith("application/spdx+json=3, ")
    assert text.endswith("more artifact types (1003 referrers in all)")
