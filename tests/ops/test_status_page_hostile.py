"""The status page fed hostile stored text in every field it renders, in Debian's headless Chromium: markup and
script payloads, very long words, bidi controls and newlines in request rows (every column, every detail field,
transitions, the dead letter and its body), refresh runs (problems, backoff hosts, rate-limit hosts) and
replication events (repository, tag, reason, outcome, imports), plus rows the endpoints cannot read.

All of it is inert (no script runs: a global flag stays unset, no CSP report), shown literally, and the page
keeps its layout at 1280x800 (nothing scrolls sideways, not the page and not a table). The function key stays
out of the address bar, the page's text and every request to another origin.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from dev import browser
from shared.azure.status import DEAD_LETTER_PARTITION, REPLICATION_PARTITION
from shared.replication.journal import row_key
from tests.conftest import FUNCTION_KEY as KEY
from tests.ops.browsing import by_css, one, open_page, table_rows, wait
from tests.ops.test_hostile_rows import int64, status_row, table

FLAG = "window.__xss"
MARKUP = ['<img src=x onerror="window.__xss=1">', "<script>window.__xss=2</script>", '"><svg onload=window.__xss=3>',
          "javascript:window.__xss=4", "<iframe srcdoc='<script>parent.__xss=5</script>'>"]
LONG = "W" * 3000  # one word, no place to break
BIDI = "\u202eevil\u202c\u2066iso\u2069\u200f"
NEWLINES = "line one\nline two\r\n\tindented"


def hostile(tag: str) -> str:
    """Every kind of payload in one value (the markup first, so a row shows it)."""
    return f"{tag} {' '.join(MARKUP)} {BIDI} {NEWLINES} {LONG}"


ID = 'x<img src=x onerror="window.__xss=6">' + "\u202e" + "L" * 200  # a row key: no '/', '\\', '#', '?'
DETAIL = "hostile-1"  # the row opened in the detail view (a hostile id is listed but is no request id: a 400)


def seed(app_env) -> None:
    rows = table(app_env)
    now = datetime.now(UTC)
    stamp = now.isoformat()
    text_columns = ("Source", "Target", "Mode", "Reason", "Kind", "Code", "Digest", "Referrers", "ReferrerDigests")
    rows.upsert_entity(status_row(ID, Reason=hostile("Reason"), UpdatedAt=stamp))
    rows.upsert_entity(status_row(
        DETAIL, State="failed", **{name: hostile(name) for name in text_columns},
        TargetTags=json.dumps([hostile("tag"), LONG]), UntaggedTargetRepositories=json.dumps([hostile("untagged")]),
        BackupTags=json.dumps([hostile("backup")]), Attempts=int64(2**62), Platforms=int64(2**40),
        CreatedAt=hostile("created"), UpdatedAt=stamp,
        Transitions=json.dumps([{"state": hostile("state"), "at": hostile("at")}, {"state": "failed", "at": stamp}])))
    rows.upsert_entity(status_row("y-garbage", Transitions="not json", Platforms="many", UpdatedAt=stamp))
    rows.upsert_entity(status_row("z-unknown-" + MARKUP[0], State=hostile("state"), UpdatedAt=stamp))
    letter = {"id": DETAIL, "state": hostile("state"), "reason": hostile("reason"), "kind": hostile("kind"),
              "code": hostile("code"), "attempts": 2**62, "deadLetteredAt": hostile("at"),
              "body": {hostile("key"): [hostile("value")], "source": MARKUP[1]}}
    rows.upsert_entity({"PartitionKey": DEAD_LETTER_PARTITION, "RowKey": DETAIL, "Letter": json.dumps(letter)})
    started = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    run = {"startedAt": started, "durationMs": 2**62, "dryRun": True, "checked": 1, "errors": 2,
           "problems": [hostile(f"problem {i}") for i in range(3)], "problemsOmitted": 2**40,
           "rateLimitRemaining": {hostile("limit-host"): 2**40, LONG: None},
           "backoffUntil": {hostile("backoff-host"): (now + timedelta(hours=1)).isoformat(),
                            LONG: (now + timedelta(hours=1)).isoformat()}}
    for key in (f"run-{started}", "latest"):
        rows.upsert_entity({"PartitionKey": "refresh", "RowKey": key, "Summary": json.dumps(run)})
    rows.upsert_entity({"PartitionKey": "refresh", "RowKey": f"run-{(now - timedelta(minutes=1)).isoformat()}"
                        "-" + MARKUP[0].replace("/", ""), "Summary": 5})
    event = {"Id": hostile("event"), "At": hostile("at"), "Topic": hostile("topic"),
             "Repository": hostile("repository"), "Tag": hostile("tag"), "Digest": hostile("digest"),
             "Action": hostile("action"), "Outcome": hostile("outcome"), "Reason": hostile("reason"),
             "Imports": json.dumps([hostile("import"), ID]), "ImportsOmitted": "many"}
    rows.upsert_entity({"PartitionKey": REPLICATION_PARTITION, "RowKey": row_key(now, "x"), **event})


NO_SIDEWAYS = """
const wide = [...document.querySelectorAll('body *')].filter(e => e.getClientRects().length
  && !e.closest('[hidden]') && e.scrollWidth > e.clientWidth + 1
  && ['auto', 'scroll'].includes(getComputedStyle(e).overflowX));
