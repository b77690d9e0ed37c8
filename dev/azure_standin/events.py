"""Event Grid for the ACR stand-in: ACR system-topic events delivered to event subscriptions.

Each ACR data plane (a docker-registry) posts its notifications here; manifest pushes and deletes become
`Microsoft.ContainerRegistry.ImagePushed` / `ImageDeleted` events on the registry's topic (its resource
id), as ACR raises them: a multi-arch push gives one untagged event per child manifest, then one tagged
event for the index. An import by the stand-in pushes into a registry too, so it raises them the same way.

Subscriptions are made through the control endpoint: a webhook (the Functions runner's
`/runtime/webhooks/eventgrid?functionName=...&code=...`), validated by the subscription handshake first,
or a storage queue on Azurite (plain JSON, one event per message, as Event Grid writes).
Delivery: Event Grid schema, one event per request (`maxEventsPerBatch` 1), header
`aeg-event-type: Notification`; a non-2xx answer is retried a few times with short backoff.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import requests

from dev import layout
from dev.azure_standin.http_base import Request, Response

log = logging.getLogger("azure_standin.events")
IMAGE_PUSHED = "Microsoft.ContainerRegistry.ImagePushed"
IMAGE_DELETED = "Microsoft.ContainerRegistry.ImageDeleted"
MANIFEST_TYPES = ("application/vnd.docker.distribution.manifest.v2+json",
                  "application/vnd.docker.distribution.manifest.list.v2+json",
                  "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json")
RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0)  # Event Grid: exponential, up to 30 attempts over 24 h


@dataclass
class Subscription:
    name: str
    topic: str
    endpoint_type: str  # "WebHook" | "StorageQueue"
    endpoint: str  # webhook URL, or queue name
    event_types: tuple[str, ...] = (IMAGE_PUSHED, IMAGE_DELETED)

    def wants(self, topic: str, event_type: str) -> bool:
        return topic.lower() == self.topic.lower() and (not self.event_types or event_type in self.event_types)

    def to_json(self) -> dict[str, Any]:
        shown = self.endpoint.split("?")[0] if self.endpoint_type == "WebHook" else self.endpoint  # no key
        return {"name": self.name, "topic": self.topic, "endpointType": self.endpoint_type, "endpoint": shown,
                "includedEventTypes": list(self.event_types)}


@dataclass
class Delivery:
    subscription: str
    event_id: str
    event_type: str
    subject: str
    attempts: list[int] = field(default_factory=list)  # HTTP status per attempt (0: no answer)
    done: bool = False


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def acr_for_name(name: str) -> layout.AcrSpec | None:
    return next((acr for acr in layout.ACRS if acr.name == name.lower()), None)


def events_from_notification(acr: layout.AcrSpec, envelope: Any) -> list[dict[str, Any]]:
    """Event Grid events for a distribution notification envelope; blob and pull events raise none."""
    out = []
    for item in (envelope or {}).get("events", []) if isinstance(envelope, dict) else []:
        target = item.get("target") or {}
        action = item.get("action")
        if action == "push" and target.get("mediaType") in MANIFEST_TYPES:
            event_type = IMAGE_PUSHED
        elif action == "delete" and target.get("digest"):
            event_type = IMAGE_DELETED
        else:
            continue
        kept = {k: target[k] for k in ("mediaType", "size", "digest", "length", "repository", "tag") if k in target}
        request = item.get("request") or {}
        repo, tag = kept.get("repository", ""), kept.get("tag")
        out.append({
            "id": str(uuid.uuid4()), "topic": acr.resource_id,
            "subject": f"{repo}:{tag}" if tag else repo, "eventType": event_type,
            "eventTime": item.get("timestamp") or _now(),
            "data": {"id": item.get("id", str(uuid.uuid4())), "timestamp": item.get("timestamp") or _now(),
                     "action": action, "target": kept,
                     "request": {"id": request.get("id", ""), "host": acr.login_server,
                                 "method": request.get("method", ""), "useragent": request.get("useragent", "")}},
            "dataVersion": "1.0", "metadataVersion": "1"})
    return out


class SubscriptionRefused(ValueError):
    pass


class EventGrid:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="eventgrid")
        self._session = requests.Session()
        self._session.trust_env = False
        self._pending = 0
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.subscriptions: dict[str, Subscription] = {}
            self.deliveries: list[Delivery] = []
            self.published: list[dict[str, Any]] = []

    def reset_log(self) -> None:
        with self._lock:
            self.deliveries = []
            self.published = []

    # --- subscriptions -------------------------------------------------------------------------
    def subscribe(self, body: dict[str, Any]) -> Subscription:
        endpoint_type = body.get("endpointType", "WebHook")
        if endpoint_type not in ("WebHook", "StorageQueue"):
            raise SubscriptionRefused("endpointType must be WebHook or StorageQueue")
        topic = str(body["topic"])
        if not any(topic.lower() == acr.resource_id.lower() for acr in layout.ACRS):
            raise SubscriptionRefused(f"topic {topic!r} is not a registry of the stand-in")
        sub = Subscription(str(body.get("name") or f"sub-{uuid.uuid4().hex[:8]}"), topic, endpoint_type,
                           str(body["endpoint"] if endpoint_type == "WebHook" else body["queue"]),
                           tuple(body.get("includedEventTypes") or (IMAGE_PUSHED, IMAGE_DELETED)))
        if endpoint_type == "WebHook":
            self._validate(sub)
        with self._lock:
            self.subscriptions[sub.name] = sub
        return sub

    def _validate(self, sub: Subscription) -> None:
        """The handshake Event Grid makes before it creates a webhook subscription."""
        code = str(uuid.uuid4())
        event = {"id": str(uuid.uuid4()), "topic": sub.topic, "subject": "", "eventTime": _now(),
                 "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "metadataVersion": "1",
                 "dataVersion": "2", "data": {"validationCode": code, "validationUrl": ""}}
        try:
            answer = self._session.post(sub.endpoint, json=[event], timeout=10, headers={
                "aeg-event-type": "SubscriptionValidation", "aeg-subscription-name": sub.name.upper()})
        except requests.RequestException as err:
            raise SubscriptionRefused(f"webhook validation failed: {type(err).__name__}") from None
        try:
            echoed = answer.json().get("validationResponse") if answer.status_code == 200 else None
        except ValueError:
            echoed = None
        if echoed != code:
            raise SubscriptionRefused(f"webhook validation failed: the endpoint answered HTTP {answer.status_code} "
                                      "without the validation code")

    def unsubscribe(self, name: str | None) -> int:
        with self._lock:
            names = [name] if name else list(self.subscriptions)
            return sum(self.subscriptions.pop(n, None) is not None for n in names)

    # --- publishing ----------------------------------------------------------------------------
    def publish(self, events: list[dict[str, Any]]) -> None:
        with self._lock:
            self.published.extend(events)
            targets = [(sub, e) for e in events for sub in self.subscriptions.values()
                       if sub.wants(e["topic"], e["eventType"])]
            self._pending += len(targets)
        for sub, event in targets:
            delivery = Delivery(sub.name, event["id"], event["eventType"], event["subject"])
            with self._lock:
                self.deliveries.append(delivery)
            self._pool.submit(self._deliver, sub, event, delivery)

    def _deliver(self, sub: Subscription, event: dict[str, Any], delivery: Delivery) -> None:
        try:
            for attempt, delay in enumerate((0.0, *RETRY_DELAYS), start=1):
                time.sleep(delay)
                status = self._send(sub, event, attempt)
                with self._lock:
                    delivery.attempts.append(status)
                if 200 <= status < 300:
                    return
            log.warning("gave up delivering %s to %s after %d attempts", event["id"], sub.name,
                        len(delivery.attempts))
        finally:
            with self._lock:
                delivery.done = True
                self._pending -= 1

    def _send(self, sub: Subscription, event: dict[str, Any], attempt: int) -> int:
        if sub.endpoint_type == "StorageQueue":
            from azure.core.exceptions import AzureError, ResourceExistsError
            from azure.storage.queue import QueueClient

            client = QueueClient.from_connection_string(layout.AZURITE_CONNECTION_STRING, sub.endpoint)
            try:
                with contextlib.suppress(ResourceExistsError):
                    client.create_queue()
                client.send_message(json.dumps(event))
                return 201
            except AzureError:
                return 0
        headers = {"aeg-event-type": "Notification", "aeg-subscription-name": sub.name.upper(),
                   "aeg-delivery-count": str(attempt - 1), "aeg-data-version": event.get("dataVersion", ""),
                   "aeg-metadata-version": "1"}
        try:
            return self._session.post(sub.endpoint, json=[event], headers=headers, timeout=30).status_code
        except requests.RequestException:
            return 0

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {"pending": self._pending, "published": list(self.published),
                    "deliveries": [{"subscription": d.subscription, "eventId": d.event_id,
                                    "eventType": d.event_type, "subject": d.subject, "attempts": list(d.attempts),
                                    "done": d.done} for d in self.deliveries]}


def serve_events(grid: EventGrid, request: Request) -> Response | None:
    """`/_control/registry-events/{acr}` and `/_control/event-subscriptions|event-deliveries`; None otherwise."""
    if not request.client.startswith("127."):
        return Response(403, {"error": "control endpoint is loopback only"})
    name = request.path.removeprefix("/_control").strip("/")
    try:
        body = request.json() or {}
    except ValueError:
        return Response(400, {"error": "body is not JSON"})
    if name.startswith("registry-events/") and request.method == "POST":
        acr = acr_for_name(name.split("/", 1)[1])
        if acr is None:
            return Response(404, {"error": f"no registry {name.split('/', 1)[1]!r}"})
        grid.publish(events_from_notification(acr, body))
        return Response(200)
    if name == "event-subscriptions":
        if request.method == "GET":
            return Response(200, [s.to_json() for s in grid.subscriptions.values()])
        if request.method in ("POST", "PUT"):
            try:
                return Response(201, grid.subscribe(body).to_json())
            except (KeyError, SubscriptionRefused) as err:
                return Response(400, {"error": f"subscription refused: {err}"})
        if request.method == "DELETE":
            return Response(200, {"removed": grid.unsubscribe(body.get("name"))})
    if name == "event-deliveries":
        if request.method == "GET":
            return Response(200, grid.status())
        if request.method == "DELETE":
            grid.reset_log()
            return Response(204)
    return None
