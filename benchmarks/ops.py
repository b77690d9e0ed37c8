"""What the operator's view costs at the scale users run: thousands of requests a day kept for 30 days, so
10k-100k status rows (issue 17's `/api/ops/*`, `GET /api/imports` and the status page's load).

The status table in Azurite is seeded with N request rows (batch transactions, 100 rows each), in a realistic
mix of states over the last 30 days, with their refresh runs and replication journal; then each endpoint is
asked through the runner's real HTTP server (the function key, the host's routing, the app's handlers), in
rounds that alternate between endpoints so the machine's noise falls on all of them alike. The table grows
from the smallest N to the largest in one run (each step adds rows drawn the same way), and each N is given
as a ratio to the smallest, because absolute times on these machines are for orientation only.

Rows read are the entities the table service sent back to the app (counted in the SDK's pager, in this
process: the runner runs the app in it), and the service requests that carried them. What the service itself
scanned is not visible from here: a filter on anything but the keys is a scan of the partition on the
service, in Azure as in Azurite, which is what the time of such a query shows as N grows.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import random
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

TITLE = "The operator's view at 1k-100k status rows"
DEFAULT_SIZES = (1_000, 10_000)  # `make bench`; OPS_ROWS=1000,10000,50000 (or 100000) for the larger profile
DEFAULT_ROUNDS = 7
RETENTION = timedelta(days=30)
BATCH = 100  # operations per table transaction (the service's limit)
SEED_THREADS = 4
RARE_TEXT = "zz-rare-needle"  # in one row of RARE_EVERY: what `q=` looks for
RARE_EVERY = 5_000
PAGE_LIMIT = 25  # the page's default `limit` (shared/ops/page/index.html)
RARE_CASE = f"`/api/ops/imports?q=` (1 row in {RARE_EVERY:,})"
HEALTH = "`/api/ops/health`"
FIRST_PAGE = "`/api/ops/imports` first page"
PAGE_LOAD = "page load (3 files, then 4 calls at once)"

# The state mix of rows that ended (most of the table), and of those updated in the last hour (some in flight).
ENDED_MIX = (("succeeded", 0.80), ("skipped", 0.08), ("rejected", 0.06), ("failed", 0.06))
RECENT_MIX = (("succeeded", 0.70), ("skipped", 0.06), ("rejected", 0.04), ("failed", 0.05), ("running", 0.08),
              ("retrying", 0.04), ("received", 0.03))
SOURCES = ("docker.io/library/nginx", "docker.io/library/redis", "mcr.microsoft.com/dotnet/runtime",
           "docker.io/bitnami/postgresql", "registry.contoso.com/team/api", "ghcr.io/org/tool")
REASONS = {
    "succeeded": "imported {digest} (2 platforms)",
    "skipped": "unchanged: the target already has {digest}",
    "rejected": "the request is not valid: targetTags[0] must be repository:tag",
    "failed": "ACR answered 404 NotFound: the source image was not found in the source registry "
              "(docker.io/library/missing:{n})",
    "running": "importing: checking again in 0.4 s (check 3)",
    "retrying": "attempt 1 failed (ACR answered 503 ServiceUnavailable); retrying in 15 s",
    "received": "accepted",
}


# --- seeding ---------------------------------------------------------------------------------------------

def _pick(rng: random.Random, mix: Sequence[tuple[str, float]]) -> str:
    return rng.choices([s for s, _ in mix], weights=[w for _, w in mix])[0]


def request_entity(index: int, now: datetime, rng: random.Random) -> dict[str, Any]:
    """One request's status row as the app writes it (`StatusRecord.to_entity`), updated in the last 30 days."""
    from shared.azure.status import StatusRecord
    from shared.core.outcome import State

    updated = now - RETENTION * rng.random()
    recent = now - updated < timedelta(hours=1)
    state = _pick(rng, RECENT_MIX if recent else ENDED_MIX)
    took = timedelta(seconds=rng.uniform(2, 90))
    created = updated - took
    digest = "sha256:" + uuid.UUID(int=rng.getrandbits(128)).hex * 2
    source = f"{rng.choice(SOURCES)}:{rng.randint(1, 40)}.{rng.randint(0, 30)}"
    reason = REASONS[state].format(digest=digest, n=index)
    if index % RARE_EVERY == RARE_EVERY // 2:
        reason += f" ({RARE_TEXT})"
    states = ["received", "running", *(["retrying", "running"] if rng.random() < 0.1 else []), state]
    times = [created + took * i / (len(states) - 1) for i in range(len(states))]
    record = StatusRecord(
        id=f"{uuid.UUID(int=rng.getrandbits(128))}", state=State(state), source=source, target="importer",
        target_tags=[f"mirror/{source.rsplit('/', 1)[-1]}"], mode="Force", reason=reason,
        kind="permanent" if state in ("failed", "rejected") else "", code="NotFound" if state == "failed" else "",
        attempts=0 if state in ("received", "rejected") else 1 + (len(states) > 4),
        digest=digest if state in ("succeeded", "skipped") else "",
        platforms=2 if state == "succeeded" else None, fingerprint=uuid.UUID(int=rng.getrandbits(128)).hex,
        created_at=created.isoformat(), updated_at=updated.isoformat(),
        transitions=[{"state": s, "at": t.isoformat()} for s, t in zip(states, times, strict=True)])
    return record.to_entity()


