"""GET /api/imports: filters, paging with the continuation token, and hostile query strings.

The stack tests go through the runner's real HTTP server (function key and all) to a real status table in
Azurite; rows are written with `StatusStore.create` so their states and times are the test's. The query
rules are also checked without the stack, straight on `parse_list_query`."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from shared.azure.status import StatusRecord, StatusStore
from shared.core.outcome import State
from shared.core.settings import load_settings
from shared.imports.listing import (
    MAX_LIMIT,
    ListQuery,
    decode_continuation,
    encode_continuation,
    parse_list_query,
)
from tests.conftest import FUNCTION_KEY as KEY

BASE = datetime(2026, 11, 1, tzinfo=UTC)
XSS_SOURCE = "docker.io/library/<script>alert(1)</script>:1"
XSS_REASON = '"><img src=x onerror=alert(document.cookie)> and </script><script>alert(2)</script>'


def row(request_id: str, state: State, day: int, **fields) -> StatusRecord:
    at = (BASE + timedelta(days=day)).isoformat()
    return StatusRecord(id=request_id, state=state, source=fields.pop("source", f"docker.io/library/{request_id}:1"),
                        target="myregistry.azurecr.io", target_tags=fields.pop("target_tags", [f"{request_id}:1"]),
                        created_at=at, updated_at=at, transitions=[{"state": str(state), "at": at}], **fields)


@pytest.fixture
def rows(app_env):
    """One row per state on days 0..6, an XSS-looking rejected row, a unicode one: written to the app's table."""
    store = StatusStore(load_settings().status_table)
    written = [row(f"req-{i}-{state}", state, i, reason=f"reason of {state}") for i, state in enumerate(State)]
    written.append(row("req-xss", State.REJECTED, 7, source=XSS_SOURCE, reason=XSS_REASON))
    written.append(row("req-unicode", State.FAILED, 8, reason="Größe überschritten ✓", target_tags=["Ünï:tag"]))
    for record in written:
        assert store.create(record) is not None
    return store, written


def get(api: str, params=(), **kwargs) -> requests.Response:
    kwargs.setdefault("headers", {"x-functions-key": KEY})
    return requests.get(f"{api}/imports", params=list(params), timeout=10, **kwargs)


def ids(answer: requests.Response) -> list[str]:
    assert answer.status_code == 200, answer.text
    return [item["id"] for item in answer.json()["items"]]


def fields(answer: requests.Response) -> list[str]:
    assert answer.status_code == 400, answer.text
    errors = answer.json()["errors"]
    assert all(set(e) == {"field", "rule"} for e in errors)
    return [e["field"] for e in errors]


def test_every_filter_narrows_the_list(api, rows):
    _, written = rows
    everything = get(api)
    assert ids(everything) == sorted(r.id for r in written)  # id order, documented
    assert everything.json()["continuation"] is None
    assert everything.headers["Content-Type"].startswith("application/json")
    assert ids(get(api, [("state", "failed")])) == ["req-6-failed", "req-unicode"]
    assert ids(get(api, [("state", "failed,succeeded")])) == ["req-3-succeeded", "req-6-failed", "req-unicode"]
    assert ids(get(api, [("state", "skipped"), ("state", "running")])) == ["req-1-running", "req-4-skipped"]
    assert ids(get(api, [("since", "2026-11-07T00:00:00Z")])) == ["req-6-failed", "req-unicode", "req-xss"]
    assert ids(get(api, [("until", "2026-11-01T23:59:59.999+00:00")])) == ["req-0-received"]
    # an offset is honoured: 2026-11-03T01:00+02:00 is 2026-11-02T23:00Z
    assert ids(get(api, [("since", "2026-11-02T00:00:00Z"), ("until", "2026-11-03T01:00:00+02:00")])) == \
        ["req-1-running"] == ids(get(api, [("since", "2026-11-02T00:00:00Z"), ("until", "2026-11-02T00:00:00Z")]))
    assert ids(get(api, [("q", "REQ-5")])) == ["req-5-rejected"]  # id, any case
    assert ids(get(api, [("q", "reason of SUCC")])) == ["req-3-succeeded"]  # reason
    assert ids(get(api, [("q", "ünï:TAG")])) == ["req-unicode"]  # a target tag, unicode case-folded
    assert ids(get(api, [("q", "GRÖSSE")])) == ["req-unicode"]  # casefold: ß matches SS
    assert ids(get(api, [("q", "<SCRIPT>")])) == ["req-xss"]  # source
    assert ids(get(api, [("q", "' or State eq 'x")])) == []  # text is never OData
    assert ids(get(api, [("state", "rejected"), ("q", "xss"), ("since", "2026-11-08T00:00:00Z")])) == ["req-xss"]


