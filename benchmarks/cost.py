"""Cost per import: what one succeeded import costs the worker, in round trips and CPU, and how many the
worker finishes per second.

Instant imports (the ACR stand-in's memory data plane: the "copy" is a catalog entry, so ARM answers at
once and the copy costs nothing) go through the queue and the local runner (dev/runner, in this process,
host.json's batchSize and newBatchThreshold, PYTHON_THREADPOOL_THREAD_COUNT as deployed). The stand-in
answers `Retry-After: 10` as ACR does; the worker's shipped IMPORT_POLL_INTERVAL_SECONDS (0.5 s) applies.

How it counts (in this process only; the app is not changed):
- every HTTP round trip, at `http.client.HTTPConnection` (what requests, urllib3, azure-core and the
  registry client all end in): host, port, method, path, If-Match, status and the calling thread. The
  port says what it is (Azurite table or queue, the stand-in's ARM, the identity endpoint, a registry).
  The benchmark's own calls (enqueueing, checking) run on the main thread and are left out;
- ARM requests also as the stand-in recorded them (`StandinControl.requests()`), as a cross-check;
- CPU, per thread (Linux `/proc/self/task/<tid>/schedstat`: nanoseconds on a CPU), over the run: the
  Python worker's own is its invocation threads' (the runner's `worker<n>_<i>` pool, where the function
  runs); the runner's queue work (its listener polling and receiving, the per-queue threads that decode,
  delete and log each message, the lease-renewal threads) is in Azure the Functions host's (.NET), so it is
  reported apart. Threads that ended during the run (lease renewals) are the process's CPU less the live
  threads', and counted as the runner's. The process's CPU less the runner's idle CPU (measured with the
  queue empty just before) is reported as well, as earlier runs reported it;
- a second, smaller pass under cProfile with a per-thread CPU clock (`time.thread_time`) in every thread,
  for where the CPU goes: by purpose and by layer. Profiling slows everything down, so its shares are
  applied to the unprofiled CPU per request.

`python -m benchmarks cost` runs COST_REQUESTS requests (default 200) and a profile of COST_PROFILE_REQUESTS
(default 50); `run_cost(...)` is the same measurement for a test.
"""

from __future__ import annotations

import contextlib
import cProfile
import http.client
import json
import os
import pstats
import textwrap
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dev import layout

TITLE = "Cost per import"
DEFAULT_REQUESTS = 200
DEFAULT_PROFILE_REQUESTS = 50
SOURCE = "docker.io/library/nginx:1.27"
SOURCE_DIGEST = "sha256:" + "c0" * 32
IDLE_SECONDS = 3.0
MAIN = "MainThread"  # the benchmark's own: enqueueing and checking, left out of every CPU figure
GOALS = {"table": 3, "arm": 2, "cpu_ms": 8.0, "rps": 100.0}


# --- counting round trips ------------------------------------------------------------------------------

@dataclass
class Call:
    thread: str
    host: str
    port: int
    method: str
    path: str
    began: float
    if_match: bool = False
    status: int | None = None
    ended: float | None = None

    @property
    def kind(self) -> str:
        return kind_of(self.port, self.path)

    @property
    def ms(self) -> float:
        return 1000 * ((self.ended or self.began) - self.began)


def kind_of(port: int, path: str) -> str:
    if port == layout.AZURITE_TABLE_PORT:
        return "table"
    if port == layout.AZURITE_QUEUE_PORT:
        return "queue"
    if port == layout.AZURITE_BLOB_PORT:
        return "blob"
    if port == layout.IDENTITY_PORT:
        return "identity"
    if port == layout.AZURE_STANDIN_PORT:
        return "control" if path.startswith("/_control") else "aad" if path.startswith("/aad") else "arm"
    return "registry"


