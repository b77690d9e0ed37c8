"""Tracked-images configuration and tag selection: pure, no stack."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.core.settings import load_settings
from shared.refresh.tracked import (
    APP_ROOT,
    TagRule,
    TrackedConfigError,
    parse_config,
    read_config_text,
    select_tags,
)

TARGET = "/subscriptions/11111111-1111-4111-8111-111111111111/resourceGroups/rg/providers/" \
         "Microsoft.ContainerRegistry/registries/myregistry"
SETTINGS = load_settings({"TARGET_REGISTRY": TARGET, "SOURCE_CREDENTIALS__HUB__USERNAME": "u",
                          "SOURCE_CREDENTIALS__HUB__PASSWORD": "p", "SOURCE_CREDENTIALS__HUB__REGISTRIES": "docker.io"})
LISTED = ["1.24", "1.25", "1.25.3", "1.26", "1.26-alpine", "1.27", "1.28.0-rc1", "2.0", "latest", "mainline"]


def config(*entries: dict) -> str:
    return json.dumps({"version": 1, "images": list(entries)})


def rule(**kwargs) -> TagRule:
    for name in ("include", "exclude"):
        kwargs[name] = tuple(re.compile(p) for p in kwargs.get(name, ()))
    kwargs["tags"] = tuple(kwargs.get("tags", ()))
    return TagRule(**kwargs)


def test_the_shipped_example_is_valid():
    parsed = parse_config(read_config_text("tracked-images.json"), SETTINGS)
    assert parsed.problems == () and len(parsed.images) >= 3
    assert (APP_ROOT / "tracked-images.json").exists()


def test_defaults_follow_az_acr_import_and_prefixes_apply():
    parsed = parse_config(config({"source": "nginx", "tags": ["1.27"]},
                                 {"source": "mcr.microsoft.com/dotnet/runtime", "tags": ["8.0"],
                                  "targetPrefix": "mirror/"},
                                 {"source": "docker.io/bitnami/redis", "tags": ["7"], "targetRepository": "cache/redis",
                                  "credential": "hub"}), SETTINGS)
    assert parsed.problems == ()
    nginx, dotnet, redis = parsed.images
    assert (nginx.source.registry, nginx.source.repository, nginx.target_repository) == \
        ("docker.io", "library/nginx", "nginx")
    assert dotnet.target_repository == "mirror/dotnet/runtime"
    assert redis.target_repository == "cache/redis" and redis.credential == "hub"
    assert str(nginx.target) == TARGET


def test_bad_entries_are_reported_by_entry_and_field_and_the_valid_ones_still_run():
    parsed = parse_config(config(
        {"source": "nginx", "tags": ["1.27"]},
        {"source": "nginx:1.27", "tags": ["x"]},
        {"source": "nginx", "semver": ">>=one"},
        {"source": "nginx", "include": ["(unclosed"]},
        {"source": "mcr.microsoft.com/x", "tags": ["a"], "credential": "hub"},
        {"source": "nginx", "tags": ["a"], "credential": "nope"},
        {"source": "nginx"},
        {"source": "nginx", "tags": ["a"], "colour": "blue"},
        {"source": "nginx", "newest": 0},
        {"source": "nginx", "tags": ["a"], "targetRepository": "x", "targetPrefix": "y/"},
        {"source": "nginx", "tags": ["a"], "target": "/subscriptions/nope"},
    ), SETTINGS)
    assert [i.index for i in parsed.images] == [0]
    fields = [p.field for p in parsed.problems]
    assert fields == ["images[1].source", "images[2].semver", "images[3].include[0]", "images[4].credential",
                      "images[5].credential", "images[6].tags", "images[7]", "images[8].newest",
                      "images[9].targetPrefix", "images[10].target"]
    assert "colour" in parsed.problems[6].rule


def test_unreadable_configuration_is_one_clear_error():
    with pytest.raises(TrackedConfigError, match="not JSON"):
        parse_config("{", SETTINGS)
    with pytest.raises(TrackedConfigError, match='"images"'):
        parse_config("[]", SETTINGS)
    with pytest.raises(TrackedConfigError, match="cannot read"):
        read_config_text("/nonexistent/tracked.json")


def test_explicit_tags_need_no_listing():
    chosen = rule(tags=["1.27", "latest"])
    assert not chosen.needs_listing
    assert select_tags(chosen, None) == ["1.27", "latest"]


def test_semver_range_excludes_prereleases_and_suffixed_tags_by_default():
    assert select_tags(rule(semver=">=1.25 <2"), LISTED) == ["1.27", "1.26", "1.25.3", "1.25"]
    with_pre = select_tags(rule(semver=">=1.25 <2", prereleases=True), LISTED)
    assert "1.28.0-rc1" in with_pre and "1.26-alpine" in with_pre


def test_include_exclude_and_newest_n():
    assert select_tags(rule(include=[r"1\.2[4-6].*"], exclude=[r".*-alpine"]), LISTED) == \
        ["1.24", "1.25", "1.25.3", "1.26"]
    assert select_tags(rule(semver="^1.24", newest=2), LISTED) == ["1.27", "1.26"]
    assert select_tags(rule(include=["latest|mainline"]), LISTED) == ["latest", "mainline"]


def test_exclude_wins_even_over_explicit_tags():
    assert select_tags(rule(tags=["1.27", "1.26"], semver=">=1.25 <2", exclude=[r"1\.26.*"]), LISTED) == \
        ["1.27", "1.25.3", "1.25"]


@given(st.lists(st.from_regex(r"[0-9]{1,2}(\.[0-9]{1,2}){0,2}(-[a-z]{1,5})?", fullmatch=True), max_size=30),
       st.integers(min_value=1, max_value=5))
def test_newest_n_never_returns_more_than_n_or_an_unlisted_or_prerelease_tag(listed, n):
    chosen = select_tags(rule(newest=n), listed)
    assert len(chosen) <= n and set(chosen) <= set(listed)
    assert not any("-" in tag for tag in chosen)


BAD_REFERRERS = [
    ("some", "images[1].referrers"), (5, "images[1].referrers"), ([], "images[1].referrers"),
    ({"artifactTypes": []}, "images[1].referrers.artifactTypes"),
    ({"artifactTypes": ["not a type"]}, "images[1].referrers.artifactTypes[0]"),
    ({"artifactTypes": ["application/spdx+json", 7]}, "images[1].referrers.artifactTypes[1]"),
    ({"required": "yes"}, "images[1].referrers.required"),
    ({"artifactTypes": ["application/spdx+json"], "colour": "blue"}, "images[1].referrers.colour"),
]


@pytest.mark.parametrize(("value", "field"), BAD_REFERRERS)
def test_a_malformed_referrers_option_names_the_entry_and_field_and_the_others_still_run(value, field):
    parsed = parse_config(config({"source": "nginx", "tags": ["1.27"]},
                                 {"source": "redis", "tags": ["7"], "referrers": value}), SETTINGS)
    assert [i.index for i in parsed.images] == [0]
    assert [p.field for p in parsed.problems] == [field], parsed.problems


def test_the_referrers_option_in_every_form_reaches_the_request_and_an_absent_one_leaves_it_to_the_setting():
    from shared.core.request import ImportRequest, validate_document
    from shared.refresh.run import import_document

    forms = ["all", "none", "required", {"artifactTypes": ["application/vnd.cncf.notary.signature"]},
             {"artifactTypes": ["application/spdx+json"], "required": True}]
    parsed = parse_config(config({"source": "nginx", "tags": ["1"]},
                                 *({"source": "nginx", "tags": ["1"], "referrers": f} for f in forms)), SETTINGS)
    assert parsed.problems == ()
    documents = [import_document(image, "1", "sha256:" + "a" * 64, "") for image in parsed.images]
    assert "referrers" not in documents[0]
    assert [d["referrers"] for d in documents[1:]] == [
        "all", "none", "required", {"artifactTypes": ["application/vnd.cncf.notary.signature"], "required": False},
        {"artifactTypes": ["application/spdx+json"], "required": True}]
    for document, image in zip(documents, parsed.images, strict=True):
        request = validate_document(document, SETTINGS)
        assert isinstance(request, ImportRequest)
        assert request.referrers == (image.referrers or SETTINGS.referrers)
