"""The operator endpoints' pure parts, no stack: the health summary's counts and hourly buckets, the sign-in
check, and the bound on a dead letter kept in one table property."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.azure.queues import letter_text
from shared.azure.status import MAX_LETTER_CHARS
from shared.ops.access import OperatorAccess, principal_roles
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
    assert found["skipped"] == 3  # nonsense, yesterday, and a time without an offset


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


def encoded(value) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


ROLE_HEADERS = [  # X-MS-CLIENT-PRINCIPAL values that are not App Service's, or not carrying the role: none grants
    "", "not base64!", base64.b64encode(b"\xff\xfe").decode(), encoded([]), encoded("roles"), encoded({}),
    encoded({"claims": {"typ": "roles", "val": "reader"}}), encoded({"claims": [["roles", "reader"]]}),
    encoded({"claims": [{"typ": "roles", "val": ["reader"]}]}), encoded({"claims": [{"typ": "role", "val": "reader"}]}),
    encoded({"claims": [{"typ": "roles", "val": "Reader"}]}), encoded({"claims": [{"typ": "roles", "val": "reader "}]}),
    encoded({"claims": [{"typ": "groups", "val": "reader"}], "role_typ": ["groups"]}),
    encoded({"claims": [{"typ": "roles", "val": "reader"}], "pad": "x" * 40_000}),
    " " + encoded({"claims": [{"typ": "roles", "val": "reader"}]})[:-2],
]


@pytest.mark.parametrize("header", ROLE_HEADERS, ids=range(len(ROLE_HEADERS)))
def test_a_principal_header_that_does_not_carry_the_role_is_refused(header):
    refused = OperatorAccess("entra", "reader").refusal({"X-MS-CLIENT-PRINCIPAL-ID": "a",
                                                         "X-MS-CLIENT-PRINCIPAL": header})
    assert refused is not None and refused.status == 403
    assert refused.body["errors"][0]["field"] == "X-MS-CLIENT-PRINCIPAL"


def test_the_role_is_read_from_the_claim_type_app_service_names_and_the_header_in_any_case():
    role_typ = encoded({"claims": [{"typ": "custom/role", "val": "reader"}], "role_typ": "custom/role"})
    assert principal_roles(role_typ) == {"reader"}
    assert OperatorAccess("entra", "reader").refusal({"x-ms-client-principal-id": "a",
                                                      "x-ms-client-principal": role_typ}) is None
    assert OperatorAccess("key", "reader").refusal({}) is None  # the host's key decides; roles are Entra's


@given(st.text(max_size=300))
def test_any_principal_header_grants_at_most_the_roles_it_names(header):
    assert OperatorAccess("entra", "reader").refusal({"X-MS-CLIENT-PRINCIPAL-ID": "a",
                                                      "X-MS-CLIENT-PRINCIPAL": header}) is not None


@given(st.text(max_size=50_000), st.recursive(st.text(max_size=2000), lambda inner: st.lists(inner, max_size=30),
                                             max_leaves=60))
def test_a_letter_of_any_reason_and_body_fits_one_table_property(reason, body):
    text = letter_text({"id": "x-1", "state": "failed", "reason": reason, "body": body}, MAX_LETTER_CHARS)
    assert len(text) <= MAX_LETTER_CHARS and text.isascii()
    letter = json.loads(text)
    assert letter["id"] == "x-1" and reason.startswith(letter["reason"]) and letter["reason"][:100] == reason[:100]
