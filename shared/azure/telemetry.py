"""OpenTelemetry for imports and refreshes, switched on by APPLICATIONINSIGHTS_CONNECTION_STRING.

Off (the default, and locally) nothing here imports OpenTelemetry, so a cold start pays nothing and the
JSON log line per outcome (shared/imports/worker.py) stays the record. On, `configure_azure_monitor` exports a span
per import and the metrics below to Application Insights; those JSON lines still reach it through the
Functions host's own log forwarding, so the distro's log exporter stays off (no line twice).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from shared.core.redact import redact_text

if TYPE_CHECKING:
    from azure.identity import ManagedIdentityCredential
    from opentelemetry.metrics import CallbackOptions, Observation

CONNECTION_SETTING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
AUTHENTICATION_SETTING = "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"  # "Authorization=AAD[;ClientId=<id>]"
INSTRUMENTATION_NAME = "acr_importer"
ATTRIBUTE_PREFIX = "acr_importer."
# A failure code as a metric dimension: the service's or the app's code word, bounded so that a registry
# answering with arbitrary text cannot grow the number of series.
METRIC_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_.]{0,63}$")
OTHER_CODE = "other"

log = logging.getLogger("acr_importer")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class _Instruments:
    tracer: Any
    imports: Any
    import_duration: Any
    refresh_checked: Any
    refresh_changed: Any
    refresh_runs: Any
    refresh_errors: Any
    rate_limits: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


_instruments: _Instruments | None = None


def enabled() -> bool:
    return _instruments is not None


def enable(tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Create the instruments on the given providers (tests pass in-memory ones), else the global ones."""
    global _instruments
    from opentelemetry import metrics, trace

    tracer = trace.get_tracer(INSTRUMENTATION_NAME, tracer_provider=tracer_provider)
    meter = metrics.get_meter(INSTRUMENTATION_NAME, meter_provider=meter_provider)
    instruments = _Instruments(
        tracer=tracer,
        imports=meter.create_counter("acr_importer.imports", unit="{import}",
                                     description="Import invocations by outcome"),
        import_duration=meter.create_histogram("acr_importer.import.duration", unit="s",
                                               description="Time one invocation spent on an import, by outcome"),
        refresh_checked=meter.create_counter("acr_importer.refresh.checked", unit="{tag}",
                                             description="Tracked tags compared with their upstream"),
        refresh_changed=meter.create_counter("acr_importer.refresh.changed", unit="{tag}",
                                             description="Tracked tags found changed upstream"),
        refresh_runs=meter.create_counter("acr_importer.refresh.runs", unit="{run}",
                                          description="Refresh runs by result (ok, errors): one point per run, "
                                                      "unsampled, so a missing run is seen"),
        refresh_errors=meter.create_counter("acr_importer.refresh.errors", unit="{problem}",
                                            description="Problems a refresh run reported (tags, listings, config)"),
    )

    def remaining(_options: CallbackOptions) -> list[Observation]:
        from opentelemetry.metrics import Observation

        with instruments.lock:
            current = dict(instruments.rate_limits)
        return [Observation(value, {"registry": host}) for host, value in sorted(current.items())]

    meter.create_observable_gauge("acr_importer.upstream.ratelimit_remaining", callbacks=[remaining],
                                  unit="{pull}", description="Pulls left before the upstream rate-limits (last seen)")
    _instruments = instruments


def disable() -> None:
    global _instruments
    _instruments = None


def _entra_credential(authentication: str | None) -> ManagedIdentityCredential | None:
    """A managed identity credential when the authentication string asks for Entra ID (local auth off)."""
    parts = dict(p.split("=", 1) for p in (authentication or "").split(";") if "=" in p)
    if parts.get("Authorization", "").upper() != "AAD":
        return None
    from azure.identity import ManagedIdentityCredential

    client_id = parts.get("ClientId") or None
    return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()


