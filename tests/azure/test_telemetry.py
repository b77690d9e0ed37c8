"""Telemetry as an operator sees it: with it on, a span per import and the metrics, read back from
in-memory exporters after real imports through the stack; with it off, the JSON log line only and no
OpenTelemetry at all."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from dev import layout
from shared.azure import telemetry
from tests.helpers import deliver

REPO = Path(__file__).resolve().parents[2]
A = telemetry.ATTRIBUTE_PREFIX


class Telemetry:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def import_spans(self):
        return [s for s in self.spans.get_finished_spans() if s.name == "import"]

    def points(self, metric: str) -> list:
        data = self.reader.get_metrics_data()
        return [point for resource in (data.resource_metrics if data else []) for scope in resource.scope_metrics
                for m in scope.metrics if m.name == metric for point in m.data.data_points]


def tag() -> str:
    return f"telemetry-{uuid.uuid4().hex[:8]}"


def values_of(span) -> str:
    return json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in span.attributes.items()})


def test_a_succeeded_import_has_a_span_with_its_fields_and_no_secret(app_env, otel):
    password = layout.DOCKERHUB.users["dockeruser"]
    target_tag = f"privateimage:{tag()}"
    request_id = f"ok-{tag()}"
    deliver({"source": "docker.io/myrepo/image:tag", "targetTags": [target_tag], "credential": "dockerhub",
             "id": request_id}, message_id="m-ok")
    [span] = otel.import_spans()
    attributes = span.attributes
    assert attributes[A + "request_id"] == request_id
    assert attributes[A + "outcome"] == "succeeded"
    assert attributes[A + "source"] == "docker.io/myrepo/image:tag"
    assert attributes[A + "target"] == layout.TARGET_ACR.resource_id
    assert list(attributes[A + "target_tags"]) == [target_tag]
    assert attributes[A + "duration_ms"] >= 0 and attributes["messaging.message.id"] == "m-ok"
    assert span.status.status_code is not StatusCode.ERROR
    assert span.end_time - span.start_time > 0
    assert password not in values_of(span)
    [count] = otel.points("acr_importer.imports")
    assert (dict(count.attributes), count.value) == ({"outcome": "succeeded"}, 1)
    [duration] = otel.points("acr_importer.import.duration")
    assert dict(duration.attributes) == {"outcome": "succeeded"} and duration.count == 1 and duration.sum > 0


def test_a_rejected_import_names_the_problem_and_keeps_an_inline_password_out(app_env, otel):
    deliver({"source": "Library/Nginx", "username": "someone", "password": "hunter2-do-not-show"})
    [span] = otel.import_spans()
    assert span.attributes[A + "outcome"] == "rejected"
    assert "source" in span.attributes[A + "reason"]
    assert span.attributes[A + "failure_code"] == "InvalidRequest"
    assert "hunter2-do-not-show" not in values_of(span)
    assert span.status.status_code is not StatusCode.ERROR  # the sender's mistake, not an app failure
    [count] = otel.points("acr_importer.imports")
    assert (dict(count.attributes), count.value) == ({"outcome": "rejected", "code": "InvalidRequest"}, 1)


def test_a_failed_import_is_an_error_span_with_the_registry_error(app_env, otel):
    deliver({"source": "docker.io/library/does-not-exist:1", "targetTags": [f"x:{tag()}"]})
    [span] = otel.import_spans()
    assert span.attributes[A + "outcome"] == "failed"
    assert span.attributes[A + "failure_kind"] == "permanent" and span.attributes[A + "failure_code"]
    assert span.status.status_code is StatusCode.ERROR
    counts = {p.attributes["outcome"]: p.value for p in otel.points("acr_importer.imports")}
    assert counts == {"failed": 1}
    [count] = otel.points("acr_importer.imports")
    assert count.attributes["code"] == span.attributes[A + "failure_code"], "failures split by code on the metric"
    [duration] = otel.points("acr_importer.import.duration")
    assert dict(duration.attributes) == {"outcome": "failed"}


def test_outcomes_add_up_per_outcome(app_env, otel):
    deliver({"source": "Library/Nginx"})
    deliver({"source": "NOPE"})
    deliver({"source": "docker.io/library/hello-world:latest", "targetTags": [f"hello-world:{tag()}"]})
    counts = {p.attributes["outcome"]: p.value for p in otel.points("acr_importer.imports")}
    assert counts == {"rejected": 2, "succeeded": 1}
    assert len(otel.import_spans()) == 3


def test_refresh_metrics_and_the_last_rate_limit_per_upstream(otel):
    telemetry.record_refresh(checked=30, changed=2, rate_limit_remaining={"docker.io": 97, "mcr.microsoft.com": None})
    telemetry.record_refresh(checked=30, changed=0, rate_limit_remaining={"docker.io": 95})
    [checked] = otel.points("acr_importer.refresh.checked")
    [changed] = otel.points("acr_importer.refresh.changed")
    assert (checked.value, changed.value) == (60, 2)
    gauges = {p.attributes["registry"]: p.value for p in otel.points("acr_importer.upstream.ratelimit_remaining")}
    assert gauges == {"docker.io": 95}
    [runs] = otel.points("acr_importer.refresh.runs")
    assert (dict(runs.attributes), runs.value) == ({"result": "ok"}, 2)


def test_every_refresh_run_is_counted_by_result_with_its_errors(otel):
    telemetry.record_refresh(0, 0, {}, 3)
    telemetry.record_refresh(5, 0, {})
    runs = {p.attributes["result"]: p.value for p in otel.points("acr_importer.refresh.runs")}
    assert runs == {"errors": 1, "ok": 1}
    [errors] = otel.points("acr_importer.refresh.errors")
    assert errors.value == 3


def test_a_failure_code_on_the_metric_is_bounded_so_hostile_codes_add_no_series(otel):
    codes = ["TooManyRequests", "MANIFEST_UNKNOWN", "a" * 65, "has space", "<script>", "9starts-with-digit", ""]
    for code in codes:
        telemetry.record_import({"state": "failed", "code": code, "durationMs": 1})
    telemetry.record_import({"state": "succeeded", "durationMs": 1})
    seen = sorted((p.attributes["outcome"], p.attributes.get("code", "-"), p.value)
                  for p in otel.points("acr_importer.imports"))
    assert seen == [("failed", "-", 1), ("failed", "MANIFEST_UNKNOWN", 1), ("failed", "TooManyRequests", 1),
                    ("failed", "other", 4), ("succeeded", "-", 1)]


def test_off_there_are_no_spans_and_the_json_line_is_unchanged(app_env, caplog):
    recorded = Telemetry()  # an exporter that would see anything sent through OpenTelemetry
    assert not telemetry.enabled()
    caplog.set_level(logging.INFO, logger="acr_importer")
    request_id = deliver({"source": "Library/Nginx"})
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "acr_importer"]
    [line] = [entry for entry in lines if entry.get("requestId") == request_id]
    assert line["event"] == "import" and line["state"] == "rejected" and "durationMs" in line
    assert recorded.spans.get_finished_spans() == ()
    telemetry.record_refresh(1, 1, {"docker.io": 1})  # a no-op, not an error


def _python(code: str, env: dict[str, str]) -> str:
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_without_a_connection_string_the_app_never_imports_opentelemetry(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLICATIONINSIGHTS_")}
    loaded = _python("import sys, function_app; from shared.azure import telemetry; "
                     "print(telemetry.enabled(), any(m.split('.')[0] == 'opentelemetry' or "
                     "m.startswith('azure.monitor') for m in sys.modules))", env)
    assert loaded == "False False"


def test_with_a_connection_string_azure_monitor_is_configured(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path),
           "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-0000-0000-0000-000000000000;"
                                                    "IngestionEndpoint=https://127.0.0.1:9/"}
    loaded = _python("import sys, function_app; from shared.azure import telemetry; "
                     "from opentelemetry import trace; "
                     "print(telemetry.enabled(), 'azure.monitor.opentelemetry' in sys.modules, "
                     "type(trace.get_tracer_provider()).__module__.startswith('opentelemetry.sdk'))", env)
    assert loaded == "True True True"


def test_a_refresh_run_reports_checked_changed_and_rate_limits(monkeypatch):
    """The refresh calls the telemetry once per (non-dry) run with its summary's figures."""
    from shared.refresh import run as refresh

    seen = []
    monkeypatch.setattr(refresh.telemetry, "record_refresh", lambda *args: seen.append(args))

    class Log:
        def backoff_until(self):
            return {}

        def record(self, summary):
            pass

    from shared.core.settings import load_settings

    settings = load_settings({"TARGET_REGISTRY": "/subscriptions/11111111-1111-4111-8111-111111111111/resourceGroups/"
                                                 "rg/providers/Microsoft.ContainerRegistry/registries/myregistry"})
    refresh.run_refresh(settings, reader=None, identity=None, refresh_log=Log(), config_text='{"images": []}')
    assert seen == [(0, 0, {}, 0)]
