"""Event Grid and CloudEvents payloads from ACR, read defensively into typed values.

Anyone who can reach the webhook (or write to the queue) can send anything, so nothing here trusts a
field's presence or type: a payload becomes a `RegistryEvent` or an `UnreadableEvent` with a reason,
never an exception.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

IMAGE_PUSHED = "Microsoft.ContainerRegistry.ImagePushed"
IMAGE_DELETED = "Microsoft.ContainerRegistry.ImageDeleted"
CHART_PUSHED = "Microsoft.ContainerRegistry.ChartPushed"
CHART_DELETED = "Microsoft.ContainerRegistry.ChartDeleted"
REGISTRY_EVENT_TYPES = (IMAGE_PUSHED, IMAGE_DELETED, CHART_PUSHED, CHART_DELETED)
VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"

MAX_FIELD = 1024
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_REPOSITORY = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")


@dataclass(frozen=True)
class RegistryEvent:
    """An ACR event whose envelope is readable. Payload fields are None when absent or unusable;
    `problems` says which ones were present but wrong (an ImagePushed with problems is not imported)."""

    id: str
    topic: str
    event_type: str
    subject: str
    event_time: str
    repository: str | None
    tag: str | None
    digest: str | None
    media_type: str | None
    problems: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return event_key(self.topic, self.id)


@dataclass(frozen=True)
class UnreadableEvent:
    """A payload that is not an event we can act on, with why (for the status row and the log)."""

    id: str
    topic: str
    event_type: str
    reason: str
    document: Any

    @property
    def key(self) -> str:
        return event_key(self.topic, self.id or _fingerprint(self.document))


def event_key(topic: str, event_id: str) -> str:
    """A short, stable name for one event: Event Grid redelivers with the same topic and id."""
    return hashlib.sha256(f"{topic.lower()}|{event_id}".encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _fingerprint(document: Any) -> str:
    try:
        text = json.dumps(document, sort_keys=True, default=str)
    except (TypeError, ValueError, RecursionError):
        text = repr(document)
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()


def is_event_like(document: Any) -> bool:
    """Whether a decoded queue body is an event (or a list of them) rather than an import request.

    Import requests never carry these envelope fields (the request schema refuses unknown fields), so
    the test cannot misroute a request.
    """
    if isinstance(document, list):
        return bool(document) and all(is_event_like(item) for item in document)
    if not isinstance(document, Mapping):
        return False
    grid = "eventType" in document and ("topic" in document or "data" in document or "subject" in document)
    cloud = "specversion" in document
    return grid or cloud


def _text(value: Any) -> str:
    return value[:MAX_FIELD] if isinstance(value, str) else ""


def read_event(raw: Any) -> RegistryEvent | UnreadableEvent:
    """One event in the Event Grid schema or CloudEvents 1.0 (structured JSON)."""
    if not isinstance(raw, Mapping):
        return UnreadableEvent("", "", "", f"an event must be a JSON object, not {type(raw).__name__}", raw)
    cloud = "specversion" in raw
    event_id = _text(raw.get("id"))
    topic = _text(raw.get("source" if cloud else "topic"))
    event_type = _text(raw.get("type" if cloud else "eventType"))
    subject = _text(raw.get("subject"))
    event_time = _text(raw.get("time" if cloud else "eventTime"))
    missing = [name for name, value in (("id", event_id), ("source" if cloud else "topic", topic),
                                        ("type" if cloud else "eventType", event_type)) if not value]
    if missing:
        return UnreadableEvent(event_id, topic, event_type,
                               f"not an event: {', '.join(missing)} missing or not a string", raw)
    if event_type not in REGISTRY_EVENT_TYPES:
        return RegistryEvent(event_id, topic, event_type, subject, event_time, None, None, None, None)
    data = raw.get("data")
    if not isinstance(data, Mapping):
        return UnreadableEvent(event_id, topic, event_type, "data is missing or not an object", raw)
    target = data.get("target")
    if not isinstance(target, Mapping):
        return UnreadableEvent(event_id, topic, event_type, "data.target is missing or not an object", raw)
    problems: list[str] = []
    repository = _field(target, "repository", _REPOSITORY, problems)
    tag = _field(target, "tag", _TAG, problems)
    digest = _field(target, "digest", _DIGEST, problems)
    media_type = _text(target.get("mediaType")) or None
    return RegistryEvent(event_id, topic, event_type, subject, event_time, repository, tag, digest, media_type,
                         tuple(problems))


def _field(target: Mapping[str, Any], name: str, pattern: re.Pattern[str], problems: list[str]) -> str | None:
    value = target.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 256 or not pattern.match(value):
        shown = json.dumps(value)[:80] if isinstance(value, str) else type(value).__name__
        problems.append(f"data.target.{name} {shown} is not a valid {name}")
        return None
    return value


def read_events(payload: Any) -> list[RegistryEvent | UnreadableEvent]:
    """A delivery: one event or an array of them (Event Grid posts arrays; a queue message holds one)."""
    items = payload if isinstance(payload, list) else [payload]
    return [read_event(item) for item in items[:1000]]


def event_document(event: Any) -> dict[str, Any]:
    """The schema dict of what the worker's Event Grid converter hands the function, so webhook and queue
    deliveries go through the same reader: a `func.CloudEvent` (the converter's answer for a CloudEvents 1.0
    event, whatever the annotation says) becomes a CloudEvents dict, anything else (a `func.EventGridEvent`)
    an Event Grid schema dict."""
    def get(name: str) -> Any:
        getter = getattr(event, f"get_{name}", None)
        try:
            return getter() if callable(getter) else getattr(event, name, None)
        except (ValueError, TypeError):
            return None

    def when(name: str) -> Any:
        moment = getattr(event, name, None)
        isoformat = getattr(moment, "isoformat", None)
        return isoformat() if callable(isoformat) else moment

    if getattr(event, "specversion", None) is not None:
        return {"specversion": event.specversion, "id": getattr(event, "id", None),
                "source": getattr(event, "source", None), "type": getattr(event, "type", None),
                "subject": getattr(event, "subject", None), "time": when("time"), "data": get("json")}
    return {"id": getattr(event, "id", None), "topic": getattr(event, "topic", None),
            "subject": getattr(event, "subject", None), "eventType": getattr(event, "event_type", None),
            "eventTime": when("event_time"), "dataVersion": getattr(event, "data_version", None),
            "data": get("json")}
