"""Azure RBAC as far as ACR needs it: built-in role actions, scope inheritance, wildcard actions."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

IMPORT_ACTION = "Microsoft.ContainerRegistry/registries/importImage/action"
PULL_ACTION = "Microsoft.ContainerRegistry/registries/pull/read"
PUSH_ACTION = "Microsoft.ContainerRegistry/registries/push/write"
DELETE_ACTION = "Microsoft.ContainerRegistry/registries/artifacts/delete"
READ_ACTION = "Microsoft.ContainerRegistry/registries/read"

# Data actions are folded into actions here; the distinction does not change any answer we give.
BUILTIN_ROLES: dict[str, tuple[str, ...]] = {
    "Owner": ("*",),
    "Contributor": ("*",),
    "Reader": ("*/read",),
    "AcrPull": (PULL_ACTION,),
    "AcrPush": (PULL_ACTION, PUSH_ACTION),
    "AcrDelete": (DELETE_ACTION,),
}


@dataclass(frozen=True)
class RoleAssignment:
    principal_id: str
    role: str
    scope: str

    def to_json(self) -> dict:
        return {"principalId": self.principal_id, "role": self.role, "scope": self.scope}


def scope_covers(assignment_scope: str, resource_id: str) -> bool:
    """An assignment at a scope applies to everything beneath it (case-insensitive, like ARM ids)."""
    outer = assignment_scope.rstrip("/").lower()
    inner = resource_id.rstrip("/").lower()
    return inner == outer or inner.startswith(outer + "/")


def role_allows(actions: tuple[str, ...], action: str) -> bool:
    return any(fnmatchcase(action.lower(), pattern.lower()) for pattern in actions)
