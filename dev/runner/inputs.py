"""Trigger inputs as the Python worker builds them: `azure.functions`' own converters fed the datums the host sends.

The host turns each trigger value and each trigger-metadata entry into a gRPC `TypedData`
(azure-functions-host `RpcMessageConversionExtensions.ToRpc`: `byte[]` → bytes, `string` → string, anything
else → `JsonConvert.SerializeObject`, so numbers and `DateTimeOffset`s arrive as JSON text); the worker wraps
each in an `azure.functions.meta.Datum` (azure-functions-python-worker `bindings/datumdef.py`) and calls the
binding's `InConverter.decode(datum, trigger_metadata=...)`. Building the same datums here means the app gets
exactly the objects (and the exceptions) it gets in Azure, never a hand-made stand-in.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import azure.functions as func
from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.http import HttpRequestConverter
from azure.functions.meta import Datum
from azure.functions.queue import QueueMessageInConverter
from azure.functions.timer import TimerRequestConverter


def _json(value: Any) -> Datum:
    """What `ToRpcDefault` makes of a non-string, non-bytes value (a number, a DateTimeOffset, a POCO);
    null is an empty TypedData, which the worker reads as a datum of no type (the converter: None)."""
    if value is None:
        return Datum(None, None)
    if isinstance(value, datetime):
        value = value.isoformat()  # Newtonsoft writes DateTimeOffset as ISO 8601 with its offset
    return Datum(json.dumps(value), "json")


def queue_datums(body: bytes, *, id: str, dequeue_count: int, pop_receipt: str | None,
                 insertion_time: datetime | None, expiration_time: datetime | None,
                 next_visible_time: datetime | None) -> tuple[Datum, dict[str, Datum]]:
    """The queue trigger's value and metadata (storage extension 5.x `QueueTriggerBindingDataProvider`).

    The extension binds the message as its text when it is UTF-8 and as bytes otherwise; metadata names are
    the extension's: Id, DequeueCount, InsertionTime, ExpirationTime, NextVisibleTime, PopReceipt, QueueTrigger.
    """
    try:
        text: str | None = body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    value = Datum(text, "string") if text is not None else Datum(body, "bytes")
    metadata = {
        "Id": Datum(id, "string"),
        "DequeueCount": _json(dequeue_count),
        "InsertionTime": _json(insertion_time),
        "ExpirationTime": _json(expiration_time),
        "NextVisibleTime": _json(next_visible_time),
        "PopReceipt": Datum(pop_receipt, "string"),
    }
    if text is not None:
        metadata["QueueTrigger"] = Datum(text, "string")
    return value, metadata


def queue_input(body: bytes, **metadata: Any) -> func.QueueMessage:
    value, trigger_metadata = queue_datums(body, **metadata)
    return QueueMessageInConverter.decode(value, trigger_metadata=trigger_metadata)


def timer_input(past_due: bool, schedule_status: Mapping[str, Any] | None = None,
                adjust_for_dst: bool = True) -> func.TimerRequest:
    """The timer extension's `TimerInfo` as JSON: `Schedule`, `ScheduleStatus` (null without a monitor), `IsPastDue`."""
    info = {"Schedule": {"AdjustForDST": adjust_for_dst},
            "ScheduleStatus": dict(schedule_status) if schedule_status else None, "IsPastDue": past_due}
    return TimerRequestConverter.decode(Datum(json.dumps(info), "json"), trigger_metadata={})


def eventgrid_input(event: Mapping[str, Any]) -> func.EventGridEvent | func.CloudEvent:
    """One event of a delivery as JSON (the extension hands the worker each array element as a JObject).

    The converter answers a `func.CloudEvent` for a CloudEvents 1.0 event (`specversion` present) and a
    `func.EventGridEvent` otherwise, whatever the function's annotation says; a malformed time raises, which
    fails the invocation before the function runs, as in the worker.
    """
    return EventGridEventInConverter.decode(Datum(json.dumps(event), "json"), trigger_metadata={})


def http_datum(method: str, url: str, headers: Mapping[str, str], query: Iterable[tuple[str, str]],
               route_params: Mapping[str, str], body: bytes) -> Datum:
    """`RpcHttp` as `ToRpcHttp` fills it and `datumdef` wraps it.

    Header names are lower-cased; query parameters with an empty value are left out and repeated ones joined
    with ',' (`StringValues.ToString()`); the body is bytes (the worker asks for raw body bytes), empty when
    the request has none.
    """
    joined: dict[str, list[str]] = {}
    for name, value in query:
        joined.setdefault(name, []).append(value)
    return Datum({
        "method": Datum(method.upper(), "string"),
        "url": Datum(url, "string"),
        "headers": {k.lower(): Datum(v, "string") for k, v in headers.items()},
        "query": {k: Datum(",".join(v), "string") for k, v in joined.items() if ",".join(v)},
        "params": {k: Datum(v, "string") for k, v in route_params.items() if v is not None},
        "body": Datum(body or b"", "bytes"),
    }, "http")


def http_input(method: str, url: str, headers: Mapping[str, str], query: Iterable[tuple[str, str]],
               route_params: Mapping[str, str], body: bytes) -> func.HttpRequest:
    datum = http_datum(method, url, headers, query, route_params, body)
    return HttpRequestConverter.decode(datum, trigger_metadata={})
