"""A small client for the stand-in's `/_control` endpoint, for tests, benchmarks and the demo."""

from __future__ import annotations

from typing import Any

import requests

from dev import layout


class StandinControl:
    def __init__(self, base_url: str = layout.CONTROL_ENDPOINT, timeout: float = 10) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False  # else a machine-wide REQUESTS_CA_BUNDLE overrides `verify`
        self.session.verify = str(layout.CA_CERT)

    def _call(self, method: str, name: str, body: Any = None) -> Any:
        response = self.session.request(method, f"{self.base_url}/{name}", json=body, timeout=self.timeout)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} /_control/{name}: {response.status_code} {response.text}")
        return response.json() if response.content else None

    def health(self) -> dict:
        return self._call("GET", "health")

    def reset(self) -> None:
        """Initial roles, settings, no faults, no recorded requests or operations."""
        self._call("POST", "reset")

    def requests(self, kind: str | None = "arm") -> list[dict]:
        """Recorded requests, oldest first; kind is "arm", "identity", "acr" or None for all."""
        return [r for r in self._call("GET", "requests") if kind is None or r["kind"] == kind]

    def clear_requests(self) -> None:
        self._call("DELETE", "requests")

    def role_assignments(self) -> list[dict]:
        return self._call("GET", "role-assignments")

    def add_role_assignment(self, principal_id: str, role: str, scope: str) -> dict:
        return self._call("POST", "role-assignments", {"principalId": principal_id, "role": role, "scope": scope})

    def remove_role_assignment(self, principal_id: str, role: str | None = None, scope: str | None = None) -> int:
        """Remove the principal's assignments matching role and scope (None matches any)."""
        body = {"principalId": principal_id, "role": role, "scope": scope}
        return self._call("DELETE", "role-assignments", body)["removed"]

    def define_role(self, name: str, actions: list[str], not_actions: list[str] | None = None,
                    data_actions: list[str] | None = None, not_data_actions: list[str] | None = None) -> None:
        """A custom role (ARM's wildcards and notActions apply), assignable by name."""
        self._call("POST", "role-definitions", {"name": name, "actions": actions, "notActions": not_actions or [],
                                                "dataActions": data_actions or [],
                                                "notDataActions": not_data_actions or []})

    def role_definitions(self) -> list[dict]:
        """Every role the stand-in knows: built-ins by their well-known ids, the template's, the tests'."""
        return self._call("GET", "role-definitions")

    def throttling(self, enabled: bool = True, *, reads: tuple[float, float] | None = None,
                   writes: tuple[float, float] | None = None, deletes: tuple[float, float] | None = None) -> dict:
        """ARM throttling on or off, or other [bucket size, refill per second] per kind (ARM's when not
        given: reads 250/25, writes 200/10, deletes 200/10). Buckets start full again. `reset()` restores it."""
        limits = {k: list(v) for k, v in (("reads", reads), ("writes", writes), ("deletes", deletes)) if v}
        return self.update_settings(throttling=enabled, throttle_limits=limits)

    def settings(self) -> dict:
        return self._call("GET", "settings")

    def update_settings(self, **changes: Any) -> dict:
        """retry_after (s), location, manifest_limit, azure_async_operation (bool), data_plane,
        throttling (bool), throttle_limits ({"reads": [bucket, refill/s], ...}), referrers_page_size (None: the
        login servers' referrers API answers in one page; n: pages of n with a `Link`)."""
        return self._call("PUT", "settings", changes)

    def add_faults(self, on: str, *rules: dict) -> None:
        """Rules consumed one per call, in order. on="import" (the POST): {"status": 429, "retry_after": 1},
        {"status": 500}, optional "code"/"message". on="operation" (the copy): {"fail": "copy_blobs"},
        {"fail": {"code", "message"}}, {"hang": True}, {"delay": seconds}; keys combine."""
        self._call("POST", "faults", {"on": on, "rules": list(rules)})

    def authorization_outage(self, seconds: float, start: float | None = None) -> None:
        """importImage answers 403 AuthorizationFailed for `seconds` from `start` (default now), as
        while a new role assignment propagates."""
        self._call("POST", "authorization-outage", {"seconds": seconds, "start": start})

    def operations(self) -> list[dict]:
        return self._call("GET", "operations")

    def put_image(self, ref: str, digest: str, manifests: list[str] | None = None) -> None:
        """Memory data plane only: make `host/repo:tag` (or `@digest`) exist with these manifests."""
        self._call("PUT", "images", {"ref": ref, "digest": digest, "manifests": manifests})

    def subscribe_webhook(self, topic: str, endpoint: str, *, name: str | None = None,
                          event_types: list[str] | None = None) -> dict:
        """An Event Grid subscription on a registry's topic delivering to a webhook; the stand-in makes the
        validation handshake first and refuses the subscription (RuntimeError) when it fails."""
        return self._call("POST", "event-subscriptions", {"topic": topic, "endpointType": "WebHook",
                                                          "endpoint": endpoint, "name": name,
                                                          "includedEventTypes": event_types})

    def subscribe_queue(self, topic: str, queue: str, *, name: str | None = None,
                        event_types: list[str] | None = None) -> dict:
        """An Event Grid subscription writing each event as plain JSON onto an Azurite queue."""
        return self._call("POST", "event-subscriptions", {"topic": topic, "endpointType": "StorageQueue",
                                                          "queue": queue, "name": name,
                                                          "includedEventTypes": event_types})

    def event_subscriptions(self) -> list[dict]:
        return self._call("GET", "event-subscriptions")

    def unsubscribe(self, name: str | None = None) -> int:
        """Remove one subscription, or all of them."""
        return self._call("DELETE", "event-subscriptions", {"name": name})["removed"]

    def event_deliveries(self) -> dict:
        """{"pending": n, "published": [events raised], "deliveries": [{subscription, eventId, eventType,
        subject, attempts: [HTTP status...], done}]}"""
        return self._call("GET", "event-deliveries")

    def clear_event_log(self) -> None:
        self._call("DELETE", "event-deliveries")
