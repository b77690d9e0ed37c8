"""The unknown-field error names only the fields a producer may send: `retry` and `operation` are the app's
own (older versions wrote them on their follow-ups) and are never offered to someone fixing a request.
Pure: no stack."""

from __future__ import annotations

import json

import pytest

from shared.core.request import APP_FIELDS, Rejected, parse_request
from tests.refresh.test_tracked import SETTINGS

PRODUCER_FIELDS = ("credential, id, mode, password, referrers, source, sourceRegistry, target, targetTags, "
                   "untaggedTargetRepositories, username, version")


@pytest.mark.parametrize(("extra", "named"), [
    ({"colour": "blue"}, "colour"),
    ({"Mode": "Force"}, "Mode"),
    ({"credentials": {"username": "u"}}, "credentials"),
    ({"target_tags": ["a:b"], "tags": ["a:b"]}, "tags, target_tags"),
    ({"retries": 3}, "retries"),
])
def test_an_unknown_field_lists_exactly_the_fields_a_producer_may_send(extra, named):
    rejected = parse_request(json.dumps({"source": "nginx:1.27", "targetTags": ["nginx:1.27"], **extra}), SETTINGS)
    assert isinstance(rejected, Rejected)
    assert [str(p) for p in rejected.problems] == [f"{named}: unknown field; allowed fields are {PRODUCER_FIELDS}"]
    for own in APP_FIELDS:
        assert own not in rejected.problems[0].rule.split("allowed fields are ", 1)[1].split(", ")