return [document.documentElement.scrollWidth - innerWidth, wide.map(e => e.id || e.className || e.tagName)];
"""


def assert_inert_and_in_place(driver) -> None:
    assert driver.execute_script(f"return {FLAG}") is None, "a stored field ran as script"
    csp = [e for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]
    assert csp == [], csp
    assert by_css(driver, "#main img, #main iframe, #detail img, #detail iframe") == []
    assert len(by_css(driver, "script")) == 1 and len(by_css(driver, "svg")) <= 1  # app.js; the chart
    overflow, wide = driver.execute_script(NO_SIDEWAYS)
    assert overflow <= 0 and wide == [], (overflow, wide)


def open_detail(driver, request_id: str) -> None:
    [opener] = [b for b in by_css(driver, "#imports-table button.link")
                if b.get_attribute("textContent") == request_id]
    driver.execute_script("arguments[0].click()", opener)
    wait(driver, lambda d: one(d, "#detail").get_attribute("data-loaded") == request_id, "no detail")


def test_hostile_stored_text_in_every_rendered_field_is_inert_literal_and_in_place(api, app_env, driver):
    seed(app_env)
    origin = urlsplit(api)
    open_page(driver, f"{api}/ui?code={KEY}")
    assert driver.execute_script("return [innerWidth, innerHeight]") == list(browser.WINDOW)
    assert KEY not in driver.current_url
    text = one(driver, "body").get_attribute("textContent")
    for payload in MARKUP:
        assert payload in text, payload  # shown as the text it is
    assert BIDI in text and LONG in text
    rows = {row[0]: row for row in table_rows(driver, "imports-table")}
    assert ID in rows and rows[DETAIL][5].isdigit() and "y-garbage" in rows  # 2**62, as a JS number shows it
    skipped = one(driver, "#imports-skipped").text
    assert "1 stored request rows could not be read" in skipped and "z-unknown-" + MARKUP[0] in skipped
    assert "run-" in one(driver, "#refresh-skipped").text
    assert "1 of them not counted" in one(driver, "#counts-note").text  # the row in an unknown state
    refresh_rows = table_rows(driver, "backoff-table") + table_rows(driver, "limits-table")
    refresh_text = " ".join(" ".join(r) for r in refresh_rows)
    assert "backoff-host " + MARKUP[0] in refresh_text and "limit-host " + MARKUP[0] in refresh_text
    events = table_rows(driver, "events-table")
    assert any("unreadable as stored: ImportsOmitted" in " ".join(r) for r in events), events
    assert_inert_and_in_place(driver)

    # the detail view of the hostile row: every field, the transitions, the dead letter and its body
    open_detail(driver, ID)
    assert "id" in one(driver, "#detail-error").text  # listed, but no request id: the API's 400, shown
    open_detail(driver, DETAIL)
    detail = one(driver, "#detail").get_attribute("textContent")
    for name in ("Source", "Target", "Reason", "Kind", "Code", "Digest", "Referrers", "tag", "untagged", "backup",
                 "created", "state", "at", "key", "value"):
        assert f"{name} {MARKUP[0]}" in detail or f"{name} {json.dumps(MARKUP[0])[1:-1]}" in detail, name
    assert one(driver, "#dead-letter").is_displayed() and MARKUP[1] in one(driver, "#dead-letter-body").text
    assert_inert_and_in_place(driver)
    open_detail(driver, "y-garbage")
    assert "Platforms, Transitions" in one(driver, "#detail-fields").text

    # the key: never rendered, never sent elsewhere, never in a Referer (the page sends none)
    html = driver.execute_script("return document.documentElement.outerHTML")
    assert KEY not in html and KEY not in driver.current_url
    requested = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert requested and all(urlsplit(url).netloc == origin.netloc for url in requested), requested
    assert all(KEY not in url for url in requested), "the key went into a URL"
    assert driver.execute_script("return document.referrer") == ""
