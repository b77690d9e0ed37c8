"""Scale-out within ARM's limits: a bulk import through several Function App instances at once, against ARM's
per-principal token buckets.

SCALEOUT_REQUESTS requests (default 2,000) are put on one queue, then SCALEOUT_RUNNERS runner processes
(default 4; `python -m dev.runner`, each its own OS process standing for one Function App instance) take them,
with the same settings, queue, status table and managed identity, so ARM sees one principal, as it would see
one app's identity on every instance. The ACR stand-in (memory data plane) copies each image for
SCALEOUT_COPY_SECONDS (default "1-3": a uniform draw per import, seeded, through the stand-in's `operation`
delay fault), so watching the import costs ARM reads. It answers `Retry-After: 10` as ACR does, and its ARM
token buckets are on with ARM's limits (reads 250 refilling 25/s, writes 200 refilling 10/s per principal;
docs: azure-resource-manager "Understand how Azure Resource Manager throttles requests", the 2024 regional
token-bucket algorithm).

SCALEOUT_BUCKET_SCALE (default 1) multiplies both bucket sizes and nothing else: the refills stay ARM's,
so the steady state is ARM's and only the initial burst is shorter (the short profile of `make bench` uses
0.1: reads 25, writes 20). The ratios between reads and writes stay ARM's either way.

What it reports comes from the stand-in's request record (every ARM request with its method, what ARM
counted it as, its status and the budget its answer said was left), the status table (every request's
terminal state, attempts and when it ended), the stand-in's operations (when each copy ended) and the
dead-letter queues. `run_scaleout(...)` is the measurement for a test; `python -m benchmarks scaleout` runs
it on the stack and writes the section.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import math
import os
import pickle
import random
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.cost import _wrapped, server_cpu
from dev import layout

TITLE = "Scale-out within ARM's limits"
SOURCE = "docker.io/library/nginx:1.27"
SOURCE_DIGEST = "sha256:" + "5c" * 32
ARM_LIMITS = {"reads": (250.0, 25.0), "writes": (200.0, 10.0)}  # bucket size, refill per second, per principal
DEFAULTS: dict[str, str] = {"requests": "2000", "runners": "4", "bucket_scale": "1", "copy": "1-3"}
THROUGHPUT_GOAL = 0.9  # of the write refill rate
THROTTLE_CODES = ("SubscriptionRequestsThrottled", "TenantRequestsThrottled", "HTTP429", "TooManyRequests")
READY_TIMEOUT = 90.0
STOP_GRACE = 30.0  # a runner drains what it runs; an invocation may sleep up to IMPORT_WAIT_SECONDS (20 s)
STRANDED_CHECKS = 5  # looks 2 s apart that found requests not done and the queue empty
OPERATION_PATH = ("/operationResults/", "/operationStatuses/")


@dataclass(frozen=True)
class Profile:
    requests: int = 2000
    runners: int = 4
    bucket_scale: float = 1.0
    copy_seconds: tuple[float, float] = (1.0, 3.0)
    timeout: float = 1200.0  # seconds from the moment the requests are due; what is not done then is reported
    seed: int = 15

    @property
    def limits(self) -> dict[str, tuple[float, float]]:
        return {kind: (max(1.0, round(size * self.bucket_scale)), refill)
                for kind, (size, refill) in ARM_LIMITS.items()}

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Profile:
        low, _, high = env.get("SCALEOUT_COPY_SECONDS", DEFAULTS["copy"]).partition("-")
        requests = int(env.get("SCALEOUT_REQUESTS", DEFAULTS["requests"]))
        return cls(requests=requests, runners=int(env.get("SCALEOUT_RUNNERS", DEFAULTS["runners"])),
                   bucket_scale=float(env.get("SCALEOUT_BUCKET_SCALE", DEFAULTS["bucket_scale"])),
                   copy_seconds=(float(low), float(high or low)),
                   timeout=float(env.get("SCALEOUT_TIMEOUT", 600 + requests * 0.3)))


# --- the runner processes -------------------------------------------------------------------------------

def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Instances:
    """The runner processes of one run: started in their own process groups, always stopped."""

    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    first_ready: float = 0.0  # epoch seconds: the first instance's host started (within 0.1 s)

    def cpu_seconds(self) -> float:
        return sum(_cpu_seconds(p.pid) or 0.0 for p in self.processes)

    def last_outcomes(self, request_ids: set[str]) -> dict[str, str]:
        """The reason of the last outcome the runners logged for each of these requests."""
        found: dict[str, tuple[str, str]] = {}
        for log in self.logs:
            with contextlib.suppress(OSError):
                for line in log.read_text(errors="replace").splitlines():
                    stamp, _, text = line.partition("] ")
                    if not text.startswith('{"event": "import"'):
                        continue
                    with contextlib.suppress(ValueError):
                        event = json.loads(text)
                        request = str(event.get("requestId"))
                        if request in request_ids and stamp >= found.get(request, ("", ""))[0]:
                            found[request] = (stamp, f"{event.get('state')}: {event.get('reason')}")
        return {request: reason for request, (_, reason) in found.items()}

    def retry_causes(self) -> Counter[str]:
        """Attempts that ended in a scheduled retry, by the failure's code (from the runners' outcome lines)."""
        found: Counter[str] = Counter()
        for log in self.logs:
            with contextlib.suppress(OSError):
                for line in log.read_text(errors="replace").splitlines():
                    text = line.partition("] ")[2]
                    if text.startswith('{"event": "import"') and '"state": "retrying"' in text:
                        with contextlib.suppress(ValueError):
                            reason = str(json.loads(text).get("reason", ""))
                            if reason.startswith("throttled by ARM"):  # held back before the POST, or a 429
                                found[reason.split(", retrying", 1)[0][:80]] += 1
                            else:
                                found[reason.split("failed (", 1)[-1].split(":", 1)[0].split(")", 1)[0][:60]] += 1
        return found

    def log_problems(self) -> Counter[str]:
        """Invocations that raised (the host then retries their message), by the error they raised."""
        found: Counter[str] = Counter()
        for log in self.logs:
            with contextlib.suppress(OSError):
                for line in log.read_text(errors="replace").splitlines():
                    if "Executed '" in line and "(Failed, " in line:
                        found[line.split("): ", 1)[-1][:100]] += 1
        return found


@contextlib.contextmanager
def instances(count: int, env: dict[str, str], log_dir: Path) -> Iterator[Instances]:
    """`count` `python -m dev.runner` processes on the app, each ready (its host started) before this yields;
    stopped on the way out (SIGTERM to the process group: the runner drains; SIGKILL after STOP_GRACE)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    running = Instances()
    try:
        for i in range(count):
            log = log_dir / f"runner-{i}.log"
            running.logs.append(log)
            with log.open("wb") as out:
                running.processes.append(subprocess.Popen(
                    [sys.executable, "-m", "dev.runner", "--app", "function_app", "--port", "0"],
                    cwd=layout.REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + READY_TIMEOUT
        waiting = set(range(count))
        while waiting:
            for i in sorted(waiting):
                if running.processes[i].poll() is not None:
                    raise RuntimeError(f"runner {i} exited at start ({running.processes[i].returncode}); its log: "
                                       f"{running.logs[i]}")
                if "Host started" in running.logs[i].read_text(errors="replace"):
                    waiting.discard(i)
                    running.first_ready = running.first_ready or time.time()
            if waiting and time.monotonic() > deadline:
                raise RuntimeError(f"runners {sorted(waiting)} not ready after {READY_TIMEOUT:.0f} s; logs in "
                                   f"{log_dir}")
            time.sleep(0.1)
        yield running
    finally:
        _stop(running.processes)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# --- one run --------------------------------------------------------------------------------------------

@dataclass
class Result:
    profile: Profile
    ids: list[str]
    due: dict[str, float]                       # epoch seconds each request could be taken
    rows: dict[str, Any]                        # id -> StatusRecord (the last read)
    arm: list[dict[str, Any]]                   # the stand-in's record of ARM requests over the run
    operations: list[dict[str, Any]]            # the stand-in's import operations
    dead_letters: list[dict[str, Any]]          # letters on <queue>-rejected
    poisoned: int                               # messages left on <queue>-poison
    began: float = 0.0                          # epoch: the first instance ready (the bulk already queued)
    ended: float = 0.0                          # epoch: every request terminal, or the timeout
    timed_out: bool = False
    stranded: bool = False                      # stopped waiting: requests not done and no message left
    load: float = 0.0
    runner_cpu: float = 0.0
    servers: dict[str, float] = field(default_factory=dict)
    log_problems: Counter[str] = field(default_factory=Counter)
    retry_causes: Counter[str] = field(default_factory=Counter)  # scheduled retries by the failure's code
    last_logged: dict[str, str] = field(default_factory=dict)  # request -> last outcome logged, for those not done

    # requests -------------------------------------------------------------------------
    def state_of(self, request_id: str) -> str:
        row = self.rows.get(request_id)
        if row is None:
            return "lost (no status row)"
        if row.state.terminal:
            return str(row.state)
        return f"lost: {row.state}, no message left" if self.stranded else f"unfinished at the timeout ({row.state})"

    @property
    def states(self) -> Counter[str]:
        return Counter(self.state_of(i) for i in self.ids)

    @property
    def succeeded(self) -> int:
        return self.states.get("succeeded", 0)

    @property
    def not_terminal(self) -> list[str]:
        return [i for i in self.ids if i not in self.rows or not self.rows[i].state.terminal]

    def throttled(self, row: Any) -> bool:
        text = f"{row.code} {row.reason}"
        return row.code in THROTTLE_CODES or "429" in text or "throttl" in text.lower()

    @property
    def failed_by_throttling(self) -> list[Any]:
        return [r for i in self.ids if (r := self.rows.get(i)) is not None and r.state.terminal
                and str(r.state) != "succeeded" and self.throttled(r)]

    @property
    def dead_lettered_ids(self) -> set[str]:
        return {str(letter.get("id")) for letter in self.dead_letters if str(letter.get("id")) in set(self.ids)}

    @property
    def dead_lettered_by_throttling(self) -> int:
        mine = set(self.ids)
        return sum(1 for letter in self.dead_letters if str(letter.get("id")) in mine and (
            letter.get("code") in THROTTLE_CODES or "429" in str(letter.get("reason"))
            or "throttl" in str(letter.get("reason")).lower()))

    def attempts(self) -> Counter[int]:
        return Counter(r.attempts for i in self.ids if (r := self.rows.get(i)) is not None)

    # ARM --------------------------------------------------------------------------------
    def arm_count(self, kind: str, *, throttled: bool | None = None, polls: bool = False) -> int:
        return sum(1 for r in self.arm if r.get("rate_kind") == kind
                   and (throttled is None or (r["status"] == 429) == throttled)
                   and (not polls or any(p in r["path"] for p in OPERATION_PATH)))

    def per_import(self, count: int) -> float:
        return count / max(1, self.succeeded)

    @property
    def accepted_posts(self) -> list[dict[str, Any]]:
        return sorted((r for r in self.arm if r["method"] == "POST" and r["path"].endswith("/importImage")
                       and r["status"] == 202), key=lambda r: r["time"])

    def request_of(self, record: dict[str, Any]) -> str | None:
        """The request an importImage POST was for: its target tag is `scale:<request id>`."""
        body = record.get("body")
        tags = body.get("targetTags") if isinstance(body, dict) else None
        return tags[0].split(":", 1)[1] if tags else None

    def lowest_remaining(self, kind: str) -> int | None:
        header = f"x-ms-ratelimit-remaining-subscription-{kind}"
        values = [r["remaining"][header] for r in self.arm if header in (r.get("remaining") or {})]
        return min(values) if values else None

    def steady_window(self) -> tuple[float, float, int, bool]:
        """(start, end, write tokens still left at the start, whether the bucket had run empty by then).

        The steady state starts once the initial write bucket is spent: at the first accepted importImage POST
        whose answer says no write token is left, or at the accepted POST that used the bucket's size in
        tokens, whichever comes first (a worker that keeps a reserve never sees 0 left). It ends at the last
        accepted POST. Whatever the bucket still held at the start is reported, and `steady` does not let it
        count as throughput."""
        posts = self.accepted_posts
        if not posts:
            return self.began, self.ended, 0, False
        header = "x-ms-ratelimit-remaining-subscription-writes"
        size = int(self.profile.limits["writes"][0])
        for index, record in enumerate(posts):
            left = (record.get("remaining") or {}).get(header)
            if left == 0 or index + 1 >= size:
                return record["time"], posts[-1]["time"], int(left or 0), left == 0
        return posts[0]["time"], posts[-1]["time"], size, False  # fewer POSTs than the bucket holds

    def steady(self) -> dict[str, float]:
        """Imports per second in the steady window paid by refilled tokens: the requests that succeeded whose
        last accepted POST fell in the window, less the tokens the bucket still held at its start."""
        start, end, left, _ = self.steady_window()
        seconds = max(1e-9, end - start)
        last_post: dict[str, float] = {}
        for record in self.accepted_posts:
            request = self.request_of(record)
            if request is not None:
                last_post[request] = record["time"]
        useful = sum(1 for i, at in last_post.items() if start < at <= end
                     and i in self.rows and str(self.rows[i].state) == "succeeded")
        writes = sum(1 for r in self.accepted_posts if start < r["time"] <= end)
        reads_sent = sum(1 for r in self.arm if r.get("rate_kind") == "reads" and start < r["time"] <= end)
        reads_429 = sum(1 for r in self.arm if r.get("rate_kind") == "reads" and r["status"] == 429
                        and start < r["time"] <= end)
        return {"seconds": end - start, "imports": useful, "left": left,
                "imports_per_second": max(0, useful - left) / seconds, "writes_per_second": writes / seconds,
                "reads_sent_per_second": reads_sent / seconds, "reads_429": reads_429}

    # time to done ------------------------------------------------------------------------
    def done_at(self, request_id: str) -> float | None:
        row = self.rows.get(request_id)
        if row is None or not row.state.terminal or not row.updated_at:
            return None
        return datetime.fromisoformat(row.updated_at).timestamp()

    def times_to_done(self) -> list[float]:
        return sorted(at - self.due[i] for i in self.ids if (at := self.done_at(i)) is not None
                      and str(self.rows[i].state) == "succeeded")

    def noticed_after_copy(self) -> list[float]:
        """For each succeeded import: from the end of its copy (the stand-in's operation) to its row saying
        succeeded, i.e. how long watching took to see it."""
        ended = {op["id"]: op["ended"] for op in self.operations if op.get("ended")}
        found = []
        for i in self.ids:
            row, at = self.rows.get(i), self.done_at(i)
            if row is None or at is None or str(row.state) != "succeeded" or not row.operation:
                continue
            copy_end = ended.get(row.operation.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1])
            if copy_end is not None:
                found.append(at - copy_end)
        return sorted(found)


def _messages(run_id: str, count: int) -> list[tuple[str, str]]:
    ids = [f"scale-{run_id}-{i:05d}" for i in range(count)]
    return [(i, json.dumps({"id": i, "source": SOURCE, "targetTags": [f"scale:{i}"], "mode": "Force"})) for i in ids]


def _enqueue(queue: Any, messages: list[tuple[str, str]]) -> None:
    """The whole bulk on the queue before any instance runs (8 senders: Azurite takes a few ms a message)."""
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda item: queue.send_message(item[1]), messages))


