"""The status page in a real browser: Debian's headless Chromium driven by Selenium (dev/browser.py), on the
page the runner serves, over requests the app really ran (dev/showcase.py: the HTTP API and the queue, every
state, dead letters, a request ACR keeps running, a refresh run, Event Grid pushes).

Every wait is a WebDriverWait on a condition of the page (tests/ops/browsing.py); nothing is timed. The key
mode is tested here; Entra mode in test_status_page_entra.py (its own app indexing, after this module's app
has stopped).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import requests

from dev import browser, layout, showcase
from tests.conftest import TEST_SETTINGS
from tests.ops.browsing import apply, by_css, imports_loaded, one, shown_ids, table_rows, wait
from tests.ops.browsing import open_page as open_url

KEY = "status-page-key-" + uuid.uuid4().hex


class World:
    def __init__(self, base: str, shown: showcase.Showcase, events: showcase.Showcase, app: showcase.App) -> None:
        self.base = base
        self.shown = shown
        self.events = events
        self.app = app

    @property
    def page(self) -> str:
        return f"{self.base}/api/ui"

    def api(self, path: str, **params: str) -> dict:
        answer = requests.get(f"{self.base}/api/ops/{path}", params=params, headers={"x-functions-key": KEY},
                              timeout=30)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def api_ids(self, **params: str) -> list[str]:
        """Every request id the API lists for these filters, page after page (the reference for the table)."""
        ids, token = [], None
        while True:
            page = self.api("imports", limit="200", **params, **({"continuation": token} if token else {}))
            ids += [item["id"] for item in page["items"]]
            token = page["continuation"]
            if token is None:
                return ids


def open_page(driver, world: World, *, key: str | None = KEY) -> None:
    open_url(driver, world.page + (f"?code={key}" if key else ""))


@pytest.fixture(scope="module")
def world(stack, tmp_path_factory):
    """The app on the runner (its own queue and table, function key KEY) with the showcase's requests, a
    refresh run and three replication events made through it."""
    from dev.app_settings import create_app_queues, local_app_settings
    from dev.azure_standin.control import StandinControl
    from dev.runner import Runner
    from shared import app_context

    suffix = uuid.uuid4().hex[:10]
    values = {**local_app_settings(queue=f"ui-{suffix}", table=f"ui{suffix}"), **TEST_SETTINGS,
              **showcase.settings(tmp_path_factory.mktemp("showcase"), suffix), "RUNNER_FUNCTION_KEY": KEY}
    create_app_queues(values["IMPORT_QUEUE"])
    control = StandinControl()
    control.reset()
    with pytest.MonkeyPatch.context() as env:
        for name, value in values.items():
            env.setenv(name, value)
        app_context.reset()
        with Runner("function_app", env=values, http_port=0) as runner:
            base = f"http://{layout.HOST}:{runner.http_port}"
            app = showcase.App(base, KEY, values["IMPORT_QUEUE"], runner.eventgrid_key)
            shown = showcase.make_requests(app, control, suffix)
            invocation = runner.trigger_timer("refresh_tracked_images")
            assert invocation.outcome == "ok", invocation.error
            events = showcase.make_events(app, stack.digest(layout.SOURCE_ACR.login_server, "aci-helloworld", "latest"))
            yield World(base, shown, events, app)
        control.reset()
    app_context.reset()


def test_the_table_shows_every_request_with_its_columns(world, driver):
    open_page(driver, world)
    assert "code=" not in driver.current_url, "the key left the address bar"
    headers = [th.text for th in by_css(driver, "#imports-table thead th")]
    assert headers == ["Id", "Source", "Target tags", "State", "Reason", "Attempts", "Digest", "Platforms",
                       "Start (UTC)", "End (UTC)", "Duration"]
    assert all(th.get_attribute("scope") == "col" for th in by_css(driver, "#imports-table thead th"))
    rows = {row[0]: row for row in table_rows(driver, "imports-table")}
    ids = world.shown.ids
    assert set(ids.values()) <= set(rows)
    states = {name: rows[request_id][3] for name, request_id in ids.items()}
    assert states == {"succeeded": "succeeded", "skipped": "skipped", "failed": "failed", "rejected": "rejected",
                      "xss": "rejected", "running": "running"}
    done = rows[ids["succeeded"]]
    assert done[1] == "docker.io/library/hello-world:latest" and done[2].startswith("showcase/hello-world:")
    assert done[5] == "1" and done[6].startswith("sha256:") and done[7] == "4"
    assert done[8] and done[9] and done[10]  # start, end, duration
    running = rows[ids["running"]]
    assert running[8] and running[9] == "—" and running[10] == "—"  # not ended
    assert "is not allowed" in rows[ids["rejected"]][4]


def test_each_filter_narrows_the_table(world, driver):
    from selenium.webdriver.support.ui import Select

    open_page(driver, world)
    ids = world.shown.ids
    marker = one(driver, "#imports-table").get_attribute("data-loaded")
    one(driver, "#state-failed").click()
    one(driver, "#state-rejected").click()
    one(driver, "#apply").click()
    marker = imports_loaded(driver, marker)
    assert {ids["failed"], ids["rejected"], ids["xss"]} <= set(shown_ids(driver))
    assert shown_ids(driver) == world.api_ids(state="failed,rejected")
    assert {row[3] for row in table_rows(driver, "imports-table")} == {"failed", "rejected"}
    one(driver, "#clear").click()
    marker = imports_loaded(driver, marker)
    assert not one(driver, "#state-failed").is_selected() and ids["succeeded"] in shown_ids(driver)
    marker = apply(driver, q=f"HELLO-WORLD:{world.shown.tag}")  # text, any case: here a target tag
    assert sorted(shown_ids(driver)) == sorted([ids["succeeded"], ids["skipped"]])
    one(driver, "#clear").click()
    marker = imports_loaded(driver, marker)
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat().replace("+00:00", "Z")
    marker = apply(driver, since=future)
    assert shown_ids(driver) == [] and one(driver, "#imports-table tbody td.empty").text == "No request matches."
    Select(one(driver, "#range")).select_by_visible_text("Last hour")
    since = one(driver, "#since").get_attribute("value")
    assert since.endswith("Z") and not one(driver, "#until").get_attribute("value")
    one(driver, "#apply").click()
    imports_loaded(driver, marker)
    assert set(ids.values()) <= set(shown_ids(driver))
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat().replace("+00:00", "Z")
    apply(driver, since="", until=past)
    assert shown_ids(driver) == []


def test_an_api_error_is_shown_naming_the_field_and_rule(world, driver):
    open_page(driver, world)
    apply(driver, since="yesterday")
    error = wait(driver, lambda d: one(d, "#imports-error") if one(d, "#imports-error").is_displayed() else None)
    assert "400" in error.text and "since" in error.text and "RFC 3339" in error.text
    assert one(driver, "#imports-error strong").text == "since"


def test_paging_walks_every_request_with_a_small_limit(world, driver):
    from selenium.webdriver.support.ui import Select

    open_page(driver, world)
    marker = one(driver, "#imports-table").get_attribute("data-loaded")
    Select(one(driver, "#limit")).select_by_visible_text("5")
    one(driver, "#apply").click()
    marker = imports_loaded(driver, marker)
    seen, pages = [], 0
    assert not one(driver, "#first-page").is_enabled() and not one(driver, "#prev-page").is_enabled()
    while True:
        page_ids = shown_ids(driver)
        assert len(page_ids) <= 5
        seen += page_ids
        pages += 1
        assert one(driver, "#page-info").text == f"Page {pages}"
        if not one(driver, "#next-page").is_enabled():
            break
        one(driver, "#next-page").click()
        marker = imports_loaded(driver, marker)
        assert pages < 50
    assert seen == world.api_ids() and pages >= 2  # each request once, in the API's order
    first = seen[:5]
    one(driver, "#prev-page").click()
    marker = imports_loaded(driver, marker)
    assert one(driver, "#page-info").text == f"Page {pages - 1}"
    one(driver, "#first-page").click()
    imports_loaded(driver, marker)
    assert one(driver, "#page-info").text == "Page 1" and shown_ids(driver) == first


def open_detail(driver, request_id: str):
    from selenium.webdriver.common.keys import Keys

    button = next(b for b in by_css(driver, "#imports-table tbody button") if b.text == request_id)
    button.send_keys(Keys.ENTER)  # the keyboard opens it (a button: Enter and Space)
    wait(driver, lambda d: one(d, "#detail").get_attribute("data-loaded") == request_id, "no detail view")
    return button


def detail_fields(driver, list_id: str = "detail-fields") -> dict[str, str]:
    terms = by_css(driver, f"#{list_id} dt")
    values = by_css(driver, f"#{list_id} dd")
    return {t.text: v.text for t, v in zip(terms, values, strict=True)}


def test_the_detail_view_shows_the_request_its_transitions_and_its_dead_letter(world, driver):
    open_page(driver, world)
    ids = world.shown.ids
    opener = open_detail(driver, ids["succeeded"])
    assert driver.switch_to.active_element == one(driver, "#detail-heading")  # focus moved to the view
    fields = detail_fields(driver)
    assert fields["Id"] == ids["succeeded"] and fields["State"] == "succeeded"
    assert fields["Source"] == "docker.io/library/hello-world:latest" and fields["Platforms"] == "4"
    states = [row[0] for row in table_rows(driver, "transitions-table")]
    assert states == [t["state"] for t in world.api(f"imports/{ids['succeeded']}")["transitions"]]
    assert states[0] == "received" and "running" in states and states[-1] == "succeeded"
    assert all(row[1] for row in table_rows(driver, "transitions-table"))
    assert one(driver, "#dead-letter-none").is_displayed() and not one(driver, "#dead-letter").is_displayed()
    one(driver, "#close-detail").click()
    assert not one(driver, "#detail").is_displayed()
    assert driver.switch_to.active_element == opener  # focus back where it was

    open_detail(driver, ids["rejected"])
    assert [row[0] for row in table_rows(driver, "transitions-table")] == ["rejected"]
    wait(driver, lambda d: one(d, "#dead-letter").is_displayed())
    letter = detail_fields(driver, "dead-letter-fields")
    assert letter["Id"] == ids["rejected"] and letter["State"] == "rejected"
    assert "is not allowed" in letter["Reason"] and letter["Dead-lettered (UTC)"] != "—"
    body = json.loads(one(driver, "#dead-letter-body").text)
    assert body["source"] == "registry.example.net/team/tool:2.1"

    open_detail(driver, ids["failed"])
    states = [row[0] for row in table_rows(driver, "transitions-table")]
    assert states == [t["state"] for t in world.api(f"imports/{ids['failed']}")["transitions"]]
    assert states[0] == "received" and states[-1] == "failed"
    assert detail_fields(driver, "dead-letter-fields")["State"] == "failed"


def test_health_counts_queues_and_chart(world, driver):
    open_page(driver, world)
    health = world.api("health")
    counts = {row[0]: row[1:] for row in table_rows(driver, "counts-table")}
    for state in ("received", "running", "succeeded", "skipped", "failed", "rejected"):
        assert counts[state] == [str(health["counts"]["lastHour"][state]), str(health["counts"]["lastDay"][state])]
    assert int(counts["rejected"][0]) >= 2 and int(counts["running"][0]) >= 1 and int(counts["succeeded"][1]) >= 1
    queues = {row[0]: row for row in table_rows(driver, "queues-table")}
    assert set(queues) == {"import", "rejected", "poison"}
    letters = next(q for q in health["queues"] if q["role"] == "rejected")
    assert queues["rejected"][2] == str(letters["depth"]) and letters["depth"] >= 3  # failed + two rejected
    assert queues["rejected"][3].endswith(" old")
    svg = one(driver, "#chart svg")
    assert svg.get_attribute("role") == "img" and "ended" in one(driver, "#chart-desc").get_attribute("textContent")
    assert by_css(driver, "#chart rect.bar-ended") and by_css(driver, "#chart rect.bar-failed")
    hours = table_rows(driver, "timeline-table", folded=True)  # the chart's text alternative: every hour
    assert [[int(row[1]), int(row[2])] for row in hours] == [[b["ended"], b["failed"]] for b in health["timeline"]]
    assert sum(int(row[1]) for row in hours) >= 4 and sum(int(row[2]) for row in hours) >= 3


def test_the_refresh_and_replication_panels(world, driver):
    open_page(driver, world)
    refresh = world.api("refresh")
    [run] = refresh["runs"]
    [shown] = table_rows(driver, "runs-table")
    names = ("checked", "changed", "missing", "unchanged", "skipped", "errors", "enqueued")
    assert shown[2:9] == [str(run[name]) for name in names]
    assert run["checked"] == 3 and run["enqueued"] == 2 and run["errors"] == 1  # nginx:no-such-tag is not upstream
    assert "no-such-tag" in shown[9]  # the run's problems, named
    assert "last run" in one(driver, "#refresh-summary").text and "never" not in one(driver, "#refresh-summary").text
    limits = {row[0]: row[1] for row in table_rows(driver, "limits-table")}
    assert limits == {r["host"]: str(r["remaining"]) for r in refresh["rateLimits"]}
    replication = world.api("replication")
    counts = table_rows(driver, "replication-counts")[0]
    assert counts == [str(replication["counts"][k]) for k in ("received", "planned", "ignored", "rejected")]
    assert [int(n) for n in counts] == [4, 1, 1, 2]
    rows = table_rows(driver, "events-table")
    assert sorted(row[3] for row in rows) == ["ignored", "planned", "rejected", "rejected"]
    events = {row[3]: row for row in rows}
    assert events["planned"][1] == "aci-helloworld:latest" and events["planned"][5]
    assert "Delete" in events["ignored"][2] and events["ignored"][4].startswith("ignored: ")
    assert any("no replication rule names this registry" in row[4] for row in rows if row[3] == "rejected")
    planned = by_css(driver, "#events-table tbody button")[0]
    request_id = planned.text
    planned.click()
    wait(driver, lambda d: one(d, "#detail").get_attribute("data-loaded") == request_id)
    assert detail_fields(driver)["Target tags"].startswith(showcase.REPLICA_PREFIX)


def test_without_a_key_the_page_asks_for_one_and_then_loads(world, driver):
    open_page(driver, world, key=None)
    form = wait(driver, lambda d: one(d, "#key-panel") if one(d, "#key-panel").is_displayed() else None)
    assert "401" in form.text
    field = one(driver, "#key-input")
    assert one(driver, "label[for=key-input]").text == "Function key" and field.get_attribute("type") == "password"
    assert driver.switch_to.active_element == field
    assert "401" in one(driver, "#imports-error").text
    marker = one(driver, "#imports-table").get_attribute("data-loaded")
    field.send_keys("not-the-key")
    one(driver, "#key-form button").click()
    marker = imports_loaded(driver, marker)
    wait(driver, lambda d: one(d, "#key-panel").is_displayed())  # a wrong key: asked again
    one(driver, "#key-input").send_keys(KEY)
    one(driver, "#key-form button").click()
    imports_loaded(driver, marker)
    assert set(world.shown.ids.values()) <= set(shown_ids(driver))
    assert not one(driver, "#key-panel").is_displayed() and not one(driver, "#imports-error").is_displayed()
    assert driver.execute_script("return sessionStorage.getItem('acr-importer.function-key')") == KEY
    assert KEY not in driver.current_url


def test_markup_in_stored_fields_stays_inert_text(world, driver):
    open_page(driver, world)
    ids = world.shown.ids
    rows = {row[0]: row for row in table_rows(driver, "imports-table")}
    reason = rows[ids["xss"]][4]
    assert '<img src=x onerror="window.__xss=1">' in reason.replace('\\"', '"')  # shown literally
    open_detail(driver, ids["xss"])
    assert "<img" in one(driver, "#dead-letter-body").text
    events = table_rows(driver, "events-table")
    assert any(showcase.XSS_REPOSITORY in " ".join(row) for row in events), events
    assert driver.execute_script("return window.__xss") is None, "markup in a stored field ran as script"
    assert by_css(driver, "#main img") == [] and len(by_css(driver, "script")) == 1
    errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"
              and "Content Security Policy" in entry["message"]]
    assert errors == [], errors  # nothing even tried to run against the CSP



# The WCAG 2 contrast of every visible piece of text against the first opaque background behind it.
CONTRAST = """
function rgb(text) { const m = text.match(/[\\d.]+/g).map(Number); return m.length > 3 ? m : m.concat([1]); }
function lum(c) {
  const [r, g, b] = c.slice(0, 3).map(v => {
    v /= 255;
    return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
  });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}
