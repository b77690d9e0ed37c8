"""The operator endpoints' pure parts, no stack: the health summary's counts and hourly buckets, the sign-in
check, and the bound on a dead letter kept in one table property."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from shared.azure.queues import letter_text
from shared.azure.status import MAX_LETTER_CHARS
from shared.ops.access import OperatorAccess
from shared.ops.health import summarise

NOW = datetime(2026, 12, 2, 17, 40, tzinfo=UTC)


def at(**ago: float) -> str:
    return (NOW - timedelta(**ago)).isoformat()


def test_counts_are_by_state_now_and_buckets_by_the_hour_something_ended():
    rows = [("succeeded", at(minutes=1)), ("failed", at(minutes=39)), ("rejected", at(minutes=41)),
            ("running", at(minutes=2)), ("received", at(hours=2)), ("skipped", at(hours=23, minutes=39)),
            ("succeeded", at(hours=23, minutes=41)),  # before the first whole hour: counted in the day only
            ("failed", at(hours=25)),  # older than a day: nowhere
            ("nonsense", at(minutes=1)), ("succeeded", "yesterday"), ("succeeded", "2026-12-02T17:00:00")]
    found = summarise(rows, NOW)
    assert found["counts"]["lastHour"] == {"received": 0, "running": 1, "retrying": 0, "succeeded": 1,
                                           "skipped": 0, "rejected": 1, "failed": 1}
    assert found["counts"]["lastDay"] == {"received": 1, "running": 1, "retrying": 0, "succeeded": 2,
                                          "skipped": 1, "rejected": 1, "failed": 1}
    timeline = found["timeline"]
    assert len(timeline) == 24
    assert timeline[0]["start"] == "2026-12-01T18:00:00+00:00" and timeline[-1]["end"] == "2026-12-02T18:00:00+00:00"
    assert (timeline[-1]["ended"], timeline[-1]["failed"]) == (2, 1)  # 17:00-18:00: succeeded, failed at 17:01
    assert (timeline[-2]["ended"], timeline[-2]["failed"]) == (1, 1)  # rejected at 16:59
    assert (timeline[0]["ended"], timeline[0]["failed"]) == (1, 0)  # skipped at 18:01 yesterday
    assert sum(b["ended"] for b in timeline) == 4


def test_entra_sign_in_is_checked_by_the_app_and_key_is_the_hosts():
    entra, key = OperatorAccess("entra"), OperatorAccess("key")
    assert (entra.auth_level, key.auth_level) == ("anonymous", "function")
    assert key.refusal({}) is None
    assert entra.refusal({"x-ms-client-principal-id": "abc"}) is None
    for headers in ({}, {"X-MS-CLIENT-PRINCIPAL-ID": "  "}, {"X-MS-CLIENT-PRINCIPAL-NAME": "someone"}):
        refused = entra.refusal(headers)
        assert refused is not None and refused.status == 401
        assert refused.body == {"errors": [{"field": "X-MS-CLIENT-PRINCIPAL-ID", "rule": refused.body["errors"][0]
                                            ["rule"]}]}


@given(st.text(max_size=50_000), st.recursive(st.text(max_size=2000), lambda inner: st.lists(inner, max_size=30),
                                             max_leaves=60))
def test_a_letter_of_any_reason_and_body_fits_one_table_property(reason, body):
    text = letter_text({"id": "x-1", "state": "failed", "reason": reason, "body": body}, MAX_LETTER_CHARS)
    assert len(text) <= MAX_LETTER_CHARS and text.isascii()
    letter = json.loads(text)
    assert letter["id"] == "x-1" and reason.startswith(letter["reason"]) and letter["reason"][:100] == reason[:100]