class HttpLog:
    """Records every HTTP round trip this process makes while installed (all threads)."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self._current = threading.local()
        self._saved: dict[str, Any] = {}

    def install(self) -> None:
        log, conn = self, http.client.HTTPConnection
        self._saved = {name: getattr(conn, name) for name in ("putrequest", "putheader", "getresponse")}
        put_request, put_header, get_response = (self._saved[n] for n in ("putrequest", "putheader", "getresponse"))

        def putrequest(self: http.client.HTTPConnection, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            path = url.split("://", 1)[-1].split("/", 1)[-1] if "://" in url else url.lstrip("/")
            call = Call(threading.current_thread().name, self.host, int(self.port or 0), method,
                        "/" + path, time.monotonic())
            log._current.call = call
            with log._lock:
                log.calls.append(call)
            return put_request(self, method, url, *args, **kwargs)

        def putheader(self: http.client.HTTPConnection, header: Any, *values: Any) -> Any:
            name = header.decode() if isinstance(header, bytes) else str(header)
            call = getattr(log._current, "call", None)
            if call is not None and name.lower() == "if-match":
                call.if_match = True
            return put_header(self, header, *values)

        def getresponse(self: http.client.HTTPConnection, *args: Any, **kwargs: Any) -> Any:
            response = get_response(self, *args, **kwargs)
            call = getattr(log._current, "call", None)
            if call is not None:
                call.status, call.ended = response.status, time.monotonic()
            return response

        conn.putrequest = putrequest  # type: ignore[method-assign]
        conn.putheader = putheader  # type: ignore[method-assign]
        conn.getresponse = getresponse  # type: ignore[method-assign]

    def uninstall(self) -> None:
        for name, original in self._saved.items():
            setattr(http.client.HTTPConnection, name, original)

    def mark(self) -> int:
        with self._lock:
            return len(self.calls)

    def since(self, mark: int) -> list[Call]:
        with self._lock:
            return [c for c in self.calls[mark:] if c.thread != "MainThread"]


# --- profiling every thread ----------------------------------------------------------------------------

class ThreadProfiles:
    """cProfile in every thread started while active (cProfile profiles only the thread that enables it),
    timed with that thread's own CPU clock."""

    def __init__(self) -> None:
        self.profiles: list[tuple[threading.Thread, cProfile.Profile]] = []
        self._lock = threading.Lock()

    def _start(self, *_: Any) -> None:
        profile = cProfile.Profile(time.thread_time)
        with self._lock:
            self.profiles.append((threading.current_thread(), profile))
        profile.enable()  # replaces this hook in this thread

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        threading.setprofile(self._start)
        try:
            yield
        finally:
            threading.setprofile(None)

    def stats(self) -> pstats.Stats | None:
        """Of the threads that have ended: reading a live thread's profile from another thread would close its
        open calls with the reading thread's clock."""
        stats = None
        for thread, profile in self.profiles:
            if thread.is_alive():
                continue
            with contextlib.suppress(TypeError, ValueError):  # a thread that never ran profiled code
                stats = pstats.Stats(profile) if stats is None else (stats.add(profile) or stats)
        return stats


# Where the CPU goes, by purpose: inclusive CPU of the entry points that do one thing (they do not nest in
# each other, except logging, which the others may call: said so in the doc).
PURPOSES: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("request parse and validation", (("shared/core/request.py", "decode_body"),
                                      ("shared/core/request.py", "parse_decoded"),
                                      ("shared/core/request.py", "validate_document"))),
    ("status table (azure-data-tables, incl. ETag claims)", (("_table_client.py", "get_entity"),
                                                             ("_table_client.py", "create_entity"),
                                                             ("_table_client.py", "update_entity"),
                                                             ("_table_client.py", "upsert_entity"),
                                                             ("_table_client.py", "delete_entity"),
                                                             ("_table_client.py", "submit_transaction"))),
    ("ARM POST importImage (token cached)", (("shared/azure/arm.py", "start_import"),)),
    ("ARM operation polls", (("shared/azure/arm.py", "operation_status"),)),
    ("ARM registry look-ups", (("shared/azure/arm.py", "registry_by_login_server"),)),
    ("registry reads (digest, platforms of the result)", (("shared/registry/client.py", "head_manifest"),
                                                          ("shared/registry/client.py", "platforms"))),
    ("queue: the runner's receive, delete, lease (the Functions host's work in Azure)",
     (("dev/runner/queues.py", "_run"), ("dev/runner/queues.py", "_delete"), ("dev/runner/queues.py", "_release"))),
    ("logging and telemetry (also inside the above)", (("logging/__init__.py", "_log"),
                                                       ("shared/azure/telemetry.py", "record_import"))),
    ("requests' environment merge on every HTTP call (proxies, CA bundle; from settings read once since cut 3; "
     "also inside the above)",
     (("requests/sessions.py", "merge_environment_settings"), ("requests/utils.py", "resolve_proxies"))),
)

