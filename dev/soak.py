"""Load with faults through the queue and the local runner: `python -m dev.soak [COUNT]` (`make soak`).

Requests go on the queue; the runner drives `function_app` with host.json's concurrency; the ACR stand-in
copies between real registries with import times spread from 0.1 s to a few seconds, and answers with every
scripted fault of issue 8 along the way. Then: every request has exactly one terminal state, the target
holds every image that succeeded, importImage was called no more often than retries explain. The short profile
runs in the test suite (tests/reliability/); the long one writes docs/reliability.md.
"""

from __future__ import annotations

import base64
import json
import random
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

from dev import layout, oci, seed

TITLE = "Reliability: load with faults"
DOC = layout.REPO_ROOT / "docs" / "reliability.md"


@dataclass
class LoadReport:
    requests: int
    faults: Counter = field(default_factory=Counter)
    states: Counter = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)
    missing_in_target: list[str] = field(default_factory=list)
    codes: Counter = field(default_factory=Counter)
    import_posts: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def markdown(self) -> str:
        rows = "\n".join(f"| {kind} | {n} |" for kind, n in sorted(self.faults.items()))
        states = ", ".join(f"{state}: {n}" for state, n in sorted(self.states.items()))
        states += "".join(f"; {code}: {n}" for code, n in sorted(self.codes.items()))
        return (f"- requests: {self.requests}\n- terminal states: {states}\n- lost: {len(self.lost)}\n"
                f"- succeeded but missing in the target: {len(self.missing_in_target)}\n"
                f"- importImage POSTs: {self.import_posts} (at-least-once plus retries of refused POSTs)\n"
                f"- throughput: {self.throughput:.1f} requests/s over {self.seconds:.0f} s\n"
                f"- worker CPU per request: {1000 * self.cpu_seconds / max(1, self.requests):.0f} ms "
                "(the runner runs in this process: includes the enqueueing and checking)\n\n"
                f"| fault injected | times |\n|---|---|\n{rows}\n\n"
                "Expected failures: `ImportTimedOut` are the operations scripted never to end (they fail at "
                "IMPORT_DEADLINE_SECONDS); a transient code (`InvalidParameters`: Error copying blobs, upstream "
                "toomanyrequests) marks a request that met a scripted fault on every one of its IMPORT_MAX_ATTEMPTS "
                "attempts (faults are consumed in order, so early requests meet bursts) and gave up with that "
                "reason, as designed. Anything else failing, or any request lost, is a defect.\n")


def script_faults(control, count: int, rng: random.Random) -> Counter:
    """Scripted per call, consumed in order: which request meets which fault is up to the scheduling."""
    faults: Counter = Counter()
    share = max(1, count // 20)
    imports = [{"status": 429, "retry_after": 1}] * share + [{"status": 500}] * share
    rng.shuffle(imports)
    control.add_faults("import", *imports)
    faults["ARM 429 with Retry-After on importImage"] += share
    faults["ARM 500 on importImage"] += share
    operations = [{"delay": round(rng.uniform(0.1, 3.0), 2)} for _ in range(count)]
    for index in rng.sample(range(count), min(count, 3 * share)):
        kind = index % 3
        operations[index] = [{"fail": "copy_blobs"}, {"fail": {"code": "InvalidParameters", "message":
                                                              "toomanyrequests: upstream pull rate limit"}},
                             {"hang": True}][kind]
    control.add_faults("operation", *operations)
    faults["operation delay 0.1-3 s"] += sum(1 for o in operations if "delay" in o)
    faults["Error copying blobs"] += sum(1 for o in operations if o.get("fail") == "copy_blobs")
    faults["upstream 429 (toomanyrequests) in the copy"] += sum(1 for o in operations if isinstance(o.get("fail"),
                                                                                                     dict))
    faults["operation that never ends"] += sum(1 for o in operations if o.get("hang"))
    control.authorization_outage(2.0)
    faults["AuthorizationFailed for 2 s after deployment"] += 1
    return faults


SETTINGS = {"IMPORT_RETRY_BASE_SECONDS": "0.5", "IMPORT_RETRY_MAX_SECONDS": "2", "IMPORT_WAIT_SECONDS": "1",
            "IMPORT_DEADLINE_SECONDS": "8", "IMPORT_MAX_ATTEMPTS": "8"}


def run_load(app_env: dict[str, str], control, count: int, *, seed_value: int = 8, timeout: float = 600) -> LoadReport:
    from azure.storage.queue import QueueClient

    from dev.app_settings import create_app_queues
    from dev.runner import Runner
    from shared import app_context
    from shared.azure.storage import table_service

    rng = random.Random(seed_value)
    report = LoadReport(count, script_faults(control, count, rng))
    queue = QueueClient.from_connection_string(layout.AZURITE_CONNECTION_STRING, app_env["IMPORT_QUEUE"])
    create_app_queues(app_env["IMPORT_QUEUE"])
    ids = {}
    run = uuid.uuid4().hex[:6]
    began, cpu = time.monotonic(), time.process_time()
    app_context.reset()
    with Runner("function_app", env={**app_env, **SETTINGS}, http_port=None) as runner:
        for index in range(count):
            request_id = f"load-{run}-{index}"
            ids[request_id] = f"load-{run}-{index}"
            text = json.dumps({"id": request_id, "source": "nginx:1.27", "targetTags": [f"load:{ids[request_id]}"]})
            queue.send_message(base64.b64encode(text.encode()).decode() if index % 2 else text)
        runner.wait_idle(timeout=timeout)
    report.seconds, report.cpu_seconds = time.monotonic() - began, time.process_time() - cpu
    app_context.reset()
    store = app_context.status_store(app_context.app_settings(app_env), table_service(app_env))  # os.environ restored
    records = {r.id: r for r in store.list()}
    admin = seed.admin_client(layout.TARGET_ACR.login_server)
    for request_id, tag in ids.items():
        record = records.get(request_id)
        if record is None or not record.state.terminal:
            report.lost.append(request_id)
            continue
        report.states[str(record.state)] += 1
        if record.code:
            report.codes[f"{record.state}: {record.code}"] += 1
        if str(record.state) == "succeeded":
            try:
                oci.inspect_image(admin, "load", tag)
            except Exception:
                report.missing_in_target.append(request_id)
    report.import_posts = len([r for r in control.requests() if r["path"].endswith("/importImage")])
    return report


def main(argv: list[str]) -> int:
    from benchmarks.report import stamp
    from dev import stack
    from dev.app_settings import local_app_settings
    from dev.azure_standin.control import StandinControl

    count = int(argv[0]) if argv else 1000
    started = stack.up()
    try:
        seed.seed_world()
        control = StandinControl()
        control.reset()
        suffix = uuid.uuid4().hex[:8]
        report = run_load(local_app_settings(queue=f"soak-{suffix}", table=f"soak{suffix}"), control, count,
                          timeout=3600)
        control.reset()
    finally:
        stack.down(started)
    body = report.markdown()
    DOC.write_text(DOC.read_text().split("<!-- soak -->")[0] + f"<!-- soak -->\n## {TITLE}\n\n{stamp()}\n\n"
                   f"`python -m dev.soak {count}`\n\n{body}" if DOC.exists() else body)
    print(body)
    return 0 if not report.lost and not report.missing_in_target else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