def refresh_entities(now: datetime, hours: int) -> list[dict[str, Any]]:
    """A refresh run every hour over `hours` (the `run-<time>` rows of RefreshLog.record) and `latest`."""
    rows = []
    for i in range(hours, 0, -1):
        at = now - timedelta(hours=i)
        summary = {"event": "refresh", "startedAt": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "durationMs": 4200,
                   "dryRun": False, "checked": 120, "changed": i % 3, "missing": 0, "unchanged": 118 - i % 3,
                   "skipped": 2, "errors": 0, "enqueued": i % 3, "referrers": 0,
                   "rateLimitRemaining": {"registry-1.docker.io": 150}, "backoffUntil": {}, "problems": []}
        rows.append({"PartitionKey": "refresh", "RowKey": f"run-{summary['startedAt']}",
                     "Summary": json.dumps(summary), "Checked": 120, "Changed": i % 3, "Missing": 0,
                     "Referrers": 0, "Errors": 0, "Enqueued": i % 3})
    rows.append({**rows[-1], "RowKey": "latest"})
    return rows


def journal_entities(now: datetime, count: int, rng: random.Random) -> list[dict[str, Any]]:
    """`count` replication events over 30 days, as ReplicationJournal.record writes them."""
    from shared.replication.journal import IGNORED, PLANNED, JournalEntry, row_key

    rows = []
    for _ in range(count):
        at = now - RETENTION * rng.random()
        outcome = PLANNED if rng.random() < 0.7 else IGNORED
        event = str(uuid.UUID(int=rng.getrandbits(128)))
        entry = JournalEntry(id=event, at=at.isoformat(), topic="/subscriptions/x/resourceGroups/rg/providers/"
                             "Microsoft.ContainerRegistry/registries/source", repository="team/api",
                             tag=f"1.{rng.randint(0, 99)}", digest="sha256:" + "ab" * 32, action="push",
                             outcome=outcome, reason="" if outcome == PLANNED else "no rule matches team/api",
                             imports=(f"evt-{event[:8]}",) if outcome == PLANNED else ())
        rows.append(entry.to_entity(row_key(at, event)))
    return rows


def write_rows(table: Any, rows: list[dict[str, Any]]) -> None:
    """Upsert `rows` in transactions of BATCH (one partition each), from a few threads."""
    by_partition: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_partition.setdefault(row["PartitionKey"], []).append(row)
    batches = [part[i:i + BATCH] for part in by_partition.values() for i in range(0, len(part), BATCH)]
    def send(batch: list[dict[str, Any]]) -> None:
        from azure.core.exceptions import ServiceRequestError, ServiceResponseError

        for attempt in range(4):  # upserts: sending one again is harmless (Azurite resets a busy connection)
            try:
                table.submit_transaction([("upsert", row) for row in batch])
                return
            except (ServiceRequestError, ServiceResponseError):
                if attempt == 3:
                    raise
                time.sleep(1 + attempt)

    with concurrent.futures.ThreadPoolExecutor(SEED_THREADS) as pool:
        list(pool.map(send, batches))


# --- counting what the app reads ------------------------------------------------------------------------

class TableReads:
    """Entities the table service returned to this process, and the query requests (pages) that carried them,
    counted in azure-data-tables' pager while installed (every thread)."""

    def __init__(self) -> None:
        self.rows = 0
        self.pages = 0
        self._lock = threading.Lock()

    @contextmanager
    def installed(self) -> Iterator[TableReads]:
        from azure.data.tables._models import TableEntityPropertiesPaged

        original = TableEntityPropertiesPaged._extract_data_cb
        counter = self

        def counted(pager: Any, get_next_return: Any) -> Any:
            token, entities = original(pager, get_next_return)
            with counter._lock:
                counter.rows += len(entities)
                counter.pages += 1
            return token, entities

        TableEntityPropertiesPaged._extract_data_cb = counted  # type: ignore[method-assign]
        try:
            yield self
        finally:
            TableEntityPropertiesPaged._extract_data_cb = original  # type: ignore[method-assign]

    def mark(self) -> tuple[int, int]:
        with self._lock:
            return self.rows, self.pages