# By layer: exclusive CPU (tottime), by the file a function is in; adds up to the whole.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("os.environ reads and the Mapping ABCs' methods (before cut 3 mostly requests' proxy look-up on every call: "
     "urllib.request.getproxies_environment)",
     ("<frozen os>", "<frozen _collections_abc>", "urllib/request.py")),
    ("the app (shared/, function_app.py)", ("/shared/", "function_app.py")),
    ("the local runner (dev/runner)", ("/dev/runner/",)),
    ("Azure SDK pipeline (azure-core, -data-tables, -storage-queue, -mgmt, -identity, msrest/isodate)",
     ("/azure/", "/msrest", "/isodate/", "/msal")),
    ("HTTP and TLS (requests, urllib3, http.client, ssl, socket)",
     ("/requests/", "/urllib3/", "http/client.py", "ssl.py", "socket.py", "<method 'read' of '_ssl",
      "<method 'write' of '_ssl", "<method 'do_handshake'", "<method 'recv", "<method 'send")),
    ("JSON schema, JSON, regexes", ("/jsonschema", "/referencing/", "json/", "/re/", "_sre", "<built-in method _json")),
    ("logging", ("logging/",)),
    ("threads, queues, locks (the runner's and the SDK's waiting)", ("threading.py", "concurrent/", "queue.py",
                                                                      "<method 'acquire'", "<method 'wait'")),
)