def _drain_letters(queue_client: Any) -> list[dict[str, Any]]:
    letters: list[dict[str, Any]] = []
    while True:
        batch = list(queue_client.receive_messages(messages_per_page=32, visibility_timeout=600, max_messages=32))
        if not batch:
            return letters
        for message in batch:
            with contextlib.suppress(ValueError, TypeError):
                letters.append(json.loads(message.content))


def _message_count(queue_client: Any) -> int:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return int(queue_client.get_queue_properties().approximate_message_count or 0)
    except ResourceNotFoundError:
        return 0


def run_scaleout(app_env: dict[str, str], control: Any, profile: Profile, *, log_dir: Path | None = None,
                 progress: bool = False) -> Result:
    """One run on a stack that is up: configure the stand-in, start the runners, enqueue, wait, collect."""
    from azure.storage.queue import QueueClient

    from dev.app_settings import create_app_queues
    from shared import app_context

    queue_name = app_env["IMPORT_QUEUE"]
    create_app_queues(queue_name)
    control.update_settings(data_plane="memory", retry_after=10)
    control.put_image(SOURCE, SOURCE_DIGEST)
    rng = random.Random(profile.seed)
    low, high = profile.copy_seconds
    # one delay per copy, in the order the copies start; spare ones for imports started again
    control.add_faults("operation", *({"delay": round(rng.uniform(low, high), 2)}
                                      for _ in range(profile.requests + profile.requests // 2 + 10)))
    env = {**os.environ, **app_env, "PYTHONUNBUFFERED": "1",
           # one key for all instances, so they do not race to write the runner's key files
           "EVENTGRID_SYSTEM_KEY": uuid.uuid4().hex, "RUNNER_FUNCTION_KEY": uuid.uuid4().hex}
    queue = QueueClient.from_connection_string(layout.AZURITE_CONNECTION_STRING, queue_name)
    store = app_context.status_store(app_context.app_settings(app_env))
    run_id = uuid.uuid4().hex[:6]
    messages = _messages(run_id, profile.requests)
    ids = [i for i, _ in messages]
    log_dir = log_dir or layout.STATE_DIR / "logs" / f"scaleout-{run_id}"
    _enqueue(queue, messages)
    limits = profile.limits
    control.throttling(True, reads=limits["reads"], writes=limits["writes"])  # buckets full from here
    control.clear_requests()
    load, servers_before = os.getloadavg()[0], server_cpu()
    with instances(profile.runners, env, log_dir) as running:
        began = running.first_ready  # time zero: the bulk is on the queue and the first instance takes it
        due = dict.fromkeys(ids, began)
        deadline, timed_out, stranded, rows, last_report = began + profile.timeout, False, 0, {}, 0.0
        while True:
            time.sleep(2.0)
            rows = {r.id: r for r in store.list() if r.id in due}
            finished = sum(1 for r in rows.values() if r.state.terminal)
            now = time.time()
            if progress and now - last_report > 15:
                last_report = now
                print(f"  {max(0.0, now - began):.0f} s: {finished}/{profile.requests} terminal", flush=True)
            if finished == profile.requests:
                break
            # requests not done while the queue holds no message at all (none visible, none in flight, no retry
            # waiting): nothing will ever carry them on, so waiting longer shows nothing more
            stranded = stranded + 1 if _message_count(queue) == 0 else 0
            if stranded >= STRANDED_CHECKS:
                break
            if now > deadline:
                timed_out = True
                break
        ended = max((datetime.fromisoformat(r.updated_at).timestamp() for r in rows.values()
                     if r.state.terminal and r.updated_at), default=time.time())
        runner_cpu = running.cpu_seconds()  # their start-up included
        servers = {name: used - servers_before[name] for name, used in server_cpu().items()
                   if name in servers_before}
        arm = control.requests("arm")
        operations = control.operations()
    result = Result(profile, ids, due, rows, arm, operations,
                    _drain_letters(QueueClient.from_connection_string(layout.AZURITE_CONNECTION_STRING,
                                                                      f"{queue_name}-rejected")),
                    _message_count(QueueClient.from_connection_string(layout.AZURITE_CONNECTION_STRING,
                                                                      f"{queue_name}-poison")),
                    began=began, ended=ended, timed_out=timed_out, stranded=stranded >= STRANDED_CHECKS, load=load,
                    runner_cpu=runner_cpu, servers=servers, log_problems=running.log_problems(),
                    retry_causes=running.retry_causes(),
                    last_logged=running.last_outcomes({i for i in ids if i not in rows or not rows[i].state.terminal}))
    result.rows = {r.id: r for r in store.list() if r.id in due}  # after the runners drained
    with contextlib.suppress(OSError):  # the raw data, to render the report again: `--report FILE`
        (log_dir / "result.pickle").write_bytes(pickle.dumps(result))
        if progress:
            print(f"  raw result: {log_dir / 'result.pickle'}", flush=True)
    return result


# --- the report -----------------------------------------------------------------------------------------

def _verdict(reached: bool) -> str:
    return "reached" if reached else "**not reached**"


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if q == 0.5:
        return statistics.median(values)
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _timeline(result: Result, rows: int = 12) -> list[str]:
    """ARM's answers and the requests done over time, in equal bins from time zero (the first instance ready)."""
    span = max(1.0, max([result.ended, *(r["time"] for r in result.arm)]) - result.began)
    width = max(1, math.ceil(span / rows))
    bins: dict[int, Counter[str]] = {}
    for r in result.arm:
        counts = bins.setdefault(int((r["time"] - result.began) // width), Counter())
        kind = r.get("rate_kind", "?")
        counts[f"{kind}-429" if r["status"] == 429 else kind] += 1
    for i in result.ids:
        if (at := result.done_at(i)) is not None:
            bins.setdefault(int((at - result.began) // width), Counter())["done"] += 1
    lines = ["| from (s) | writes answered /s | writes 429 | reads answered /s | reads 429 | requests done /s |",
             "|---|---|---|---|---|---|"]
    for index in range(max(bins, default=-1) + 1):
        c = bins.get(index, Counter())
        lines.append(f"| {index * width} | {c['writes'] / width:.1f} | {c['writes-429']} | {c['reads'] / width:.1f} | "
                     f"{c['reads-429']} | {c['done'] / width:.1f} |")
    return lines


def markdown(result: Result) -> str:
    p = result.profile
    limits = p.limits
    (read_size, read_refill), (write_size, write_refill) = limits["reads"], limits["writes"]
    n = p.requests
    states = result.states
    throttled_failures = result.failed_by_throttling
    steady = result.steady()
    start, end, left, emptied = result.steady_window()
    reads_429 = result.arm_count("reads", throttled=True)
    writes_429 = result.arm_count("writes", throttled=True)
    polls = result.arm_count("reads", polls=True)
    done, noticed = result.times_to_done(), result.noticed_after_copy()
    lowest_writes, lowest_reads = result.lowest_remaining("writes"), result.lowest_remaining("reads")
    attempts = result.attempts()
    writes_answered = result.arm_count("writes", throttled=False)
    reads_answered = result.arm_count("reads", throttled=False)
    bucket_then = "the bucket had run empty" if emptied else f"it still held {left}"
    throughput_reached = steady["imports_per_second"] >= THROUGHPUT_GOAL * write_refill
    retried = sum(k for a, k in attempts.items() if a > 1)
    scaled = "" if p.bucket_scale == 1 else (
        f" Bucket sizes scaled by {p.bucket_scale:g} (`SCALEOUT_BUCKET_SCALE`; refills are ARM's, so only the "
        "initial burst is shorter).")
    lost = [i for i in result.ids if i not in result.rows]
    lines = [
        f"{n} requests (`SCALEOUT_REQUESTS`) put on one queue, then taken by {p.runners} runner "
        f"processes (`SCALEOUT_RUNNERS`; `python -m dev.runner`, one per Function App instance, host.json's "
        "batchSize 16 + newBatchThreshold 8 each, the shipped IMPORT_POLL_INTERVAL_SECONDS and retry settings), "
        "one status table, one managed identity: ARM sees one principal. The stand-in copies each image for "
        f"{p.copy_seconds[0]:g}-{p.copy_seconds[1]:g} s (`SCALEOUT_COPY_SECONDS`, uniform, seeded) and answers "
        f"`Retry-After: 10` as ACR does. ARM's per-principal buckets on: reads {read_size:g} refilling "
        f"{read_refill:g}/s, writes {write_size:g} refilling {write_refill:g}/s, in real time.{scaled}",
        "",
        "Time zero is the first instance's host started, the whole bulk already on the queue (the other instances "
        "start within a second or two). "
        f"Wall time from time zero to the last request ending: {result.ended - result.began:.1f} s"
        f"{' (**timed out**: stopped waiting after ' + format(p.timeout, '.0f') + ' s)' if result.timed_out else ''}; "
        f"load average when it began: {result.load:.1f} (2 cores shared by the runners, Azurite and the "
        "stand-in).",
        "",
        "| goal (issue 15) | measured | aim | |",
        "|---|---|---|---|",
        f"| requests failed or dead-lettered because of throttling | {len(throttled_failures)} failed, "
        f"{result.dead_lettered_by_throttling} dead-lettered | 0 | {_verdict(not throttled_failures)} |",
        f"| requests lost (no terminal state) | {len(result.not_terminal)} | 0 | "
        f"{_verdict(not result.not_terminal)} |",
        f"| steady-state throughput against the write refill | {steady['imports_per_second']:.2f} imports/s = "
        f"{100 * steady['imports_per_second'] / write_refill:.0f}% of {write_refill:g}/s | ≥ "
        f"{100 * THROUGHPUT_GOAL:.0f}% | {_verdict(throughput_reached)} |",
        f"| 429 answers: reads / writes | {reads_429} / {writes_429} | 0 | {_verdict(reads_429 + writes_429 == 0)} |",
        "",
        "| requests | count |",
        "|---|---|",
        *(f"| {state} | {count} |" for state, count in sorted(states.items(), key=lambda s: -s[1])),
        f"| dead-lettered (`-rejected` queue) | {len(result.dead_lettered_ids)} |",
        f"| left on the poison queue | {result.poisoned} |",
        f"| failed because of throttling | {len(throttled_failures)} |",
        f"| needed more than one attempt | {retried} |",
        "",
        "| ARM, per succeeded import | |",
        "|---|---|",
        f"| writes answered (importImage POSTs accepted) | {result.per_import(writes_answered):.2f} |",
        f"| reads answered | {result.per_import(reads_answered):.2f} |",
        f"| polls of the operation (answered and throttled) | {result.per_import(polls):.2f} |",
        f"| 429 answers to writes / reads | {result.per_import(writes_429):.2f} / {result.per_import(reads_429):.2f} |",
        "",
        "| time to done, succeeded requests | median | p95 |",
        "|---|---|---|",
        f"| from time zero (includes waiting for the write budget) | {_quantile(done, 0.5):.1f} s | "
        f"{_quantile(done, 0.95):.1f} s |",
        f"| from the copy's end (how long watching took to see it) | {_quantile(noticed, 0.5):.2f} s | "
        f"{_quantile(noticed, 0.95):.2f} s |",
        "",
        "- Steady state, as measured: once the initial write bucket was spent (the first accepted importImage "
        f"POST whose answer said no write token was left, or the {write_size:g}th accepted POST if sooner: "
        f"{start - result.began:.1f} s after time zero; {bucket_then}) to the last accepted POST "
        f"({end - result.began:.1f} s): {steady['seconds']:.1f} s. Throughput is the requests that succeeded whose "
        f"last accepted POST fell in that window ({steady['imports']:.0f}), less the tokens the bucket still held at "
        f"its start ({left}), per second: every import needs one write, so the write refill bounds it, and stored "
        "tokens cannot inflate it.",
        f"- In that window: {steady['writes_per_second']:.2f} writes answered/s (any accepted POST, also an import "
        f"started again), {steady['reads_sent_per_second']:.1f} reads sent/s against a refill of "
        f"{read_refill:g}/s, {steady['reads_429']:.0f} of them answered 429.",
        f"- Lowest budget ARM's answers reported left: writes {lowest_writes}, reads {lowest_reads}.",
        f"- Attempts per request: {', '.join(f'{a}: {k}' for a, k in sorted(attempts.items()))}. Attempts that "
        "ended in a scheduled retry, by cause (the runners' outcome lines): "
        + (", ".join(f"{code} {k}" for code, k in result.retry_causes.most_common()) or "none") + ".",
    ]
    if throttled_failures:
        codes = Counter(f"{r.code}" for r in throttled_failures)
        example = throttled_failures[0].reason
        by_code = ", ".join(f"{c} {k}" for c, k in codes.most_common())
        lines.append(f"- Failed because of throttling, by code: {by_code}; e.g. \"{example[:240]}\".")
    other_failures = Counter(f"{r.code}" for i in result.ids if (r := result.rows.get(i)) is not None
                             and r.state.terminal and str(r.state) != "succeeded" and not result.throttled(r))
    if other_failures:
        lines.append(f"- Other failures, by code: {', '.join(f'{c} {k}' for c, k in other_failures.most_common())}.")
    if lost:
        lines.append(f"- No status row at all: {len(lost)} (e.g. {lost[0]}).")
    if result.not_terminal:
        why = Counter(result.last_logged.get(i, "no outcome logged") for i in result.not_terminal)
        when = "no message left in the queue to carry them" if result.stranded else "at the timeout"
        lines.append(f"- Not done ({when}), by the last outcome the runners logged for them: " + "; ".join(
                         f"{k}x \"{reason[:200]}\"" for reason, k in why.most_common(3)) + ".")
    cpu = f"the {p.runners} runners {1000 * result.runner_cpu / max(1, n):.0f} ms"
    servers = ", ".join(f"{name} {1000 * used / max(1, n):.0f} ms" for name, used in sorted(result.servers.items()))
    lines.append(f"- CPU per request over the run (/proc): {cpu}{', ' + servers if servers else ''}.")
    if result.log_problems:
        raised = sum(result.log_problems.values())
        errors = "; ".join(f"{k}x `{text}`" for text, k in result.log_problems.most_common(3))
        lines.append(f"- Invocations that raised (the host retries their message): {raised}, by error: {errors}.")
    lines += ["", "ARM's answers over time (from the stand-in's record; 429 columns are counts per bin):", "",
              *_timeline(result)]
    return "\n".join(_wrapped(lines)) + "\n"


def run() -> str:
    from azure.storage.queue import QueueServiceClient

    from dev import seed, stack
    from dev.app_settings import local_app_settings
    from dev.azure_standin.control import StandinControl

    profile = Profile.from_env()
    started = stack.up()
    saved = dict(os.environ)
    try:
        seed.seed_world()
        control = StandinControl(timeout=120)
        control.reset()
        suffix = uuid.uuid4().hex[:6]
        settings = local_app_settings(queue=f"scale-{suffix}", table=f"scale{suffix}")
        settings.pop("IMPORT_POLL_INTERVAL_SECONDS")  # measure the shipped default
        os.environ.update(settings)
        try:
            result = run_scaleout(settings, control, profile, progress=True)
        finally:
            control.reset()
            service = QueueServiceClient.from_connection_string(layout.AZURITE_CONNECTION_STRING)
            for name in (settings["IMPORT_QUEUE"], f"{settings['IMPORT_QUEUE']}-rejected",
                         f"{settings['IMPORT_QUEUE']}-poison"):
                with contextlib.suppress(Exception):
                    service.delete_queue(name)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        stack.down(started)
    return markdown(result)


if __name__ == "__main__":  # python -m benchmarks.scaleout --report <log dir>/result.pickle: the report again
    if len(sys.argv) == 3 and sys.argv[1] == "--report":
        print(markdown(pickle.loads(Path(sys.argv[2]).read_bytes())))
    else:
        sys.exit("usage: python -m benchmarks.scaleout --report RESULT_PICKLE (a run: python -m benchmarks scaleout)")
