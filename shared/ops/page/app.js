// The status page: reads the app's read-only JSON (/api/ops/*) and builds the DOM from it.
// Every field the API returns is text a producer wrote (ids, sources, reasons, event fields): it only ever
// reaches the page through textContent, attribute setters and createElement, never as markup. No inline
// script or style exists (the page's Content-Security-Policy refuses both).
"use strict";

(function () {
  const KEY_ITEM = "acr-importer.function-key";
  const STATES = ["received", "running", "retrying", "succeeded", "skipped", "rejected", "failed"];
  // "/api/ui" -> "/api/": the JSON lives beside the page, whatever the route prefix is.
  const API = location.pathname.replace(/\/ui\/?$/i, "/");  // the host matches routes in any case
  // tokens: the continuation token of each page shown so far (null: the first); a ticket per load, so an
  // answer that arrives after a newer request was made is dropped instead of drawn over the newer one.
  const view = { tokens: [null], query: null, ticket: 0, detailTicket: 0 };

  // --- the function key (key mode): taken out of the address bar, kept in this tab only ---------------
  function takeKeyFromAddress() {
    const url = new URL(location.href);
    if (!url.searchParams.has("code")) return;
    const key = url.searchParams.get("code");
    url.searchParams.delete("code");
    history.replaceState(history.state, "", url.pathname + url.search + url.hash);
    if (key && KEY_TEXT.test(key)) sessionStorage.setItem(KEY_ITEM, key);
    else if (key) askForKey(NOT_A_KEY);
  }

  function key() {
    return sessionStorage.getItem(KEY_ITEM) || "";
  }

  // What an HTTP header can carry of a key: fetch refuses anything else before sending, which would read as
  // "unreachable". Function keys are printable ASCII; anything else is refused where a key comes in, not kept.
  const KEY_TEXT = /^[\x21-\x7e]+$/;
  const NOT_A_KEY = "That is not a function key (a key is printable ASCII without spaces): give it again.";

  class ApiError extends Error {
    constructor(path, status, errors) {
      super(`${path}: HTTP ${status}`);
      this.path = path;
      this.status = status;
      this.errors = errors;
    }
  }

  async function getJson(path, params) {
    const query = params && params.toString() ? "?" + params.toString() : "";
    const headers = { Accept: "application/json" };
    if (key()) headers["x-functions-key"] = key();
    let answer;
    try {
      // redirect "manual": App Service Authentication answers a request whose session ended with a redirect to
      // the sign-in page, which a fetch cannot follow (another origin); seen as such, it is named, not a
      // network error.
      answer = await fetch(API + path + query,
                           { headers, credentials: "same-origin", cache: "no-store", redirect: "manual" });
    } catch (err) {
      throw new ApiError(path, 0, [{ field: "", rule: "the app could not be reached (" + err.message + ")" }]);
    }
    if (answer.type === "opaqueredirect") {
      throw new ApiError(path, 0, [{ field: "", rule: "the app sent this request to sign in (the sign-in session " +
                                                      "has ended): reload the page to sign in again" }]);
    }
    if (answer.status === 401) askForKey();
    let body = null;
    try {
      body = await answer.json();
    } catch (err) {
      body = null;
    }
    if (!answer.ok) {
      const errors = body && Array.isArray(body.errors) ? body.errors : [];
      throw new ApiError(path, answer.status, errors);
    }
    return body;
  }

  function askForKey(why) {
    const panel = byId("key-panel");
    if (!panel.hidden) return;
    panel.hidden = false;
    byId("key-why").textContent = why || (key()
      ? "The API answered 401 Unauthorized to the key this tab has: give another function key, or sign in again."
      : "The API answered 401 Unauthorized: give the function key (locally: the file the runner names when it " +
        "starts), or sign in.");
    byId("key-input").focus();
  }

  // --- small DOM helpers: text only -----------------------------------------------------------------------
  function byId(id) {
    return document.getElementById(id);
  }

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function row(cells) {
    const tr = document.createElement("tr");
    for (const cell of cells) {
      if (cell instanceof Node) {
        const td = document.createElement("td");
        td.appendChild(cell);
        tr.appendChild(td);
      } else {
        tr.appendChild(el("td", cell === null || cell === undefined || cell === "" ? "—" : cell));
      }
    }
    return tr;
  }

  function fill(tbody, rows, emptyText, columns) {
    tbody.replaceChildren();
    for (const r of rows) tbody.appendChild(r);
    if (!rows.length) {
      const td = el("td", emptyText, "empty");
      td.colSpan = columns;
      const tr = document.createElement("tr");
      tr.appendChild(td);
      tbody.appendChild(tr);
    }
  }

  function showError(id, err) {
    const node = byId(id);
    if (!err) {
      node.hidden = true;
      node.replaceChildren();
      return;
    }
    node.replaceChildren();
    const what = err instanceof ApiError
      ? `GET ${API}${err.path} answered ${err.status ? err.status + (REASONS[err.status] || "") : "nothing"}`
      : String(err);
    node.appendChild(el("span", what + (err.errors && err.errors.length ? ":" : ".")));
    if (err.errors && err.errors.length) {
      const list = el("ul");
      for (const e of err.errors) {
        const item = el("li");
        if (e.field) item.appendChild(el("strong", e.field));
        item.appendChild(document.createTextNode((e.field ? " " : "") + (e.rule || "")));
        list.appendChild(item);
      }
      node.appendChild(list);
    }
    node.hidden = false;
  }

  // Stored rows an answer left out (`skipped`): how many, and each one's key and why, so a bad row is seen.
  function showSkipped(id, skipped, what, parts) {
    const node = byId(id);
    const list = Array.isArray(skipped) ? skipped : [];
    node.replaceChildren();
    node.hidden = !list.length;
    if (!list.length) return;
    node.appendChild(el("span", `${list.length} ${what}:`));
    const items = el("ul");
    for (const entry of list) {
      const [key, why] = parts(entry || {});
      const item = el("li");
      item.append(el("code", key), document.createTextNode(" " + (why || "")));
      items.appendChild(item);
    }
    node.appendChild(items);
  }

  const BADGES = STATES.concat(["planned", "ignored", "duplicate"]);  // request states and event outcomes

  const REASONS = { 400: " Bad Request", 401: " Unauthorized", 403: " Forbidden", 404: " Not Found",
    500: " Internal Server Error", 503: " Service Unavailable" };

  function stateBadge(state) {
    const known = BADGES.includes(state) ? state : "other";
    return el("span", state, "state state-" + known);
  }

  // --- times -----------------------------------------------------------------------------------------------
  function when(iso) {
    if (!iso) return "";
    const t = new Date(iso);
    if (isNaN(t)) return String(iso);
    return t.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z").replace(/Z$/, "");
  }

  function stamp(iso) {
    // A table cell's time on two short lines (date, then time), so eleven columns fit a laptop screen.
    const text = when(iso);
    if (!text) return "";
    if (isNaN(new Date(iso))) return el("span", text);  // not a time: stored text, shown as it is
    const cell = el("span", null, "stamp");
    const [date, time] = text.split(" ");
    cell.append(el("span", date), el("span", time || ""));
    return cell;
  }

  function span(ms) {
    if (ms === null || ms === undefined || isNaN(ms) || ms < 0) return "";
    if (ms < 1000) return `${Math.round(ms)} ms`;
    const s = ms / 1000;
    if (s < 60) return `${s.toFixed(1)} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
    const h = Math.floor(m / 60);
    if (h < 48) return `${h} h ${m % 60} min`;
    return `${Math.floor(h / 24)} d ${h % 24} h`;
  }

  function between(start, end) {
    const a = Date.parse(start);
    const b = Date.parse(end);
    return isNaN(a) || isNaN(b) ? "" : span(b - a);
  }

  function ended(item) {
    return item.terminal ? item.updatedAt : "";
  }

  function shortDigest(digest) {
    if (!digest) return "";
    const text = String(digest);
    return text.length > 19 ? text.slice(0, 19) + "…" : text;
  }

  // --- imports: filters, paging, table ---------------------------------------------------------------------
  function buildStateBoxes() {
    const box = byId("state-boxes");
    for (const state of STATES) {
      const label = el("label", null, "check");
      const input = document.createElement("input");
      input.type = "checkbox";
      input.name = "state";
      input.value = state;
      input.id = "state-" + state;
      label.appendChild(input);
      label.appendChild(document.createTextNode(" " + state));
      box.appendChild(label);
    }
  }

  function readFilters() {
    const params = new URLSearchParams();
    for (const box of document.querySelectorAll("#state-boxes input:checked")) params.append("state", box.value);
    for (const name of ["since", "until", "q"]) {
      const value = byId(name).value.trim();
      if (value) params.set(name, value);
    }
    params.set("limit", byId("limit").value);
    return params;
  }

  function applyRange() {
    const choice = byId("range").value;
    if (choice === "custom") {
      byId("since").focus();
      return;
    }
    byId("until").value = "";
    byId("since").value = choice ? new Date(Date.now() - Number(choice) * 1000).toISOString() : "";
  }

  async function loadImports() {
    const params = new URLSearchParams(view.query);
    const token = view.tokens[view.tokens.length - 1];
    if (token) params.set("continuation", token);
    const table = byId("imports-table");
    const ticket = ++view.ticket;
    table.setAttribute("aria-busy", "true");
    try {
      const page = await getJson("ops/imports", params);
      if (ticket !== view.ticket) return;
      showError("imports-error", null);
      const items = Array.isArray(page.items) ? page.items : [];
      showSkipped("imports-skipped", page.skipped, "stored request rows could not be read and are not listed",
        (s) => [s.id, s.reason]);
      fill(table.tBodies[0], items.map(importRow), "No request matches.", 11);
      view.next = page.continuation || null;
      byId("imports-caption").textContent =
        `Import requests: page ${view.tokens.length}, ${items.length} shown` +
        (view.next ? ", more on the next page" : "");
      byId("page-info").textContent = `Page ${view.tokens.length}`;
    } catch (err) {
      if (ticket !== view.ticket) return;
      view.next = null;
      fill(table.tBodies[0], [], "Could not load the requests (see above).", 11);
      showError("imports-error", err);
    } finally {
      if (ticket === view.ticket) {
        table.setAttribute("aria-busy", "false");
        byId("next-page").disabled = !view.next;
        byId("prev-page").disabled = view.tokens.length < 2;
        byId("first-page").disabled = view.tokens.length < 2;
        table.dataset.loaded = String(ticket);  // changes on every drawing: what tests wait for
      }
    }
  }

  function importRow(item) {
    const open = el("button", item.id, "link");
    open.type = "button";
    open.setAttribute("aria-label", "Open request " + item.id);
    open.addEventListener("click", () => openDetail(item.id, open));
    const digest = el("span", shortDigest(item.digest), "mono");
    if (item.digest) digest.title = String(item.digest);
    // A long reason is cut after four lines here (all of it is in the title and the detail view).
    const reason = el("span", item.reason, "clamp");
    if (item.reason) reason.title = String(item.reason);
    const tr = row([open, item.source, (item.targetTags || []).join(", "), stateBadge(item.state),
      item.reason ? reason : "",
      item.attempts, item.digest ? digest : "", item.platforms, stamp(item.createdAt), stamp(ended(item)),
      ended(item) ? between(item.createdAt, item.updatedAt) : ""]);
    tr.dataset.state = item.state;
    return tr;
  }

  function newQuery() {
    view.query = readFilters().toString();
    view.tokens = [null];
    return loadImports();
  }

  // --- the detail view -------------------------------------------------------------------------------------
  const DETAIL_FIELDS = [
    ["id", "Id"], ["state", "State"], ["source", "Source"], ["target", "Target registry"],
    ["targetTags", "Target tags"], ["untaggedTargetRepositories", "Untagged target repositories"], ["mode", "Mode"],
    ["reason", "Reason"], ["kind", "Kind"], ["code", "Code"], ["attempts", "Attempts"], ["digest", "Digest"],
    ["platforms", "Platforms"], ["referrers", "Referrers"], ["referrerDigests", "Referrer digests"],
    ["backupTags", "Backup tags"], ["createdAt", "Created (UTC)"], ["updatedAt", "Updated (UTC)"],
    ["unreadable", "Unreadable as stored"],
  ];
  const LETTER_FIELDS = [
    ["id", "Id"], ["state", "State"], ["reason", "Reason"], ["kind", "Kind"], ["code", "Code"],
    ["attempts", "Attempts"], ["deadLetteredAt", "Dead-lettered (UTC)"], ["unreadable", "Unreadable as stored"],
  ];

  function describe(list, fields, record) {
    list.replaceChildren();
    for (const [name, label] of fields) {
      let value = record[name];
      if (Array.isArray(value)) value = value.join(", ");
      if (name.endsWith("At")) value = when(value);
      list.appendChild(el("dt", label));
      list.appendChild(el("dd", value === null || value === undefined || value === "" ? "—" : value));
    }
  }

  let returnFocus = null;

  async function openDetail(id, opener) {
    returnFocus = opener || null;
    const section = byId("detail");
    section.hidden = false;
    section.setAttribute("aria-busy", "true");
    byId("detail-heading").textContent = "Request " + id;
    byId("detail-body").hidden = true;
    byId("detail-heading").focus();
    const ticket = ++view.detailTicket;
    try {
      const record = await getJson("ops/imports/" + encodeURIComponent(id));
      if (ticket !== view.detailTicket) return;
      showError("detail-error", null);
      describe(byId("detail-fields"), DETAIL_FIELDS, record);
      const transitions = Array.isArray(record.transitions) ? record.transitions : [];
      fill(byId("transitions-table").tBodies[0], transitions.map((t, i) =>
        row([stateBadge(t.state), when(t.at), i ? between(transitions[i - 1].at, t.at) : "(first)"])),
      "No transition recorded.", 3);
      const letter = record.deadLetter;
      byId("dead-letter").hidden = !letter;
      byId("dead-letter-none").hidden = !!letter;
      if (letter) {
        describe(byId("dead-letter-fields"), LETTER_FIELDS, letter);
        byId("dead-letter-body").textContent = typeof letter.body === "string"
          ? letter.body : JSON.stringify(letter.body, null, 2);
      }
      byId("detail-body").hidden = false;
    } catch (err) {
      if (ticket === view.detailTicket) showError("detail-error", err);
    } finally {
      if (ticket === view.detailTicket) {
        section.setAttribute("aria-busy", "false");
        section.dataset.loaded = id;
      }
    }
  }

  function closeDetail() {
    byId("detail").hidden = true;
    byId("detail").dataset.loaded = "";
    if (returnFocus && document.body.contains(returnFocus)) returnFocus.focus();
    else byId("imports-heading").focus();
  }

  // --- health: counts, queues, chart -----------------------------------------------------------------------
  async function loadHealth() {
    try {
      const health = await getJson("ops/health");
      showError("health-error", null);
      const counts = health.counts || {};
      const hour = counts.lastHour || {};
      const day = counts.lastDay || {};
      const names = STATES.concat(Object.keys(day).filter((s) => !STATES.includes(s)));
      fill(byId("counts-table").tBodies[0], names.map((s) => row([stateBadge(s), hour[s] || 0, day[s] || 0])),
        "No counts.", 3);
      byId("counts-note").textContent = `${health.scanned || 0} rows read at ${when(health.generatedAt)}` +
        (health.truncated ? " (stopped early: the counts are a lower bound)." : ".") +
        (health.skipped ? ` ${health.skipped} of them not counted: their state or time does not read.` : "");
      const queues = Array.isArray(health.queues) ? health.queues : [];
      fill(byId("queues-table").tBodies[0], queues.map((q) => row([q.role, q.name,
        q.error ? "unknown: " + q.error : q.depth, q.oldestAgeSeconds === null || q.oldestAgeSeconds === undefined
          ? "" : span(q.oldestAgeSeconds * 1000) + " old"])), "No queue reported.", 4);
      drawChart(Array.isArray(health.timeline) ? health.timeline : []);
    } catch (err) {
      showError("health-error", err);
    }
  }

  const SVG = "http://www.w3.org/2000/svg";

  function svg(tag, attributes) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, String(value));
    return node;
  }

  function drawChart(timeline) {
    const width = 480;
    const height = 150;
    const bottom = 20;
    const left = 28;
    const most = Math.max(1, ...timeline.map((b) => Number(b.ended) || 0));
    const graph = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-labelledby": "chart-title chart-desc",
      class: "chart-svg" });
    const title = svg("title", { id: "chart-title" });
    title.textContent = "Requests ended and failed per hour, last 24 hours";
    const total = timeline.reduce((n, b) => n + (Number(b.ended) || 0), 0);
    const failed = timeline.reduce((n, b) => n + (Number(b.failed) || 0), 0);
    const desc = svg("desc", { id: "chart-desc" });
    desc.textContent = `${total} ended, ${failed} of them failed or rejected; the table below lists each hour.`;
    graph.append(title, desc);
    graph.appendChild(svg("line", { x1: left, y1: height - bottom, x2: width, y2: height - bottom, class: "axis" }));
    [["bar-ended", "ended"], ["bar-failed", "failed or rejected"]].forEach(([name, text], i) => {
      const x = width - 250 + i * 90;
      graph.appendChild(svg("rect", { x, y: 2, width: 10, height: 10, class: name }));
      const key = svg("text", { x: x + 14, y: 11, class: "tick" });
      key.textContent = text;
      graph.appendChild(key);
    });
    const label = svg("text", { x: 0, y: 24, class: "tick" });
    label.textContent = String(most);
    graph.appendChild(label);
    const slot = (width - left) / Math.max(timeline.length, 1);
    const scale = (height - bottom - 28) / most;
    const body = byId("timeline-table").tBodies[0];
    const rows = [];
    timeline.forEach((bucket, i) => {
      const all = Number(bucket.ended) || 0;
      const bad = Math.min(Number(bucket.failed) || 0, all);
      const x = left + i * slot + 2;
      const w = Math.max(slot - 4, 1);
      const y0 = height - bottom;
      if (all) graph.appendChild(svg("rect", { x, y: y0 - all * scale, width: w, height: all * scale, class: "bar-ended" }));
      if (bad) graph.appendChild(svg("rect", { x, y: y0 - bad * scale, width: w, height: bad * scale, class: "bar-failed" }));
      if (i % 6 === 0) {
        const tick = svg("text", { x, y: height - 5, class: "tick" });
        tick.textContent = when(bucket.start).slice(11, 16);
        graph.appendChild(tick);
      }
      rows.push(row([when(bucket.start).slice(0, 16), all, Number(bucket.failed) || 0]));
    });
    byId("chart").replaceChildren(graph);
    fill(body, rows, "No hours reported.", 3);
  }

  // --- refresh and replication -----------------------------------------------------------------------------
  async function loadRefresh() {
    try {
      const refresh = await getJson("ops/refresh", new URLSearchParams({ limit: "10" }));
      showError("refresh-error", null);
      byId("refresh-summary").textContent = `Schedule ${refresh.schedule || "(not set)"}; last run ` +
        (refresh.lastRunAt ? when(refresh.lastRunAt) + " UTC." : "never (no run recorded).");
      const runs = Array.isArray(refresh.runs) ? refresh.runs : [];
      showSkipped("refresh-skipped", refresh.skipped, "stored run summaries could not be read and are not listed",
        (s) => [s.row, s.reason]);
      fill(byId("runs-table").tBodies[0], runs.map((r) => {
        const problems = el("ul", null, "problems");
        for (const problem of Array.isArray(r.problems) ? r.problems : []) problems.appendChild(el("li", problem));
        const started = stamp(r.startedAt);
        if (r.dryRun && started) started.appendChild(el("span", "(dry run)"));
        const tr = row([started, span(r.durationMs), r.checked, r.changed, r.missing, r.unchanged, r.skipped,
          r.errors, r.enqueued, problems.childNodes.length ? problems : ""]);
        if (Number(r.errors)) tr.className = "has-errors";
        return tr;
      }), "No run recorded.", 10);
      const backoff = Array.isArray(refresh.backoff) ? refresh.backoff : [];
      fill(byId("backoff-table").tBodies[0], backoff.map((b) => row([b.host, when(b.until)])),
        "None: every upstream may be asked.", 2);
      const limits = Array.isArray(refresh.rateLimits) ? refresh.rateLimits : [];
      fill(byId("limits-table").tBodies[0], limits.map((l) => row([l.host, l.remaining])),
        "No registry reported a limit in the last run.", 2);
    } catch (err) {
      showError("refresh-error", err);
    }
  }

  async function loadReplication() {
    try {
      const replication = await getJson("ops/replication", new URLSearchParams({ limit: "20" }));
      showError("replication-error", null);
      const c = replication.counts || {};
      fill(byId("replication-counts").tBodies[0], [row([c.received || 0, c.planned || 0, c.ignored || 0,
        c.rejected || 0])], "", 4);
      const events = Array.isArray(replication.events) ? replication.events : [];
      fill(byId("events-table").tBodies[0], events.map((e) => {
        const image = (e.repository || "") + (e.tag ? ":" + e.tag : "") + (!e.tag && e.digest ? "@" + e.digest : "");
        const imports = el("span");
        for (const id of Array.isArray(e.imports) ? e.imports : []) {
          const open = el("button", id, "link");
          open.type = "button";
          open.setAttribute("aria-label", "Open request " + id);
          open.addEventListener("click", () => openDetail(id, open));
          imports.appendChild(open);
        }
        const unreadable = Array.isArray(e.unreadable) && e.unreadable.length
          ? ` (unreadable as stored: ${e.unreadable.join(", ")})` : "";
        const tr = row([stamp(e.at), image, e.action, stateBadge(e.outcome), (e.reason || "") + unreadable,
          imports.childNodes.length ? imports : ""]);
        tr.dataset.outcome = e.outcome;
        return tr;
      }), "No event recorded.", 6);
    } catch (err) {
      showError("replication-error", err);
    }
  }

  async function loadAll() {
    await Promise.all([loadHealth(), loadImports(), loadRefresh(), loadReplication()]);
    const failed = [...document.querySelectorAll("#main .error")].some((node) => !node.hidden);
    byId("loaded-at").textContent = (failed ? "Partly loaded (see the errors) " : "Loaded ") +
      when(new Date().toISOString()) + " UTC.";
    document.body.dataset.loaded = String(Date.now());
  }

  function start() {
    takeKeyFromAddress();
    buildStateBoxes();
    view.query = readFilters().toString();
    byId("filters").addEventListener("submit", (event) => {
      event.preventDefault();
      newQuery();
    });
    byId("clear").addEventListener("click", () => {
      byId("filters").reset();
      newQuery();
    });
    byId("range").addEventListener("change", applyRange);
    for (const id of ["since", "until"]) byId(id).addEventListener("input", () => { byId("range").value = "custom"; });
    byId("next-page").addEventListener("click", () => {
      if (!view.next) return;
      view.tokens.push(view.next);
      loadImports();
    });
    byId("prev-page").addEventListener("click", () => {
      if (view.tokens.length > 1) view.tokens.pop();
      loadImports();
    });
    byId("first-page").addEventListener("click", () => {
      view.tokens = [null];
      loadImports();
    });
    byId("close-detail").addEventListener("click", closeDetail);
    byId("detail").addEventListener("keydown", (event) => {
      if (event.key === "Escape") closeDetail();
    });
    byId("reload").addEventListener("click", loadAll);
    byId("forget-key").hidden = !key();
    byId("forget-key").addEventListener("click", () => {
      sessionStorage.removeItem(KEY_ITEM);
      byId("forget-key").hidden = true;
      loadAll();
    });
    byId("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = byId("key-input").value.trim();
      if (!value) return;
      if (!KEY_TEXT.test(value)) {
        byId("key-why").textContent = NOT_A_KEY;
        byId("key-input").focus();
        return;
      }
      sessionStorage.setItem(KEY_ITEM, value);
      byId("forget-key").hidden = false;
      byId("key-input").value = "";
      byId("key-panel").hidden = true;
      loadAll();
    });
    loadAll();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