def configure_from_environment(env: Mapping[str, str] | None = None) -> bool:
    """Send telemetry to Application Insights when its connection string is set; True when it is on.

    Telemetry never stops the app: a configuration error is logged (without the connection string) and
    the app carries on with JSON logs only."""
    env = os.environ if env is None else env
    connection = (env.get(CONNECTION_SETTING) or "").strip()
    if not connection:
        return False
    try:
        from azure.monitor.opentelemetry import configure_azure_monitor

        options: dict[str, Any] = {"connection_string": connection, "disable_logging": True}
        credential = _entra_credential(env.get(AUTHENTICATION_SETTING))
        if credential is not None:
            options["credential"] = credential
        configure_azure_monitor(**options)
        enable()
    except Exception as exc:
        log.warning("telemetry off: %s / %s could not be used to configure Azure Monitor (%s)",
                    CONNECTION_SETTING, AUTHENTICATION_SETTING, type(exc).__name__)
        return False
    return True


def import_span(handler: F) -> F:
    """Run an import handler inside an `import` span, so its outcome and the SDK's calls share a trace."""

    @functools.wraps(handler)
    def traced(*args: Any, **kwargs: Any) -> Any:
        instruments = _instruments
        if instruments is None:
            return handler(*args, **kwargs)
        from opentelemetry.trace import SpanKind

        with instruments.tracer.start_as_current_span("import", kind=SpanKind.CONSUMER) as span:
            if kwargs.get("message_id"):
                span.set_attribute("messaging.message.id", str(kwargs["message_id"]))
            return handler(*args, **kwargs)

    return traced  # type: ignore[return-value]


def record_import(fields: Mapping[str, Any], secrets: tuple[str, ...] = ()) -> None:
    """The outcome of one import invocation (the fields of its JSON log line) on the span and the metrics."""
    instruments = _instruments
    if instruments is None:
        return
    from opentelemetry import trace
    from opentelemetry.trace import Status, StatusCode

    outcome = str(fields.get("state", ""))
    seconds = float(fields.get("durationMs", 0)) / 1000
    instruments.imports.add(1, import_dimensions(fields))
    instruments.import_duration.record(seconds, {"outcome": outcome})
    span = trace.get_current_span()
    if not span.is_recording():
        return
    names = {"requestId": "request_id", "source": "source", "target": "target", "state": "outcome",
             "reason": "reason", "attempts": "attempts", "durationMs": "duration_ms", "mode": "mode",
             "code": "failure_code", "kind": "failure_kind", "targetTags": "target_tags"}
    for key, attribute in names.items():
        value = fields.get(key)
        if value is None or value == "":
            continue
        if isinstance(value, list):
            value = [redact_text(str(v), secrets) for v in value]
        elif isinstance(value, str):
            value = redact_text(value, secrets)
        span.set_attribute(ATTRIBUTE_PREFIX + attribute, value)
    if outcome == "failed":
        span.set_status(Status(StatusCode.ERROR, str(fields.get("code") or "failed")))


def import_dimensions(fields: Mapping[str, Any]) -> dict[str, str]:
    """The imports counter's dimensions: the outcome, and the failure code when there is one (a throttled
    retry's too), so failures and throttling can be split by code without reading logs."""
    dimensions = {"outcome": str(fields.get("state", ""))}
    code = fields.get("code")
    if code:
        dimensions["code"] = str(code) if METRIC_CODE.match(str(code)) else OTHER_CODE
    return dimensions


def record_refresh(checked: int, changed: int, rate_limit_remaining: Mapping[str, int | None] | None = None,
                   errors: int = 0) -> None:
    """One refresh run: tags compared, tags changed, problems, and each upstream's last `ratelimit-remaining`.
    Every run adds one to `acr_importer.refresh.runs`, so "no run lately" is a metric, not a sampled log."""
    instruments = _instruments
    if instruments is None:
        return
    instruments.refresh_checked.add(checked)
    instruments.refresh_changed.add(changed)
    instruments.refresh_runs.add(1, {"result": "errors" if errors else "ok"})
    instruments.refresh_errors.add(errors)
    if rate_limit_remaining:
        record_rate_limits(rate_limit_remaining)


def record_rate_limits(remaining: Mapping[str, int | None]) -> None:
    """Pulls left per upstream host, as last reported; hosts that reported nothing keep their last value."""
    instruments = _instruments
    if instruments is None:
        return
    with instruments.lock:
        instruments.rate_limits.update({host: value for host, value in remaining.items() if value is not None})