function background(node) {
  for (; node && node.nodeType === 1; node = node.parentElement) {
    const c = rgb(getComputedStyle(node).backgroundColor);
    if (c[3] === 1) return c;
  }
  return [255, 255, 255, 1];
}
const low = [];
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
for (let text = walker.nextNode(); text; text = walker.nextNode()) {
  const node = text.parentElement;
  if (!text.textContent.trim() || !node.getClientRects().length) continue;
  if (node.closest("[hidden], details:not([open]) > table, svg")) continue;
  const style = getComputedStyle(node);
  if (style.visibility !== "visible") continue;
  const fg = lum(rgb(style.color)), bg = lum(background(node));
  const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
  const size = parseFloat(style.fontSize);
  const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
  if (ratio < (large ? 3 : 4.5)) {
    low.push(`${node.tagName} "${text.textContent.trim().slice(0, 30)}" ${ratio.toFixed(2)}`);
  }
}
return low;
"""


def test_the_page_is_usable_at_1280x800_by_keyboard_and_with_contrast(world, driver):
    from selenium.webdriver.common.keys import Keys

    open_page(driver, world)
    assert driver.execute_script("return [innerWidth, innerHeight]") == list(browser.WINDOW)
    assert driver.execute_script("return document.documentElement.scrollWidth <= innerWidth"), "sideways scrolling"
    assert driver.execute_script(CONTRAST) == []
    driver.execute_script("document.getElementById('imports-caption').style.color = '#aaa'")
    low = driver.execute_script(CONTRAST)
    assert len(low) == 1 and low[0].startswith('CAPTION "Import requests'), low
    driver.execute_script("document.getElementById('imports-caption').style.color = ''")  # the check checks
    unlabelled = driver.execute_script(
        "return [...document.querySelectorAll('input, select, button')].filter(c => !c.closest('[hidden]'))"
        ".filter(c => !(c.labels && c.labels.length) && !c.getAttribute('aria-label') && !c.textContent.trim())"
        ".map(c => c.id || c.outerHTML.slice(0, 60))")
    assert unlabelled == []
    # the keyboard reaches the controls in order, and the focused one is outlined
    body = one(driver, "body")
    body.send_keys(Keys.TAB)
    assert driver.switch_to.active_element.text == "Skip to the imports"
    reached = []
    for _ in range(40):
        driver.switch_to.active_element.send_keys(Keys.TAB)
        focused = driver.switch_to.active_element
        reached.append(focused.get_attribute("id") or focused.text)
        outline = driver.execute_script(
            "const s = getComputedStyle(arguments[0]); return [s.outlineStyle, s.outlineWidth]", focused)
        assert outline[0] != "none" and outline[1] != "0px", (reached[-1], outline)
        if reached[-1] in world.shown.ids.values():
            break
    assert reached[:2] == ["reload", "forget-key"] and "state-received" in reached and "q" in reached
    assert "apply" in reached and reached[-1] in world.shown.ids.values()  # a request's id: Enter opens it


@pytest.mark.parametrize("path", ["/API/UI", "/api/Ui/", "/api/ui/"])
def test_the_page_works_at_every_spelling_of_its_address_the_host_routes(world, driver, path):
    """The host matches routes without regard to case or a trailing slash: the page finds its JSON from any."""
    open_url(driver, f"{world.base}{path}?code={KEY}")
    assert set(world.shown.ids.values()) <= set(shown_ids(driver))
