"""Semver ranges in tracked images are read strictly: a typo is reported with its entry and field, never read
loosely into a wider range (node-semver's loose reading turns `>=1.25 <<2` into `>=1.25`, every later major
version). Pure: no stack."""

from __future__ import annotations

import json

import nodesemver
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.refresh.tracked import parse_config, range_problem, select_tags
from tests.refresh.test_tracked import SETTINGS, rule

RULE_TEXT = "npm range syntax, read strictly"

# (range, what node-semver's loose reading would have made of it, or None where it refuses it too)
BAD_RANGES = [
    (">=1.25 <<2", ">=1.25.0"),
    (">=1.25 foo", ">=1.25.0"),
    ("1.2.3 foo", "1.2.3"),
    ("01.2.3", "1.2.3"),
    (">=1.25 <2 y", None),
    ("1.2.3.4", None),
    ("^^1", None),
    ("~~1.2", None),
    (">=1.25,<2", None),
    ("=>1", None),
    ("<=>1", None),
    ("1.2.", None),
    ("latest", None),
    (">>=one", None),
    ("1.25 |", None),
    ("  ", None),
]


def config(*entries: dict) -> str:
    return json.dumps({"version": 1, "images": list(entries)})


@pytest.mark.parametrize(("text", "loosely"), BAD_RANGES)
def test_a_bad_range_is_reported_with_its_entry_and_field(text, loosely):
    parsed = parse_config(config({"source": "nginx", "tags": ["1.27"]}, {"source": "nginx", "tags": ["1.26"]},
                                 {"source": "nginx", "semver": text}), SETTINGS)
    assert [i.index for i in parsed.images] == [0, 1], "the bad entry must not run (with a wider range)"
    assert [p.field for p in parsed.problems] == ["images[2].semver"]
    message = str(parsed.problems[0])
    assert message.startswith("images[2].semver: is ")
    assert (RULE_TEXT in message) if text.strip() else ("'*' for every version" in message)
    if loosely is not None:  # the loose reading really would have widened it: the case is worth having
        assert str(nodesemver.make_range(text, loose=True).range) == loosely


@pytest.mark.parametrize("text", [">=1.25 <2", "^1.24", "~1.27", "1.x", "1.2 - 1.4", ">= 1.25", "v1.26",
                                  "=1.27.0", "1.25 || 2.x", "*", ">=1.28.0-rc1"])
def test_good_ranges_are_accepted(text):
    parsed = parse_config(config({"source": "nginx", "semver": text}), SETTINGS)
    assert parsed.problems == () and parsed.images[0].rule.semver == text


def test_a_non_string_range_is_a_problem_not_a_crash():
    assert range_problem(3) == "is not a version range: must be a string"


# --- the class: whatever is accepted is read exactly as node-semver's strict reading -----------------
_OPS = st.sampled_from(["", "=", ">", ">=", "<", "<=", "^", "~", "v", "<<", "=>", "^^", "~>"])
_NUMBER = st.sampled_from(["0", "1", "2", "25", "01", "x", "*"])
_VERSION = st.lists(_NUMBER, min_size=1, max_size=4).map(".".join)
_PART = st.one_of(st.tuples(_OPS, _VERSION).map("".join), st.sampled_from(["foo", "-", "||", ",", "1.2.3-rc1"]))
_RANGES = st.lists(_PART, min_size=1, max_size=4).map(" ".join)
_TAGS = st.lists(st.sampled_from(["0.9", "1", "1.0", "1.2", "1.2.3", "1.24", "1.25", "1.25.3", "1.26",
                                  "1.26-alpine", "1.28.0-rc1", "2", "2.0", "2.1.0", "3.0", "latest"]),
                 unique=True, max_size=12)


def _strict(text: str):
    try:
        return nodesemver.make_range(text, loose=False)
    except (ValueError, TypeError):
        return None


@given(_RANGES, _TAGS)
def test_an_accepted_range_selects_exactly_what_the_strict_reading_selects(text, listed):
    strict = _strict(text)
    problem = range_problem(text)
    assert (problem is None) == (strict is not None and bool(text.strip()))
    if problem is not None:
        return
    assert str(nodesemver.make_range(text, loose=True).range) == str(strict.range), \
        "an accepted range must mean the same however it is read"
    chosen = select_tags(rule(semver=text), listed)
    expected = [t for t in listed
                if (v := _loose_version(t)) is not None and not v.prerelease and strict.test(v.version)]
    assert sorted(chosen) == sorted(expected)


@given(_RANGES.filter(lambda t: range_problem(t) is None and t.strip()), st.sampled_from(["<<2", "foo", ",", "^^1"]))
def test_anything_left_over_after_a_good_range_is_refused(text, junk):
    assert range_problem(f"{text} {junk}") is not None


def _loose_version(tag: str):
    try:
        return nodesemver.make_semver(tag, loose=True)
    except (ValueError, TypeError):
        return None
