"""Crashes the platform can throw at us: the worker process killed in the middle of an import, and the
storage emulator restarted while requests flow. Each ends with every request in the right terminal state
and nothing lost."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid

from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient

from dev import layout, oci, seed
from dev import stack as local_stack
from shared.azure.status import StatusStore
from shared.core.outcome import State


def _runner_process(app_env: dict, **settings: str) -> subprocess.Popen:
    """The runner in a process of its own, as a host instance is: it can be killed outright."""
    env = {**os.environ, **app_env, **settings}
    return subprocess.Popen([sys.executable, "-m", "dev.runner", "--app", "function_app", "--port", "0"],
                            cwd=layout.REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _stop(process: subprocess.Popen, sig: signal.Signals = signal.SIGTERM) -> None:
    if process.poll() is None:
        os.killpg(process.pid, sig)
    process.wait(timeout=60)


def test_worker_killed_mid_import_the_message_returns_and_the_import_completes_once(app_env, control, stack):
    control.add_faults("operation", {"delay": 6})
    store = StatusStore(app_env["IMPORT_STATUS_TABLE"])
    tag = f"crash-{uuid.uuid4().hex[:6]}"
    request_id = f"crash-{uuid.uuid4().hex[:8]}"
    queue = QueueClient.from_connection_string(layout.AZURITE_CONNECTION_STRING, app_env["IMPORT_QUEUE"])
    with contextlib.suppress(ResourceExistsError):
        queue.create_queue()
    settings = {"IMPORT_WAIT_SECONDS": "60", "RUNNER_QUEUE_LEASE_SECONDS": "3"}
    first = _runner_process(app_env, **settings)
    try:
        queue.send_message(json.dumps({"id": request_id, "source": "docker.io/library/hello-world:latest",
                                       "targetTags": [f"hw:{tag}"]}))
        _wait_for(lambda: (r := store.get(request_id)) and r.operation, 60, "the import to start")
    finally:
        _stop(first, signal.SIGKILL)  # no goodbye: the message is still leased, the import still copying
    assert store.get(request_id).state is State.RUNNING

    second = _runner_process(app_env, **settings)
    try:
        record = _wait_for(lambda: (r := store.get(request_id)) and r.state.terminal and r, 90,
                           "the redelivered message to finish the import")
    finally:
        _stop(second)
    assert record.state is State.SUCCEEDED, record.reason
    posts = [r for r in control.requests() if r["path"].endswith("/importImage")]
    assert len(posts) == 1, "the redelivery must watch the running import, not start another"
    target = oci.inspect_image(seed.admin_client(layout.TARGET_ACR.login_server), "hw", tag)
    assert target.digest == stack.digest("docker.io", "library/hello-world", "latest")


def test_storage_restarted_mid_run_loses_nothing(app_env, control, runner_factory):
    runner = runner_factory(RUNNER_QUEUE_LEASE_SECONDS="5")
    store = StatusStore(app_env["IMPORT_STATUS_TABLE"])
    queue = QueueClient.from_connection_string(layout.AZURITE_CONNECTION_STRING, app_env["IMPORT_QUEUE"])

    def send(count: int) -> list[str]:
        ids = []
        for _ in range(count):
            request_id = f"restart-{uuid.uuid4().hex[:8]}"
            queue.send_message(json.dumps({"id": request_id, "source": "nginx:1.27",
                                           "targetTags": [f"restart:{request_id}"]}))
            ids.append(request_id)
        return ids

    control.add_faults("operation", *({"delay": 1.5} for _ in range(4)))
    before = send(8)
    _wait_for(lambda: any((r := store.get(i)) and r.state is State.RUNNING for i in before), 30, "work in flight")
    local_stack.down(["azurite"])
    time.sleep(2)
    local_stack.up(["azurite"])
    after = send(8)
    assert runner.wait_idle(timeout=180)
    records = {i: store.get(i) for i in before + after}
    assert all(r is not None and r.state is State.SUCCEEDED for r in records.values()), {
        i: (r.state, r.reason) if r else None for i, r in records.items()}
