"""The app never needs the host's functionTimeout: every call has a deadline, and the configured ones add up
to less than the timeout (shared/azure/deadlines.py). Also the thread pool the app asks the worker for."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dev import layout
from dev.runner.config import load_host_config
from shared.azure import deadlines
from shared.azure.config_source import READ_DEADLINE_SECONDS
from shared.registry.client import RegistryClient

REPO = Path(__file__).resolve().parents[2]
BICEP = (REPO / "infra" / "main.bicep").read_text()
SAMPLE = json.loads((REPO / "local.settings.sample.json").read_text())["Values"]
MARGIN_SECONDS = 30.0  # what a worst case must leave of the timeout: logging, the host's own bookkeeping


def template_value(name: str) -> str:
    """A setting's value as the template deploys it (a tuning default, or a literal app setting)."""
    match = re.search(rf"^\s*{name}: '([^']*)'", BICEP, re.M) or re.search(
        rf"name: '{name}', value: '([^']*)'", BICEP)
    assert match, f"{name} is not set in infra/main.bicep"
    return match.group(1)


def configured(name: str) -> float:
    """The value a deployment gets, and the sample agrees with it."""
    value = template_value(name)
    assert SAMPLE[name] == value, f"{name}: local.settings.sample.json says {SAMPLE[name]}, the template {value}"
    return float(value)


def test_the_deadline_model_uses_the_function_timeout_of_host_json():
    timeout = load_host_config(REPO).function_timeout
    assert timeout is not None and timeout.total_seconds() == deadlines.FUNCTION_TIMEOUT_SECONDS


def test_an_import_invocation_at_every_deadline_ends_before_the_function_timeout():
    worst = deadlines.import_invocation_seconds(configured("IMPORT_WAIT_SECONDS"), RegistryClient.timeout)
    assert worst < deadlines.FUNCTION_TIMEOUT_SECONDS - MARGIN_SECONDS, worst


def test_a_refresh_plans_within_its_budget_and_still_has_time_to_send():
    """Planning at its deadlines ends before the refresh stops sending, so a full-budget run enqueues."""
    plan = deadlines.refresh_plan_seconds(configured("REFRESH_TIME_BUDGET_SECONDS"), READ_DEADLINE_SECONDS)
    assert plan < deadlines.refresh_enqueue_stop_seconds(), plan
    assert deadlines.refresh_enqueue_stop_seconds() + deadlines.REFRESH_TAIL_SECONDS <= \
        deadlines.FUNCTION_TIMEOUT_SECONDS


@pytest.mark.parametrize("kind", ["queue", "table"])
def test_storage_clients_the_app_builds_carry_the_bounds(kind):
    from shared.azure.storage import service_client

    client = service_client(kind, {"AzureWebJobsStorage": layout.AZURITE_CONNECTION_STRING}, "AzureWebJobsStorage")
    pipeline = client._pipeline if kind == "queue" else client._client._client._pipeline
    config = pipeline._transport.connection_config
    assert (config.timeout, config.read_timeout) == (deadlines.CONNECT_TIMEOUT_SECONDS, deadlines.READ_TIMEOUT_SECONDS)
    [retry] = [p for p in pipeline._impl_policies if "Retry" in type(p).__name__]
    assert retry.total_retries == deadlines.STORAGE_RETRIES  # the SDK defaults: 3 (queues), 10 (tables)


def test_the_arm_client_carries_the_bounds():
    from shared.azure.arm import AcrManagement
    from shared.core.settings import load_settings

    settings = load_settings({"TARGET_REGISTRY": layout.TARGET_ACR.resource_id})
    client = AcrManagement(settings, credential=object())._client(layout.TARGET_ACR.subscription)
    config = client._client._pipeline._transport.connection_config
    assert (config.timeout, config.read_timeout) == (deadlines.CONNECT_TIMEOUT_SECONDS,
                                                    deadlines.ARM_READ_TIMEOUT_SECONDS)


class _MissingInTarget:
    """Every source tag exists, no target has it: every tracked tag becomes an import to send."""

    def head_manifest(self, host, repository, reference, auth=None):
        from shared.registry.client import ManifestHead

        if host.endswith(".azurecr.io"):
            return None
        return ManifestHead("sha256:" + "a" * 64, "application/vnd.oci.image.index.v1+json", 1)

    def list_tags(self, host, repository, auth=None):
        return []

    def rate_limit(self, host):
        return None


class _Queue:
    def __init__(self) -> None:
        self.sent: list = []

    def enqueue(self, document, **_):
        self.sent.append(document)
        return "id"


def test_a_refresh_near_the_function_timeout_stops_sending(monkeypatch):
    """Found imports past the stop time are reported (and found again next run), never sent late."""
    from shared.core.settings import load_settings
    from shared.refresh.run import run_refresh
    from shared.registry.client import IdentityAuth

    monkeypatch.setattr(deadlines, "FUNCTION_TIMEOUT_SECONDS", deadlines.REFRESH_TAIL_SECONDS)  # stop at once
    settings = load_settings({"TARGET_REGISTRY": layout.TARGET_ACR.resource_id})
    queue = _Queue()
    images = [{"source": "nginx", "tags": ["1.25", "1.26", "1.27"]}]
    result = run_refresh(settings, _MissingInTarget(), IdentityAuth(None), queues=queue, status=object(),
                         config_text=json.dumps({"images": images}))
    assert queue.sent == [] and result.summary.enqueued == 0
    late = [p for p in result.summary.problems if "near its function timeout" in p]
    assert len(late) == 3


def test_the_app_sets_its_thread_pool_for_its_queue_concurrency():
    """Unset, the worker's pool size depends on its version; the app says what it needs, everywhere."""
    from dev.app_settings import local_app_settings

    wanted = int(template_value("PYTHON_THREADPOOL_THREAD_COUNT"))
    assert SAMPLE["PYTHON_THREADPOOL_THREAD_COUNT"] == str(wanted)
    assert local_app_settings()["PYTHON_THREADPOOL_THREAD_COUNT"] == str(wanted)  # the local stack and tests
    queues = load_host_config(REPO).queues
    assert wanted >= queues.batch_size + queues.new_batch_threshold + 4  # room beside a full batch


def test_the_referrers_of_an_import_end_in_time_for_the_invocation_to_record_its_end():
    """Referrers are optional work after the image is in: each of their calls ends by `referrers_deadline`, which
    leaves the invocation's last writes and the margin inside the function timeout."""
    end = deadlines.referrers_deadline(0.0) + deadlines.FINISH_STORAGE_CALLS * deadlines.STORAGE_CALL_SECONDS
    assert end <= deadlines.FUNCTION_TIMEOUT_SECONDS - MARGIN_SECONDS
