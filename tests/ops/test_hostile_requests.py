"""Requests an attacker or a confused script sends the operator routes: any query string on every /api/ops route
(a 200, or a 400 naming the parameter; never a 500), asset names that try to leave the page's allowlist through
the runner's real HTTP server, and Entra principal headers that are repeated, huge or garbage.
"""

from __future__ import annotations

import base64
import http.client
import json
from urllib.parse import quote, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.ops.access import OperatorAccess, principal_roles
from shared.ops.page import ASSETS, PAGE_DIR
from tests.ops.test_ops_api import call

ROUTES = ("ops_list_imports", "ops_import_detail", "ops_health", "ops_refresh", "ops_replication")
NAMES = ["state", "since", "until", "q", "limit", "continuation", "code", "id", "x", "", "\u202e", "limit[]",
         "%", "a b", "\x00"]
# the fixtures (app_env) are per test; each example reads the same fresh table, so sharing them is sound
FIXTURE_SAFE = settings(suppress_health_check=[*settings().suppress_health_check,
                                               HealthCheck.function_scoped_fixture])


def query_text(pairs: list[tuple[str, str]], raw: str) -> str:
    encoded = "&".join(f"{quote(name, safe='')}={quote(value, safe='')}" for name, value in pairs)
    return "&".join(part for part in (encoded, raw) if part)


@FIXTURE_SAFE
@given(route=st.sampled_from(ROUTES), pairs=st.lists(st.tuples(st.sampled_from(NAMES), st.text(max_size=80)),
                                                     max_size=6),
       raw=st.text(alphabet="%=&+;#?/ abcdefFF0123456789\u00e9", max_size=40), request_id=st.text(max_size=300))
def test_any_query_on_any_route_is_answered_or_refused_by_name(app_env, route, pairs, raw, request_id):
    query = query_text(pairs, raw)
    answer = call(route, query, route_params={"id": request_id} if route == "ops_import_detail" else None)
    assert answer.status_code in (200, 400, 404), (route, query, answer.get_body())
    body = json.loads(answer.get_body())
    if answer.status_code != 200:
        assert body["errors"] and all(set(e) == {"field", "rule"} and e["field"] and e["rule"]
                                      for e in body["errors"])


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("query", ["limit=%EF%BC%95", "limit=1e2", "limit=00001", "limit=" + "9" * 5000,
                                   "%FF%FE=%FF", "limit&limit", "state=failed;q=x", "q=" + "%00" * 300,
                                   "continuation=" + "A" * 3000,
                                   "since=9999-12-31T23:59:59Z&until=0001-01-01T00:00:00Z",
                                   "since=0001-01-01T00:00:00-23:59"])
def test_raw_hostile_queries_on_each_route(app_env, route, query):
    answer = call(route, query, route_params={"id": "some-id"} if route == "ops_import_detail" else None)
    assert answer.status_code in (200, 400, 404), answer.get_body()


# --- the page's assets through the runner's real HTTP server --------------------------------------------------
ESCAPES = ["APP.JS", "App.css", "app.js%00", "app.js%2500", "..%2fpage.py", "%2e%2e/page.py", "%2e%2e%2fpage.py",
           "..%5cpage.py", "app.js%2f..%2f..%2fpage.py", "index.html", "app.js.", "app.js%20", ".%2fapp.js",
           "%61pp.js%2f", "page.py", "..", "%2e%2e", "app.js%3f", "app.js%23", "__init__.py", "app.js::$DATA"]


def raw_get(base: str, path: str, lines: list[tuple[str, str]] | tuple = ()) -> tuple[int, bytes]:
    """GET exactly `path` with exactly these header lines, repeats kept (requests would resolve `..` and
    merge a repeated header)."""
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=15)
    try:
        connection.putrequest("GET", path, skip_accept_encoding=True)
        for name, value in lines:
            connection.putheader(name, value)
        connection.endheaders()
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def test_asset_names_never_leave_the_allowlist(api):
    served = {(PAGE_DIR / name).read_bytes() for name in ASSETS}
    outside = [path.read_bytes() for path in PAGE_DIR.parent.glob("*.py")] + [(PAGE_DIR / "index.html").read_bytes()]
    for name in ESCAPES:
        for path in (f"/api/ui/{name}", f"/api/ui/{name}?code=x"):
            status, body = raw_get(api, path)
            assert status == 404, (path, status, body[:200])
            assert body not in served and all(body != text for text in outside), path
    for name in ASSETS:
        assert raw_get(api, f"/api/ui/{name}")[0] == 200


# --- Entra principal headers ----------------------------------------------------------------------------------
def encoded(value: object) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


DEEP = base64.b64encode(b"[" * 20_000).decode()  # JSON nested deeper than Python reads: RecursionError


def test_a_principal_nested_deeper_than_json_reads_grants_nothing():
    assert principal_roles(DEEP) == frozenset()
    assert principal_roles(base64.b64encode(b'{"claims": ' + b"[" * 5000 + b"]" * 5000 + b"}").decode()) == set()
    refused = OperatorAccess("entra", "reader").refusal({"X-MS-CLIENT-PRINCIPAL-ID": "a",
                                                         "X-MS-CLIENT-PRINCIPAL": DEEP})
    assert refused is not None and refused.status == 403


ROLE = "acr-importer.read"
GRANTED = encoded({"claims": [{"typ": "roles", "val": ROLE}]})
HOSTILE_HEADERS = [  # (header lines, expected status)
    ([("X-MS-CLIENT-PRINCIPAL-ID", "a"), ("X-MS-CLIENT-PRINCIPAL-ID", "b"), ("X-MS-CLIENT-PRINCIPAL", GRANTED)], 200),
    ([("X-MS-CLIENT-PRINCIPAL-ID", ""), ("X-MS-CLIENT-PRINCIPAL-ID", ""), ("X-MS-CLIENT-PRINCIPAL", GRANTED)], 401),
    ([("X-MS-CLIENT-PRINCIPAL-ID", "p" * 30_000), ("X-MS-CLIENT-PRINCIPAL", GRANTED)], 200),
    ([("X-MS-CLIENT-PRINCIPAL-ID", "a"), ("X-MS-CLIENT-PRINCIPAL", DEEP)], 403),
    ([("X-MS-CLIENT-PRINCIPAL-ID", "a"), ("X-MS-CLIENT-PRINCIPAL", "%%%" * 1000)], 403),
    ([("X-MS-CLIENT-PRINCIPAL-ID", "a"), ("X-MS-CLIENT-PRINCIPAL", GRANTED + "A" * 40_000)], 403),
    ([("X-MS-CLIENT-PRINCIPAL-ID", "a"), ("X-MS-CLIENT-PRINCIPAL", encoded({"claims": [{"typ": "roles", "val": 2**70}]
                                                                         }))], 403),
    ([("X-MS-CLIENT-PRINCIPAL-ID", "a"), ("X-MS-CLIENT-PRINCIPAL", GRANTED),
      ("X-MS-CLIENT-PRINCIPAL", encoded({"claims": []}))], 403),
]


@pytest.mark.parametrize("entra_api", [ROLE], indirect=True)
def test_hostile_principal_headers_through_the_runner(entra_api):
    for lines, expected in HOSTILE_HEADERS:
        for route in ("/api/ops/health", "/api/ops/imports", "/api/ops/imports/x-1"):
            status, body = raw_get(entra_api, route, lines)
            wanted = 404 if expected == 200 and route.endswith("x-1") else expected
            assert status == wanted, ([(n, v[:40]) for n, v in lines], route, status, body[:300])
            assert ROLE.encode() in body or status != 403