def test_a_stored_xss_attempt_comes_back_as_plain_json_text(api, rows):
    answer = get(api, [("q", "req-xss")])
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    item = answer.json()["items"][0]
    assert item["source"] == XSS_SOURCE and item["reason"] == XSS_REASON
    assert item == requests.get(f"{api}/imports/req-xss", headers={"x-functions-key": KEY}, timeout=10).json()


def test_paging_sees_every_row_exactly_once(api, app_env):
    store = StatusStore(load_settings().status_table)
    every = [row(f"page-{i:03d}", State.SUCCEEDED if i % 3 else State.FAILED, i % 10) for i in range(57)]
    for record in every:
        store.create(record)
    default = get(api)
    assert len(ids(default)) == 50 and default.json()["continuation"]  # the default limit

    def walk(params: list[tuple[str, str]]) -> tuple[list[str], int]:
        seen, token, pages = [], None, 0
        while True:
            answer = get(api, params + ([("continuation", token)] if token else []))
            assert len(ids(answer)) <= int(dict(params).get("limit", "50"))
            seen += ids(answer)
            pages += 1
            token = answer.json()["continuation"]
            if token is None:
                return seen, pages
            assert pages < 100

    seen, pages = walk([("limit", "7")])
    assert seen == sorted(r.id for r in every) and pages >= 57 // 7
    failed = sorted(r.id for r in every if r.state is State.FAILED)
    assert walk([("limit", "4"), ("state", "failed")])[0] == failed
    assert walk([("limit", "2"), ("q", "PAGE-0")])[0] == [i for i in sorted(r.id for r in every) if "page-0" in i]
    assert ids(get(api, [("limit", str(MAX_LIMIT))])) == sorted(r.id for r in every)
    assert ids(get(api, [("limit", "1")])) == ["page-000"]


def test_a_text_filter_reads_its_bounded_scan_in_growing_service_pages(app_env):
    """A rare match: one call reads PAGE_SCAN_ROWS rows in 3 service requests (100, 400, 500), not 10, and the
    calls still see every row once, in id order. A common match reads one service page of 100."""
    from azure.data.tables import TableClient

    from benchmarks.ops import TableReads
    from dev import layout
    from shared.azure import status

    store = StatusStore(load_settings().status_table)
    every = [row(f"scan-{i:05d}", State.SUCCEEDED, i % 20, reason="needle" if i % 700 == 3 else "")
             for i in range(2100)]
    store.create(every[0])  # the store makes its table on first use
    table = TableClient.from_connection_string(layout.AZURITE_CONNECTION_STRING, load_settings().status_table)
    for start in range(0, len(every), 100):
        table.submit_transaction([("upsert", r.to_entity()) for r in every[start:start + 100]])

    def needle(record: StatusRecord) -> bool:
        return "needle" in record.reason

    reads = TableReads()
    with reads.installed():
        first = store.page(limit=5, keep=needle)
        assert (reads.rows, reads.pages) == (status.PAGE_SCAN_ROWS, 3)
        seen, after, calls = [r.id for r in first.records], first.after, 1
        while after is not None:
            found = store.page(limit=5, keep=needle, after=after)
            seen, after, calls = seen + [r.id for r in found.records], found.after, calls + 1
        assert seen == [r.id for r in every if needle(r)] and calls == 3
        before = reads.mark()
        common = store.page(limit=5, keep=lambda record: True)
        assert len(common.records) == 5 and reads.mark()[1] - before[1] == 1
        assert reads.mark()[0] - before[0] == status.PAGE_SCAN_FIRST


@pytest.mark.parametrize(("params", "field"), [
    ([("limit", "0")], "limit"), ([("limit", str(MAX_LIMIT + 1))], "limit"), ([("limit", "-1")], "limit"),
    ([("limit", "1e3")], "limit"), ([("limit", "٣")], "limit"),
    ([("state", "done")], "state"), ([("state", "FAILED")], "state"), ([("state", "failed,nope")], "state"),
    ([("since", "2026-11-01")], "since"), ([("since", "2026-11-01T00:00:00")], "since"),
    ([("since", "2026-11-01T00:00:00 00:00")], "since"),  # an unescaped '+' arrives as a space
    ([("since", "2026-13-01T00:00:00Z")], "since"), ([("until", "٢٠٢٦-11-01T00:00:00Z")], "until"),
    ([("since", "2026-11-02T00:00:00Z"), ("until", "2026-11-01T00:00:00Z")], "until"),
    ([("q", "x" * 201)], "q"),
    ([("continuation", "!!!")], "continuation"), ([("continuation", "bm90IGpzb24")], "continuation"),
    ([("continuation", base64.urlsafe_b64encode(b'{"v": 2, "after": "x"}').decode())], "continuation"),
    ([("continuation", "A" * 5000)], "continuation"),
    ([("since", "2026-11-01T00:00:00Z"), ("since", "2026-11-02T00:00:00Z")], "since"),
    ([("limit", "5"), ("limit", "5")], "limit"),
    ([("colour", "blue")], "colour"),
])
def test_bad_parameters_are_a_400_naming_the_parameter(api, params, field):
    assert fields(get(api, params)) == [field]


