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
from dev.azure_standin.roles import BUILTIN_ROLES, RoleAssignment, role_allows, scope_covers

FAULT_TARGETS = ("import", "operation", "poll")
DEFAULT_SETTINGS: dict[str, Any] = {
    "retry_after": 1,          # seconds, on the importImage 202 and every operation poll
    "location": "westeurope",
    "manifest_limit": 50,      # ACR refuses imports with more manifests than this
    "azure_async_operation": False,  # real ACR answers with Location only; True adds Azure-AsyncOperation
    "data_plane": "registry",  # or "memory": the in-memory catalog, for tests without registries
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
            self.custom_roles: dict[str, tuple[str, ...]] = {}
            self.settings = {**DEFAULT_SETTINGS, "data_plane": self.default_data_plane}
            self.faults: dict[str, list[dict[str, Any]]] = {t: [] for t in FAULT_TARGETS}
            self.authorization_outage: tuple[float, float] | None = None  # (start, end) epoch seconds
            self.requests: list[dict[str, Any]] = []
            self.operations: dict[str, Operation] = {}

    # --- roles -----------------------------------------------------------------------------
    def add_assignment(self, principal_id: str, role: str, scope: str) -> RoleAssignment:
        if role not in BUILTIN_ROLES and role not in self.custom_roles:
            raise ValueError(f"unknown role {role!r}")
        assignment = RoleAssignment(principal_id, role, scope)
        with self._lock:
            if assignment not in self.assignments:
                self.assignments.append(assignment)
        return assignment

    def remove_assignment(self, principal_id: str, role: str | None, scope: str | None) -> int:
        """Remove matching assignments (None matches any); the count removed."""
        with self._lock:
            keep = [a for a in self.assignments
                    if not (a.principal_id == principal_id and role in (None, a.role)
                            and (scope is None or a.scope.lower() == scope.lower()))]
            removed = len(self.assignments) - len(keep)
            self.assignments = keep
        return removed

    def define_role(self, name: str, actions: list[str]) -> None:
        with self._lock:
            self.custom_roles[name] = tuple(actions)

    def _role_actions(self, role: str) -> tuple[str, ...]:
        return BUILTIN_ROLES.get(role) or self.custom_roles.get(role, ())

    def is_allowed(self, principal_id: str, action: str, resource_id: str) -> bool:
        with self._lock:
            return any(a.principal_id == principal_id and scope_covers(a.scope, resource_id)
                       and role_allows(self._role_actions(a.role), action) for a in self.assignments)

    def has_any_role(self, principal_id: str, resource_id: str) -> bool:
        """Whether the principal holds any role at, above or below this scope (what ARM reads need here)."""
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
        with self._lock:
            self.settings.update(changes)
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