# --- measuring ------------------------------------------------------------------------------------------

@dataclass
class Sample:
    seconds: float
    rows: int
    pages: int
    status: int


@dataclass
class Case:
    """One thing measured: a name, and how to ask for it (returns the HTTP statuses it got)."""

    name: str
    ask: Callable[[], list[int]]


@dataclass
class Result:
    sizes: list[int]
    rounds: int
    samples: dict[tuple[str, int], list[Sample]] = field(default_factory=dict)
    seed_seconds: dict[int, float] = field(default_factory=dict)
    found: dict[str, Any] = field(default_factory=dict)  # facts of the answers (scanned, truncated, items)

    def of(self, name: str, size: int) -> list[Sample]:
        return self.samples.get((name, size), [])

    def median(self, name: str, size: int) -> float:
        return statistics.median(s.seconds for s in self.of(name, size))

    def p95(self, name: str, size: int) -> float:
        values = sorted(s.seconds for s in self.of(name, size))
        return values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]

    def rows(self, name: str, size: int) -> int:
        return statistics.median_low(s.rows for s in self.of(name, size))

    def pages(self, name: str, size: int) -> int:
        return statistics.median_low(s.pages for s in self.of(name, size))

    @property
    def names(self) -> list[str]:
        return list(dict.fromkeys(name for name, _ in self.samples))


def before(ask: Callable[[], list[int]]) -> list[int]:
    """`ask` with StatusStore.page reading a text-filtered scan as it did before: in fixed service pages of
    PAGE_SCAN_FIRST rows (the app runs in this process: the runner's worker threads see the change)."""
    from shared.azure import status

    saved, status.PAGE_SCAN_GROWTH = status.PAGE_SCAN_GROWTH, 1
    try:
        return ask()
    finally:
        status.PAGE_SCAN_GROWTH = saved


def _cases(base: str, key: str) -> list[Case]:
    import requests

    session = requests.Session()
    session.headers["x-functions-key"] = key

    def get(path: str, **params: str) -> int:
        answer = session.get(f"{base}/{path}", params=params, timeout=300)
        answer.content  # noqa: B018 - the whole body, as a browser reads it
        return answer.status_code

    def page_load() -> list[int]:
        """What the page does on load: its three files, then app.js's four calls at once (loadAll)."""
        statuses = [get("ui"), get("ui/app.js"), get("ui/app.css")]
        calls = [("ops/health", {}), ("ops/imports", {"limit": str(PAGE_LIMIT)}), ("ops/refresh", {"limit": "10"}),
                 ("ops/replication", {"limit": "20"})]
        with concurrent.futures.ThreadPoolExecutor(len(calls)) as pool:
            statuses += list(pool.map(lambda c: get(c[0], **c[1]), calls))
        return statuses

    limit = str(PAGE_LIMIT)

    def rare() -> list[int]:
        return [get("ops/imports", q=RARE_TEXT, limit=limit)]

    return [
        Case(HEALTH, lambda: [get("ops/health")]),
        Case(FIRST_PAGE, lambda: [get("ops/imports", limit=limit)]),
        Case("`/api/ops/imports?state=failed`", lambda: [get("ops/imports", state="failed", limit=limit)]),
        Case(RARE_CASE, rare),
        Case(RARE_CASE + ", before: fixed 100-row pages", lambda: before(rare)),
        Case("`/api/ops/refresh`", lambda: [get("ops/refresh", limit="10")]),
        Case("`/api/ops/replication`", lambda: [get("ops/replication", limit="20")]),
        Case(PAGE_LOAD, page_load),
    ]


def measure(cases: list[Case], reads: TableReads, rounds: int, size: int, result: Result) -> None:
    """`rounds` rounds, each asking every case once (the order turned each round), after one warm-up round."""
    for case in cases:
        case.ask()
    for number in range(rounds):
        turn = number % len(cases)
        for case in cases[turn:] + cases[:turn]:
            rows, pages = reads.mark()
            began = time.perf_counter()
            statuses = case.ask()
            seconds = time.perf_counter() - began
            after_rows, after_pages = reads.mark()
            if any(s != 200 for s in statuses):
                raise RuntimeError(f"{case.name} answered {statuses}")
            result.samples.setdefault((case.name, size), []).append(
                Sample(seconds, after_rows - rows, after_pages - pages, max(statuses)))