def test_every_bad_parameter_is_named_at_once_and_empty_values_are_no_filter(api, rows):
    answer = get(api, [("state", "x"), ("since", "yesterday"), ("limit", "many"), ("q", "q" * 500)])
    assert sorted(fields(answer)) == ["limit", "q", "since", "state"]
    everything = ids(get(api))
    assert ids(get(api, [(name, "") for name in ("state", "since", "until", "q", "limit", "continuation")])) == \
        everything


def test_a_tampered_continuation_is_refused(api, app_env):
    store = StatusStore(load_settings().status_table)
    for i in range(3):
        store.create(row(f"t-{i}", State.SUCCEEDED, i))
    token = get(api, [("limit", "1")]).json()["continuation"]
    assert ids(get(api, [("limit", "1"), ("continuation", token)])) == ["t-1"]
    tampered = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    assert fields(get(api, [("continuation", tampered)])) == ["continuation"]
    assert fields(get(api, [("continuation", token + "%")])) == ["continuation"]


def test_the_function_key_is_required(api):
    assert get(api, headers={}).status_code == 401
    assert get(api, headers={"x-functions-key": "wrong"}).status_code == 401
    assert requests.get(f"{api}/imports", params={"code": KEY}, timeout=10).status_code == 200


# --- the rules alone, no stack -------------------------------------------------------------------------------


def test_the_query_parses_to_its_values():
    query = parse_list_query([("code", "k"), ("state", "failed, rejected"), ("state", "failed"),
                              ("since", "2026-11-01t10:00:00.123456789z"), ("q", "Ünï"), ("limit", "200")])
    assert query == ListQuery(states=(State.FAILED, State.REJECTED),
                              since=datetime(2026, 11, 1, 10, 0, 0, 123456, tzinfo=UTC), text="Ünï", limit=200)


def test_continuation_round_trips_any_row_key():
    for key in ("a", "x" * 1024, "ünï'\"<>", "req-1"):
        assert decode_continuation(encode_continuation(key)) == key
    assert decode_continuation(base64.urlsafe_b64encode(json.dumps({"v": True, "after": "a"}).encode()).decode()) \
        is None


@given(st.lists(st.tuples(st.sampled_from(["state", "since", "until", "q", "limit", "continuation", "code", "x"]),
                          st.text(max_size=300))))
def test_any_query_is_parsed_or_refused_never_raised(pairs):
    answer = parse_list_query(pairs)
    assert isinstance(answer, ListQuery) or all(p.field and p.rule for p in answer)


@given(st.text(max_size=3000))
def test_any_text_as_a_token_decodes_or_is_refused(token):
    after = decode_continuation(token)
    assert after is None or decode_continuation(encode_continuation(after)) == after


@pytest.mark.parametrize(("query", "expected"), [
    ("state=%FF", ["state"]), ("limit=%EF%BC%95", ["limit"]), ("since=%00", ["since"]),
    ("%E2%80%AE=1", ["\u202e"]), ("q=%00%0A%1B%5B31m", []), ("q=" + "%F0%9F%98%80" * 200, []),
    ("q=" + "%F0%9F%98%80" * 201, ["q"]), ("state&q&limit", []), ("state=failed&state=&state=,", []),
    ("continuation=eyJ2IjogMSwgImFmdGVyIjogIm5pZ2h0bHktNDIifQ%3D%3D", []),
])
def test_raw_hostile_query_strings_are_answered_never_a_500(api, query, expected):
    """As a browser or a script may send them: bad UTF-8, control characters, a bidi override as a name,
    fullwidth digits, names without values. 200 or a 400 naming the parameter (as decoded), never a 500."""
    answer = requests.get(f"{api}/imports?{query}", headers={"x-functions-key": KEY}, timeout=10)
    if expected:
        assert fields(answer) == expected
    else:
        assert answer.status_code == 200 and answer.json()["items"] == [], answer.text