def _purposes(stats: pstats.Stats) -> dict[str, float]:
    found: Counter[str] = Counter()
    for (filename, _, name), (_, _, _, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        for purpose, entries in PURPOSES:
            if any(filename.endswith(suffix) and name == function for suffix, function in entries):
                found[purpose] += cumulative
    return dict(found)


OTHER = "built-ins called from all of the above (isinstance, str and bytes methods, ...)"


def _layers(stats: pstats.Stats) -> tuple[dict[str, float], float]:
    found: Counter[str] = Counter()
    total = 0.0
    for (filename, _, name), (_, _, own, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        total += own
        where = f"{filename}:{name}" if filename != "~" else name
        layer = next((label for label, marks in LAYERS if any(m in where for m in marks)), OTHER)
        found[layer] += own
    return dict(found), total


# --- CPU per thread ------------------------------------------------------------------------------------

def thread_cpu() -> dict[int, tuple[str, float]]:
    """Native thread id -> (its name, CPU seconds so far) for every live thread of this process (Linux
    schedstat: time on a CPU, in ns; empty elsewhere)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    found = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/schedstat") as stat:
                    ns = int(stat.read().split()[0])
            except (OSError, ValueError, IndexError):
                continue  # the thread ended meanwhile
            found[int(tid)] = (names.get(int(tid), "?"), ns / 1e9)
    return found


def thread_role(name: str, queue: str) -> str:
    """Whose work a thread of the runner's process does: the Python worker's invocation threads, the runner's
    queue work (the Functions host's in Azure), the benchmark's own main thread, or other."""
    if name.startswith("worker"):  # dev/runner/invoker.py: `worker<n>` pool and `worker<n>-loop`
        return "worker"
    if name.startswith(("listen-", "lease-")) or name.startswith(queue.lower() + "_"):  # dev/runner/queues.py
        return "runner"
    return "main" if name == MAIN else "other"


def cpu_by_role(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], process_seconds: float,
                queue: str) -> dict[str, float]:
    """CPU seconds between two `thread_cpu` readings by `thread_role`; "ended" is the process's CPU less the
    live threads' (threads that ended in between: the runner's lease renewals)."""
    found: Counter[str] = Counter()
    for tid, (name, seconds) in after.items():
        earlier = before.get(tid)
        used = seconds - earlier[1] if earlier and earlier[0] == name else seconds  # a reused id: a new thread
        found[thread_role(name, queue)] += used
    found["ended"] = max(0.0, process_seconds - sum(found.values()))
    return dict(found)


# --- the servers' CPU -----------------------------------------------------------------------------------

SERVERS = ("azurite", "azure-standin")


def server_cpu() -> dict[str, float]:
    """CPU seconds used so far by the stack's Azurite and ARM stand-in processes (from /proc; empty when the
    stack was not started by dev.stack in this state folder)."""
    from dev import stack

    found = {}
    for service in stack.select(list(SERVERS)):
        pid = stack._recorded_pid(service)
        if pid is None:
            continue
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[service.name] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return found


# --- one run -------------------------------------------------------------------------------------------

@dataclass
class Run:
    requests: int
    succeeded: int = 0
    states: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    idle_cpu_per_second: float = 0.0
    calls: list[Call] = field(default_factory=list)
    arm_recorded: list[dict[str, Any]] = field(default_factory=list)
    servers: dict[str, float] = field(default_factory=dict)
    threads: dict[str, float] = field(default_factory=dict)  # CPU seconds by thread_role, "ended" apart
    load: float = 0.0
    stats: pstats.Stats | None = None

    def count(self, kind: str) -> int:
        return sum(1 for c in self.calls if c.kind == kind)

    def per_import(self, kind: str) -> float:
        return self.count(kind) / max(1, self.succeeded)

    @property
    def worker_cpu_seconds(self) -> float:
        return max(0.0, self.cpu_seconds - self.idle_cpu_per_second * self.seconds)

    @property
    def cpu_ms_per_request(self) -> float:
        """The process's CPU less the runner's idle CPU, per request (what earlier runs reported)."""
        return 1000 * self.worker_cpu_seconds / max(1, self.requests)

    @property
    def threads_measured(self) -> bool:
        return bool(self.threads)

    @property
    def worker_ms_per_request(self) -> float:
        """The Python worker's own CPU per request: its invocation threads'."""
        return 1000 * self.threads.get("worker", 0.0) / max(1, self.requests)

    @property
    def runner_ms_per_request(self) -> float:
        """The runner's queue work per request (the Functions host's in Azure), its idle polling included."""
        return 1000 * (self.threads.get("runner", 0.0) + self.threads.get("ended", 0.0)) / max(1, self.requests)

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def _messages(run_id: str, count: int) -> list[str]:
    return [json.dumps({"id": f"cost-{run_id}-{i}", "source": SOURCE, "targetTags": [f"cost:{run_id}-{i}"]})
            for i in range(count)]


def _measure(runner: Any, queue: Any, store: Any, control: Any, log: HttpLog, count: int,
             timeout: float = 600) -> Run:
    """`count` requests made visible at one moment (enqueued invisible, all due at the same time), so the
    run measures the worker, not the enqueueing."""
    run = Run(count, load=os.getloadavg()[0])
    run_id = uuid.uuid4().hex[:8]
    # the runner's idle CPU with the queue empty, over a few seconds
    idle_began, idle_cpu = time.monotonic(), time.process_time()
    time.sleep(IDLE_SECONDS)
    run.idle_cpu_per_second = (time.process_time() - idle_cpu) / (time.monotonic() - idle_began)
    texts = _messages(run_id, count)
    delay = 2 + count // 50  # seconds: Azurite takes a few ms per message; all must be in before they show
    sent_at = time.monotonic()
    for text in texts:
        queue.send_message(text, visibility_timeout=delay)
    if time.monotonic() - sent_at > delay:
        raise RuntimeError(f"enqueueing {count} requests took longer than their {delay} s of invisibility")
    control.clear_requests()
    time.sleep(max(0.0, sent_at + delay - time.monotonic()))
    mark, began, cpu, servers, threads = log.mark(), time.monotonic(), time.process_time(), server_cpu(), thread_cpu()
    deadline = began + timeout
    while True:  # the runner's idle check, plus every row terminal (a message may be between invisible spells)
        runner.wait_idle(timeout=max(1.0, deadline - time.monotonic()))
        ended, ended_cpu = time.monotonic(), time.process_time()  # before the check's own reading and parsing
        ended_threads = thread_cpu()
        records = {r.id: r for r in store.list()}
        mine = [records.get(f"cost-{run_id}-{i}") for i in range(count)]
        if all(r is not None and r.state.terminal for r in mine) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    run.seconds, run.cpu_seconds = ended - began, ended_cpu - cpu
    if threads and ended_threads:
        run.threads = cpu_by_role(threads, ended_threads, run.cpu_seconds, queue.queue_name)
    run.servers = {name: used - servers[name] for name, used in server_cpu().items() if name in servers}
    run.calls = log.since(mark)
    run.arm_recorded = control.requests("arm")
    for record in mine:
        run.states[str(record.state) if record else "lost"] += 1
    run.succeeded = run.states.get("succeeded", 0)
    return run


def one_import(runner: Any, queue: Any, store: Any, log: HttpLog) -> list[Call]:
    """Every round trip of one import alone, in order (the runner's empty polls before and after left out)."""
    request_id = f"cost-one-{uuid.uuid4().hex[:8]}"
    text = json.dumps({"id": request_id, "source": SOURCE, "targetTags": [f"cost:{request_id}"]})
    runner.wait_idle(timeout=30)
    mark = log.mark()
    queue.send_message(text)
    while not ((record := store.get(request_id)) and record.state.terminal):
        time.sleep(0.02)
    runner.wait_idle(timeout=30)
    calls = log.since(mark)
    first = next((i for i, c in enumerate(calls) if c.kind != "queue"), 0)
    # the receive that delivered it: the last queue GET before the invocation's first call
    receive = max((i for i, c in enumerate(calls[:first]) if c.kind == "queue" and c.method == "GET"), default=first)
    last = max((i for i, c in enumerate(calls) if c.kind != "queue" or c.method == "DELETE"), default=len(calls) - 1)
    return calls[receive:last + 1]


def run_cost(app_env: dict[str, str], control: Any, count: int, profile_count: int = 0) -> tuple[Run, Run | None,
                                                                                                   list[Call]]:
    """(the counted run, the profiled run or None, one import's round trips). The stack must be up."""
    from azure.storage.queue import QueueClient

    from dev.app_settings import create_app_queues
    from dev.runner import Runner
    from shared import app_context

    control.update_settings(data_plane="memory", retry_after=10)
    control.put_image(SOURCE, SOURCE_DIGEST)
    create_app_queues(app_env["IMPORT_QUEUE"])
    queue = QueueClient.from_connection_string(layout.AZURITE_CONNECTION_STRING, app_env["IMPORT_QUEUE"])
    log = HttpLog()
    log.install()
    try:
        app_context.reset()
        with Runner("function_app", env=app_env, http_port=None) as runner:
            store = app_context.status_store(app_context.app_settings(app_env))
            # warm-up: the SDK imports, the token, the connections (a long-lived worker has them)
            _measure(runner, queue, store, control, log, min(count, 10))
            sequence = one_import(runner, queue, store, log)
            counted = _measure(runner, queue, store, control, log, count)
        profiled = None
        if profile_count:  # the same app objects (warm token and connections), a new runner: new threads
            profiles = ThreadProfiles()
            with profiles.active(), Runner("function_app", env=app_env, http_port=None) as runner:
                profiled = _measure(runner, queue, store, control, log, profile_count)
            profiled.stats = profiles.stats()  # the runner has stopped: its threads have ended
    finally:
        log.uninstall()
        app_context.reset()
    return counted, profiled, sequence


# --- the report ----------------------------------------------------------------------------------------

def _goal_row(what: str, measured: float, goal: float, unit: str, *, at_most: bool = True, digits: int = 2) -> str:
    reached = measured <= goal if at_most else measured >= goal
    sign = "≤" if at_most else "≥"
    verdict = "reached" if reached else "**not yet reached**"
    return f"| {what} | {measured:.{digits}f} {unit} | {sign} {goal:g} {unit} | {verdict} |"


def _purpose_of(call: Call) -> str:
    kind, method = call.kind, call.method
    if kind == "queue":
        return {"GET": "runner: receive the message (batch)", "DELETE": "runner: delete the message (done)",
                "PUT": "runner: renew the message's lease"}.get(method, "queue")
    if kind == "table":
        if method == "GET":
            return "status row: read"
        if method == "POST":
            return "status row: create (insert)"
        return f"status row: write{' with If-Match (ETag claim)' if call.if_match else ' (upsert)'}"
    if kind == "arm":
        if method == "POST" and call.path.endswith("/importImage"):
            return "ARM: POST importImage"
        if (method == "GET" and "/operationResults/" in call.path) or "/operationStatuses/" in call.path:
            return "ARM: look at the operation"
        return f"ARM: {method} {call.path.split('?')[0].rsplit('/', 1)[-1]}"
    if kind == "registry":
        where = call.path.split("?")[0].split("/v2/", 1)[-1]
        return f"target registry: {method} {where} (what landed: digest, platforms)"
    if kind in ("identity", "aad"):
        return "managed identity: token"
    return kind


def _per(counts: Counter[str], n: int) -> str:
    return ", ".join(f"{what} {k / max(1, n):.2f}" for what, k in sorted(counts.items()))


def markdown(counted: Run, profiled: Run | None, sequence: list[Call]) -> str:
    n = counted.succeeded
    kinds = Counter(c.kind for c in counted.calls)
    other_states = ", ".join(f"{s}: {k}" for s, k in sorted(counted.states.items()) if s != "succeeded") or "none"
    arm_methods = Counter(f"{r['method']}" for r in counted.arm_recorded)
    table_methods = Counter(f"{c.method}{' If-Match' if c.if_match else ''}" for c in counted.calls
                            if c.kind == "table")
    queue_methods = Counter(c.method for c in counted.calls if c.kind == "queue")
    lines = [
        f"{counted.requests} requests (`COST_REQUESTS`), instant imports (memory data plane; the stand-in answers "
        "`Retry-After: 10` as ACR does), enqueued invisible and made visible at one moment, through the local "
        "runner in one process at host.json's concurrency (batchSize 16 + newBatchThreshold 8, "
        "PYTHON_THREADPOOL_THREAD_COUNT 32) with the shipped IMPORT_POLL_INTERVAL_SECONDS (0.5 s). "
        "Round trips counted at `http.client` in the benchmark's process (every thread but its own main "
        "thread); ARM requests cross-checked with the stand-in's record.",
        "",
        f"Succeeded: {n} of {counted.requests} (other states: {other_states}); wall time "
        f"{counted.seconds:.2f} s; load average when the run began: {counted.load:.1f} (2 cores: "
        "other work on the machine shows in CPU and requests/s, not in the counts).",
        "",
        "| per succeeded import | measured | goal (issue 15) | |",
        "|---|---|---|---|",
        _goal_row("status-table calls", counted.per_import("table"), GOALS["table"], "calls", digits=3),
        _goal_row("ARM requests (stand-in's record)", len(counted.arm_recorded) / max(1, n), GOALS["arm"],
                  "requests", digits=3),
        _goal_row("worker CPU per request (the Python worker's own: its invocation threads)" if counted.threads
                  else "worker CPU per request (the runner's included, its idle CPU subtracted)",
                  counted.worker_ms_per_request if counted.threads else counted.cpu_ms_per_request,
                  GOALS["cpu_ms"], "ms", digits=1),
        _goal_row("throughput", counted.throughput, GOALS["rps"], "req/s", at_most=False, digits=1),
        "",
        "| other round trips per succeeded import | |",
        "|---|---|",
        f"| ARM requests as counted in the worker | {kinds['arm'] / max(1, n):.2f} |",
        f"| queue calls (the runner: receive, delete, lease renewals; empty polls included) | "
        f"{kinds['queue'] / max(1, n):.2f} |",
        f"| registry requests (reading what landed in the target) | {kinds['registry'] / max(1, n):.2f} |",
        f"| identity token requests | {(kinds['identity'] + kinds['aad']) / max(1, n):.2f} |",
        "",
        "- Referrers (issue 16): the memory data plane keeps a catalog, not manifests, so reading the imported "
        "image back finds nothing and its referrers are not looked for (the row says so); what they cost per "
        "import is counted in [requests.md](requests.md#referrers-signatures-sboms-and-attestations-come-along) "
        "and in the refresh benchmark above.",
        f"- Status-table calls by method: {_per(table_methods, n)}.",
        f"- ARM requests by method (stand-in): {_per(arm_methods, n)}.",
        f"- Queue calls by method: {_per(queue_methods, n)}.",
        f"- CPU: {counted.cpu_seconds:.2f} s of process CPU over the run; the runner idles at "
        f"{1000 * counted.idle_cpu_per_second:.1f} ms of CPU per second; the process's CPU less that idle CPU: "
        f"{counted.cpu_ms_per_request:.1f} ms per request (the figure earlier runs reported as the worker's).",
    ]
    if counted.threads:
        other = sum(v for k, v in counted.threads.items() if k in ("main", "other"))
        ended = 1000 * counted.threads.get("ended", 0.0) / max(1, counted.requests)
        lines.append(
            f"- CPU by thread (schedstat), per request: the Python worker's invocation threads "
            f"{counted.worker_ms_per_request:.1f} ms; the runner's queue work {counted.runner_ms_per_request:.1f} ms "
            f"(listener polls and receives, per-message decode, delete and host log lines, lease renewals; in Azure "
            f"the Functions host's, not the Python worker's; of it {ended:.1f} ms in "
            f"threads that ended during the run); the benchmark's own and other threads "
            f"{1000 * other / max(1, counted.requests):.1f} ms.")
    if counted.servers:
        lines.append("- The servers on the same 2 cores, CPU per request over the same run (/proc): " + ", ".join(
            f"{name} {1000 * used / max(1, counted.requests):.1f} ms" for name, used in sorted(counted.servers.items()))
            + "; with the worker's, that is the machine's CPU per request, which bounds requests/s on 2 cores.")
    if sequence:
        t0 = sequence[0].began
        lines += ["", "### One import, round trip by round trip", "",
                  "One request alone through the warm runner (token cached, connections open); times are "
                  "offsets from the receive and each call's own duration (orientation only).", "",
                  "| # | at (ms) | took (ms) | call | status | purpose |", "|---|---|---|---|---|---|"]
        received = False
        for i, call in enumerate(sequence, 1):
            polled = received and call.kind == "queue" and call.method == "GET"
            received = received or (call.kind == "queue" and call.method == "GET")
            path = call.path.split("?")[0]
            if len(path) > 60:
                path = "…" + path[-59:]
            purpose = "runner: poll the queue again" if polled else _purpose_of(call)
            lines.append(f"| {i} | {1000 * (call.began - t0):.0f} | {call.ms:.1f} | {call.kind} {call.method} "
                         f"`{path}` | {call.status} | {purpose} |")
    if profiled is not None and profiled.stats is not None:
        purposes = _purposes(profiled.stats)
        layers, total = _layers(profiled.stats)
        scale = counted.cpu_ms_per_request / max(1e-9, total / max(1, profiled.requests) * 1000)
        per_request = {k: 1000 * v / max(1, profiled.requests) for k, v in purposes.items()}
        lines += ["", "### Where the CPU goes", "",
                  f"cProfile in every thread with each thread's CPU clock, over {profiled.requests} requests "
                  f"(a separate run: profiling slows the code about {1 / max(scale, 1e-9):.1f}x, so shares are the "
                  "claim, and the ms column scales them to the unprofiled process CPU per request above, the "
                  "runner's included). cProfile "
                  "costs the same per Python call, so code made of many small calls (walking os.environ, "
                  "the SDK's policies) shows larger than it is: check a cut with a what-if run.", "",
                  "By purpose (inclusive CPU of the calls that do it; logging is also inside the others):", "",
                  "| purpose | share of CPU | ms per request |", "|---|---|---|"]
        for purpose, _ in PURPOSES:
            value = per_request.get(purpose, 0.0)
            share = value / max(1e-9, 1000 * total / max(1, profiled.requests))
            lines.append(f"| {purpose} | {100 * share:.0f}% | {value * scale:.1f} |")
        lines += ["", "By layer (exclusive CPU, adds up to the whole):", "",
                  "| layer | share of CPU | ms per request |", "|---|---|---|"]
        for layer, value in sorted(layers.items(), key=lambda item: -item[1]):
            share = value / max(1e-9, total)
            lines.append(f"| {layer} | {100 * share:.0f}% | {share * counted.cpu_ms_per_request:.1f} |")
        top = sorted(((own, f"{os.path.basename(f)}:{name}" if f != "~" else name)
                      for (f, _, name), (_, _, own, _, _) in profiled.stats.stats.items()),  # type: ignore[attr-defined]
                     reverse=True)[:12]
        lines += ["", "Most exclusive CPU: " + ", ".join(f"`{name}` {100 * own / max(1e-9, total):.0f}%"
                                                          for own, name in top) + "."]
    return "\n".join(_wrapped(lines)) + "\n"


def _wrapped(lines: list[str], width: int = 110) -> list[str]:
    """Prose wrapped as the rest of the doc is; table rows and headings as they are."""
    out = []
    for line in lines:
        if len(line) <= width or line.startswith(("|", "#", "Most exclusive")):
            out.append(line)
        else:
            indent = "  " if line.startswith("- ") else ""
            out.extend(textwrap.wrap(line, width, subsequent_indent=indent, break_on_hyphens=False,
                                     break_long_words=False))
    return out


def run() -> str:
    from dev import seed, stack
    from dev.app_settings import local_app_settings
    from dev.azure_standin.control import StandinControl

    count = int(os.environ.get("COST_REQUESTS", DEFAULT_REQUESTS))
    profile_count = int(os.environ.get("COST_PROFILE_REQUESTS", DEFAULT_PROFILE_REQUESTS))
    started = stack.up()
    try:
        seed.seed_world()
        control = StandinControl()
        control.reset()
        suffix = uuid.uuid4().hex[:6]
        settings = local_app_settings(queue=f"cost-{suffix}", table=f"cost{suffix}")
        settings.pop("IMPORT_POLL_INTERVAL_SECONDS")  # measure the shipped default
        saved = dict(os.environ)
        os.environ.update(settings)
        try:
            counted, profiled, sequence = run_cost(settings, control, count, profile_count)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        control.reset()
    finally:
        stack.down(started)
    return markdown(counted, profiled, sequence)

