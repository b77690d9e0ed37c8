"""Requests in every state, a refresh run and replication events, made through the running app.

The status page's browser tests and its screenshots (`python -m dev.screenshots`) need something real to
show: this sends requests the way producers do (the HTTP API, or a message straight on the queue), makes ACR
hang one copy (the stand-in's control) so a request stays running, fires the refresh timer, and posts
ACR push events to the Event Grid webhook. Nothing is written to the status table by hand. Like the rest of
dev/, it never imports the app's code: it speaks HTTP and the queue protocol to it.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from dev import layout

# Stored fields are producer-written text: these reach the page as an id-like tag, a reason and an event's
# repository. If the page ever treated them as markup, `window.__xss` would be set.
XSS_TAG = '<img src=x onerror="window.__xss=1">:1'
XSS_REPOSITORY = '</script><script>window.__xss=2</script>'
REPLICA_PREFIX = "replica/"
WAIT_SECONDS = 120.0


@dataclass
class Showcase:
    """What was made: request ids by what they show, and the refresh and replication settings used."""

    tag: str = ""
    ids: dict[str, str] = field(default_factory=dict)
    events: dict[str, str] = field(default_factory=dict)


def settings(folder: Path, tag: str) -> dict[str, str]:
    """The app settings the showcase needs beside the stack's: a tracked-images file (its targets under
    `tracked-<tag>/`, so the first refresh finds them changed) and replication rules (pushes to the source ACR
    are copied to the target under `replica/`)."""
    tracked = folder / "tracked-images.json"
    tracked.write_text(json.dumps({"version": 1, "images": [
        {"name": "hello-world", "source": "docker.io/library/hello-world", "tags": ["latest"],
         "targetPrefix": f"tracked-{tag}/"},
        {"name": "nginx", "source": "docker.io/library/nginx", "tags": ["1.27", "no-such-tag"],
         "targetPrefix": f"tracked-{tag}/"},
    ]}))
    rules = folder / "replication-rules.json"
    rules.write_text(json.dumps({"version": 1, "rules": [
        {"source": layout.SOURCE_ACR.resource_id, "targets": [layout.TARGET_ACR.resource_id],
         "targetPrefix": REPLICA_PREFIX}]}))
    return {"TRACKED_IMAGES": str(tracked), "REPLICATION_RULES": str(rules), "IMPORT_WAIT_SECONDS": "0.5"}


class App:
    """The running app as a producer and an operator see it: its HTTP API, its queue, its webhook."""

    def __init__(self, base_url: str, key: str, queue: str, eventgrid_key: str = "") -> None:
        self.base_url = base_url.rstrip("/")
        self.key = key
        self.queue = queue
        self.eventgrid_key = eventgrid_key

    def submit(self, document: dict[str, Any]) -> str:
        answer = requests.post(f"{self.base_url}/api/imports", json=document, timeout=30,
                               headers={"x-functions-key": self.key})
        if answer.status_code != 202:
            raise RuntimeError(f"POST /api/imports answered {answer.status_code}: {answer.text[:500]}")
        return str(answer.json()["id"])

    def send(self, document: dict[str, Any]) -> None:
        """A message straight on the import queue, as a producer with queue access writes one."""
        from azure.storage.queue import QueueClient

        QueueClient.from_connection_string(layout.AZURITE_CONNECTION_STRING, self.queue).send_message(
            json.dumps(document))

    def status(self, request_id: str) -> dict[str, Any] | None:
        answer = requests.get(f"{self.base_url}/api/imports/{request_id}", timeout=30,
                              headers={"x-functions-key": self.key})
        return answer.json() if answer.status_code == 200 else None

    def ended(self, text: str) -> bool:
        """Some request matching `text` (GET /api/imports's q) has ended."""
        answer = requests.get(f"{self.base_url}/api/imports", params={"q": text, "limit": "200"}, timeout=30,
                              headers={"x-functions-key": self.key})
        return answer.status_code == 200 and any(item["terminal"] for item in answer.json()["items"])

    def wait_for(self, request_id: str, *states: str, timeout: float = WAIT_SECONDS) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            seen = self.status(request_id)
            if seen is not None and seen["state"] in states:
                return seen
            time.sleep(0.25)
        raise RuntimeError(f"request {request_id} did not reach {states} in {timeout:.0f} s (last seen: {seen})")

    def post_events(self, events: list[dict[str, Any]]) -> None:
        answer = requests.post(f"{self.base_url}/runtime/webhooks/eventgrid",
                               params={"functionName": "replicate_on_push", "code": self.eventgrid_key},
                               json=events, headers={"aeg-event-type": "Notification"}, timeout=60)
        if answer.status_code != 202:
            raise RuntimeError(f"the Event Grid webhook answered {answer.status_code}")


def make_requests(app: App, control: Any, tag: str) -> Showcase:
    """One request per state the page shows: succeeded, skipped (IfChanged, same digest), failed (the source
    does not exist: dead-lettered), rejected (a registry not allowed: dead-lettered), rejected with markup in a
    target tag, and one left running (ACR's copy hangs). `tag` keeps ids and target tags apart between runs."""
    shown = Showcase(tag=tag)
    shown.ids["succeeded"] = app.submit({"id": f"hello-{tag}", "source": "docker.io/library/hello-world:latest",
                                         "targetTags": [f"showcase/hello-world:{tag}"]})
    app.wait_for(shown.ids["succeeded"], "succeeded")
    shown.ids["skipped"] = app.submit({"id": f"hello-again-{tag}", "source": "docker.io/library/hello-world:latest",
                                       "targetTags": [f"showcase/hello-world:{tag}"], "mode": "IfChanged"})
    shown.ids["failed"] = app.submit({"id": f"missing-{tag}", "source": "docker.io/library/does-not-exist:1",
                                      "targetTags": [f"showcase/missing:{tag}"]})
    shown.ids["rejected"] = f"not-allowed-{tag}"
    app.send({"id": shown.ids["rejected"], "source": "registry.example.net/team/tool:2.1",
              "targetTags": [f"showcase/tool:{tag}"]})
    shown.ids["xss"] = f"markup-{tag}"
    app.send({"id": shown.ids["xss"], "source": "docker.io/library/nginx:1.27", "targetTags": [XSS_TAG]})
    for name in ("skipped", "failed", "rejected", "xss"):
        app.wait_for(shown.ids[name], "succeeded", "skipped", "failed", "rejected")
    control.add_faults("operation", {"hang": True})
    shown.ids["running"] = app.submit({"id": f"slow-{tag}", "source": "docker.io/library/nginx:1.27",
                                       "targetTags": [f"showcase/nginx:{tag}"]})
    app.wait_for(shown.ids["running"], "running")
    return shown


def pushed_event(repository: str, tag: str, digest: str, topic: str) -> dict[str, Any]:
    """An ACR ImagePushed event in the Event Grid schema, as ACR sends it."""
    return {
        "id": str(uuid.uuid4()), "topic": topic, "subject": f"{repository}:{tag}",
        "eventType": "Microsoft.ContainerRegistry.ImagePushed", "eventTime": time.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "dataVersion": "1.0", "metadataVersion": "1",
        "data": {"id": str(uuid.uuid4()), "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ"), "action": "push",
                 "target": {"mediaType": "application/vnd.oci.image.index.v1+json", "size": 1000, "digest": digest,
                            "length": 1000, "repository": repository, "tag": tag},
                 "request": {"id": str(uuid.uuid4()), "host": layout.SOURCE_ACR.login_server, "method": "PUT",
                             "useragent": "docker/27"}},
    }