def run_ops(app_env: dict[str, str], sizes: Sequence[int], rounds: int = DEFAULT_ROUNDS,
            seed: int = 17) -> Result:
    """Seed the app's status table up to each of `sizes` in turn and measure every case at each. The stack's
    Azurite must be up; app_env is the app's settings (its own table and queues)."""
    import requests
    from azure.data.tables import TableServiceClient

    from dev import layout
    from dev.runner import Runner
    from shared import app_context

    rng = random.Random(seed)
    now = datetime.now(UTC)
    service = TableServiceClient.from_connection_string(layout.AZURITE_CONNECTION_STRING)
    table = service.create_table_if_not_exists(app_env["IMPORT_STATUS_TABLE"])
    write_rows(table, refresh_entities(now, 24 * 30))
    result = Result(sorted(sizes), rounds)
    reads = TableReads()
    app_context.reset()
    with reads.installed(), Runner("function_app", env=app_env, http_port=0) as runner:
        base = f"http://{layout.HOST}:{runner.http_port}/api"
        cases = _cases(base, runner.function_key)
        seeded = 0
        for size in result.sizes:
            began = time.perf_counter()
            write_rows(table, [request_entity(i, now, rng) for i in range(seeded, size)]
                       + journal_entities(now, (size - seeded) // 5, rng))
            result.seed_seconds[size] = time.perf_counter() - began
            print(f"ops: {size:,} rows seeded in {result.seed_seconds[size]:.0f} s", flush=True)
            seeded = size
            measure(cases, reads, rounds, size, result)
            health = requests.get(f"{base}/ops/health", headers={"x-functions-key": runner.function_key},
                                  timeout=300).json()
            result.found[f"health {size}"] = {"scanned": health.get("scanned"), "truncated": health.get("truncated")}
    app_context.reset()
    return result


# --- the report ------------------------------------------------------------------------------------------

def _ms(seconds: float) -> str:
    return f"{1000 * seconds:,.0f}"


def markdown(result: Result, load: tuple[float, float] | None = None) -> str:
    sizes, smallest, largest = result.sizes, result.sizes[0], result.sizes[-1]
    head = "| call | " + " | ".join(f"N={n:,}: median / p95 (ms) | rows read (requests)" for n in sizes) + \
        "".join(f" | median {n:,}/{smallest:,}" for n in sizes[1:]) + " |"
    lines = [head, "|---|" + "---|---|" * len(sizes) + "---|" * (len(sizes) - 1)]
    for name in result.names:
        cells = []
        for n in sizes:
            cells += [f"{_ms(result.median(name, n))} / {_ms(result.p95(name, n))}",
                      f"{result.rows(name, n):,} ({result.pages(name, n)})"]
        cells += [f"{result.median(name, n) / result.median(name, smallest):.1f}x" for n in sizes[1:]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    old = RARE_CASE + ", before: fixed 100-row pages"
    gain = result.median(old, largest) / result.median(RARE_CASE, largest)
    health = result.found.get(f"health {largest}", {})
    slowest = max((n for n in result.names if n not in (old, PAGE_LOAD)), key=lambda n: result.median(n, largest))
    seeding = ", ".join(f"to {n:,} in {s:.0f} s" for n, s in result.seed_seconds.items())
    machine_load = f" Load average {load[0]:.1f} when the rounds began, {load[1]:.1f} when they ended." if load else ""
    return f"""The status table seeded with N request rows (batch transactions to Azurite; {seeding}), updated
over the last 30 days: {', '.join(f'{s} {w:.0%}' for s, w in ENDED_MIX)} of those that ended, some running,
retrying and received in the last hour; one row in {RARE_EVERY:,} has a reason with the text `q=` looks for. With
them, a refresh run every hour for 30 days and N/5 replication events (the same table's other partitions). Each
call asked through the runner's HTTP server with the function key, {result.rounds} rounds after a warm-up, the
calls' order turned each round; the table grows from one N to the next in the same run. `make bench` runs
N = {', '.join(f'{n:,}' for n in DEFAULT_SIZES)}; `OPS_ROWS=1000,10000,50000 python -m benchmarks ops` the larger
profile (`OPS_ROUNDS` the rounds). Rows read: the entities the table service sent the app; requests: the
service requests (pages) that carried them.{machine_load}

{chr(10).join(lines)}

The page load is `GET /api/ui` and its two files, then app.js's four calls at once (health, the first page of
{PAGE_LIMIT} imports, 10 refresh runs, 20 replication events), as a browser makes them.

**What changed, side by side in this run.** A text filter (`q=`) is matched in Python over at most 1,000 rows a
call (`PAGE_SCAN_ROWS`, shared/azure/status.py). It read them in ten service pages of 100; it now reads the
first 100 and then pages four times as large (100, 400, 500: three requests), from the service's continuation
token. At N={largest:,} a call that finds the rare text costs {_ms(result.median(RARE_CASE, largest))} ms against
{_ms(result.median(old, largest))} ms before ({gain:.1f}x less), the same 1,000 rows read. A common text still reads
one page of 100 (a test says so: tests/imports/test_list_api.py).

**How each call scales, and where it does not stay bounded.** At N={largest:,} the slowest call is
{slowest} ({_ms(result.median(slowest, largest))} ms), health takes {_ms(result.median(HEALTH, largest))} ms and a
whole page load {_ms(result.median(PAGE_LOAD, largest))} ms.

- Azurite is not Azure here: for every page of every query it filters the whole table, all partitions, and
  sorts what is left (Azurite 3.35, `LokiTableMetadataStore.queryTableEntities`), so in Azurite every call's
  time grows with N, key-range reads included; the first page, filtered by nothing but the partition, sorts
  every row ({result.median(FIRST_PAGE, largest) / result.median(FIRST_PAGE, smallest):.0f}x at N={largest:,}),
  `state=failed` only the failed ones. The ratios above are that growth. In Azure, a read of a key range
  (`/api/ops/imports` first page, refresh, replication, the text filter's pages) costs the rows it returns:
  constant in N.
- `/api/ops/imports` first page, `/api/ops/refresh`, `/api/ops/replication`: the same rows at every N (a page
  of {PAGE_LIMIT}; the refresh runs' keys of the last day and their summaries; the journal's newest 20 and the
  outcome column of a day's events, which grows with the events of a day, not with retention).
- `/api/ops/health`: reads two columns (`select`) of the rows updated in the last day, filtered by the service
  (`UpdatedAt ge`), at most 20,000 ({health.get('scanned', 0):,} at N={largest:,}, truncated:
  {str(health.get('truncated')).lower()}). The answer is bounded; the service's work is not: UpdatedAt is not a
  key, so the service scans the whole `import` partition (every row kept, up to STATUS_RETENTION_DAYS) on each
  call, in Azure as in Azurite, while it returns a thirtieth of it. At thousands of requests a day that is a
  scan of 10k-100k rows per page load; Azure runs a query for at most 5 s per page and answers with a
  continuation token after that (learn.microsoft.com, "Query timeout and pagination"), so it stays an
  answer, slower as retention grows. Bounding the scan itself needs rows keyed by time (a second row per
  transition, as the replication journal keys its rows): not done, since the measured cost does not call for it.
- `/api/ops/imports?state=failed`: the service filters State; one page of {PAGE_LIMIT} failed rows needs about
  {PAGE_LIMIT / dict(ENDED_MIX)['failed']:,.0f} rows scanned at this mix, whatever N is; a state that is rarer
  scans more, up to the whole partition, across requests the service answers (maybe empty) with a token.
- `/api/ops/imports?q=`: bounded per call (1,000 rows, three requests), not per search: a text that matches
  rarely is found by paging on, N/1,000 calls for the whole table ({largest // 1000:,} at N={largest:,}), each
  of which may show nothing. The page says "more on the next page" and keeps the token.
"""


def run_measured() -> Result:
    from dev import stack
    from dev.app_settings import create_app_queues, local_app_settings

    sizes = [int(n) for n in os.environ.get("OPS_ROWS", ",".join(map(str, DEFAULT_SIZES))).split(",") if n.strip()]
    rounds = int(os.environ.get("OPS_ROUNDS", DEFAULT_ROUNDS))
    started = stack.up(["azurite"])
    try:
        suffix = uuid.uuid4().hex[:6]
        settings = local_app_settings(queue=f"ops-{suffix}", table=f"ops{suffix}")
        create_app_queues(settings["IMPORT_QUEUE"])
        saved = dict(os.environ)
        os.environ.update(settings)
        try:
            load_before = os.getloadavg()[0]
            result = run_ops(settings, sizes, rounds)
            result.found["load"] = (load_before, os.getloadavg()[0])
        finally:
            os.environ.clear()
            os.environ.update(saved)
    finally:
        stack.down(started)
    return result


def run() -> str:
    result = run_measured()
    return markdown(result, result.found.get("load"))
