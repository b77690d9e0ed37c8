"""The stand-in's mutable state: role assignments, settings, scripted faults, recorded requests and
import operations. One lock guards it all; every handler thread goes through these methods."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from dev import layout
from dev.azure_standin.errors import ArmError
from dev.azure_standin.roles import RoleAssignment, RoleCatalog, RoleDefinition, scope_covers
from dev.azure_standin.throttling import DEFAULT_LIMITS, Throttle, check_limits

FAULT_TARGETS = ("import", "operation", "poll")
DEFAULT_SETTINGS: dict[str, Any] = {
    "retry_after": 1,          # seconds, on the importImage 202 and every operation poll
    "location": "westeurope",
    "manifest_limit": 50,      # ACR refuses imports with more manifests than this
    "azure_async_operation": False,  # real ACR answers with Location only; True adds Azure-AsyncOperation
    "data_plane": "registry",  # or "memory": the in-memory catalog, for tests without registries
    "throttling": True,        # ARM's per-principal token buckets (dev/azure_standin/throttling.py)
    "throttle_limits": DEFAULT_LIMITS,  # {"reads"|"writes"|"deletes": [bucket size, refill per second]}
    "referrers_page_size": None,  # the login servers' referrers API: None, one page; n, pages of n with `Link`
}


@dataclass
class Operation:
    """One importImage LRO. `status` follows ARM's async-operation vocabulary."""

    id: str
    registry_id: str
    subscription: str
    status: str = "InProgress"
    pending: list[str] = field(default_factory=list)  # digests still being copied, for the 202 body
    error: ArmError | None = None
    started: float = field(default_factory=time.time)
    ended: float | None = None
    digest: str | None = None


class World:
    def __init__(self, data_plane: str = "registry") -> None:
        self._lock = threading.Lock()
        self.default_data_plane = data_plane
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.assignments = [RoleAssignment(*a) for a in layout.INITIAL_ROLE_ASSIGNMENTS]
            self.catalog = RoleCatalog.initial()
            self.settings = {**DEFAULT_SETTINGS, "data_plane": self.default_data_plane}
            self.faults: dict[str, list[dict[str, Any]]] = {t: [] for t in FAULT_TARGETS}
            self.authorization_outage: tuple[float, float] | None = None  # (start, end) epoch seconds
            self.requests: list[dict[str, Any]] = []
            self.operations: dict[str, Operation] = {}
            self.throttle = Throttle(DEFAULT_LIMITS)

    # --- roles -----------------------------------------------------------------------------
    def add_assignment(self, principal_id: str, role: str, scope: str) -> RoleAssignment:
        """Assign a role by name or by definition id (a GUID or a full roleDefinitions id)."""
        with self._lock:
            definition = self.catalog.resolve(role)
            if definition is None:
                raise ValueError(f"unknown role {role!r}")
            assignment = RoleAssignment(principal_id, definition.name, scope)
            if assignment not in self.assignments:
                self.assignments.append(assignment)
        return assignment

    def remove_assignment(self, principal_id: str, role: str | None, scope: str | None) -> int:
        """Remove matching assignments (None matches any); the count removed."""
        with self._lock:
            name = None
            if role is not None:
                definition = self.catalog.resolve(role)
                name = definition.name if definition else role
            keep = [a for a in self.assignments
                    if not (a.principal_id == principal_id and name in (None, a.role)
                            and (scope is None or a.scope.lower() == scope.lower()))]
            removed = len(self.assignments) - len(keep)
            self.assignments = keep
        return removed

    def define_role(self, name: str, actions: list[str], not_actions: list[str] | None = None,
                    data_actions: list[str] | None = None, not_data_actions: list[str] | None = None) -> None:
        """A custom role, as `az role definition create` would make it."""
        definition = RoleDefinition(name, str(uuid.uuid5(uuid.NAMESPACE_URL, f"local-role:{name}")), tuple(actions),
                                    tuple(not_actions or ()), tuple(data_actions or ()),
                                    tuple(not_data_actions or ()), builtin=False)
        with self._lock:
            self.catalog.roles[name] = definition

    def role_definitions(self) -> list[dict]:
        with self._lock:
            return [r.to_json() for r in self.catalog.roles.values()]

    def is_allowed(self, principal_id: str, action: str, resource_id: str, *, data: bool = False) -> bool:
        """ARM's access check: some assignment at or above `resource_id` whose role permits `action`
        (an action, or with `data` a data action)."""
        with self._lock:
            for a in self.assignments:
                if a.principal_id != principal_id or not scope_covers(a.scope, resource_id):
                    continue
                definition = self.catalog.resolve(a.role)
                if definition is not None and definition.permits(action, data=data):
                    return True
        return False

    def has_any_role(self, principal_id: str, resource_id: str) -> bool:
        """Whether the principal holds any role at, above or below this scope (ARM lists a subscription
        to every principal with an assignment in it)."""
        with self._lock:
            return any(a.principal_id == principal_id
                       and (scope_covers(a.scope, resource_id) or scope_covers(resource_id, a.scope))
                       for a in self.assignments)

    # --- faults and settings --------------------------------------------------------------
    def add_faults(self, target: str, rules: list[dict[str, Any]]) -> None:
        if target not in FAULT_TARGETS:
            raise ValueError(f"fault target must be one of {FAULT_TARGETS}")
        with self._lock:
            self.faults[target].extend(rules)

    def next_fault(self, target: str) -> dict[str, Any] | None:
        with self._lock:
            return self.faults[target].pop(0) if self.faults[target] else None

    def set_authorization_outage(self, seconds: float, start: float | None = None) -> None:
        begin = time.time() if start is None else start
        with self._lock:
            self.authorization_outage = (begin, begin + seconds)

    def in_authorization_outage(self) -> bool:
        with self._lock:
            window = self.authorization_outage
        return window is not None and window[0] <= time.time() < window[1]

    def update_settings(self, changes: dict[str, Any]) -> dict[str, Any]:
        unknown = set(changes) - set(DEFAULT_SETTINGS)
        if unknown:
            raise ValueError(f"unknown settings: {sorted(unknown)}")
        if changes.get("data_plane", "registry") not in ("registry", "memory"):
            raise ValueError("data_plane must be 'registry' or 'memory'")
        page = changes.get("referrers_page_size")
        if page is not None and (not isinstance(page, int) or isinstance(page, bool) or page < 1):
            raise ValueError("referrers_page_size must be a positive integer or null")
        if "throttle_limits" in changes:
            changes = {**changes, "throttle_limits": check_limits(changes["throttle_limits"])}
        with self._lock:
            self.settings.update(changes)
            if "throttle_limits" in changes or "throttling" in changes:
                self.throttle = Throttle(self.settings["throttle_limits"])  # full buckets at the new rates
            return dict(self.settings)

    def setting(self, name: str) -> Any:
        with self._lock:
            return self.settings[name]

    # --- requests -------------------------------------------------------------------------
    def record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(entry)

    def recorded(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.requests)

    def clear_recorded(self) -> None:
        with self._lock:
            self.requests.clear()

    # --- operations -----------------------------------------------------------------------
    def new_operation(self, registry_id: str, subscription: str) -> Operation:
        op = Operation(id=f"registries-{uuid.uuid4()}", registry_id=registry_id, subscription=subscription)
        with self._lock:
            self.operations[op.id] = op
        return op

    def operation(self, op_id: str) -> Operation | None:
        with self._lock:
            return self.operations.get(op_id)

    def update_operation(self, op: Operation, **changes: Any) -> None:
        with self._lock:
            for name, value in changes.items():
                setattr(op, name, value)