def make_events(app: App, digest: str) -> Showcase:
    """Four events through the webhook: a push the rules copy (planned), a delete (ignored: only pushes are
    copied), a push from a registry no rule names (rejected: not trusted) and a push whose repository is
    markup (rejected: not a repository name)."""
    shown = Showcase()
    source = layout.SOURCE_ACR.resource_id
    planned = pushed_event("aci-helloworld", "latest", digest, source)
    deleted = {**pushed_event("aci-helloworld", "old", digest, source),
               "eventType": "Microsoft.ContainerRegistry.ImageDeleted"}
    untrusted = pushed_event("aci-helloworld", "latest", digest, layout.OTHER_SUB_ACR.resource_id)
    hostile = pushed_event(XSS_REPOSITORY, "latest", digest, source)
    app.post_events([planned, deleted, untrusted, hostile])
    shown.events = {"planned": planned["id"], "ignored": deleted["id"], "untrusted": untrusted["id"],
                    "markup": hostile["id"]}
    deadline = time.monotonic() + WAIT_SECONDS
    while not app.ended(REPLICA_PREFIX):  # the planned import, run by the worker
        if time.monotonic() > deadline:
            raise RuntimeError(f"the replicated import (target {REPLICA_PREFIX}...) did not end")
        time.sleep(0.25)
    return shown
