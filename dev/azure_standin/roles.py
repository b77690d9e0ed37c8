"""Azure RBAC as ARM evaluates it, for the roles this project meets: role definitions with actions,
notActions, dataActions and notDataActions; scope inheritance; ARM's `*` wildcard.

Sources followed:
- Built-in definitions (ids, actions, notActions) as published in azure-docs
  `articles/role-based-access-control/built-in-roles/containers.md` and `general.md`/`privileged.md`
  (Owner, Contributor, Reader, AcrPull, AcrPush, AcrDelete).
- Custom roles: the app's own, read from the template (`infra/modules/roles.bicep`) with the parser in
  `infra/check.py`, so the stand-in grants exactly what a deployment grants.
- Evaluation (azure-docs `role-based-access-control/role-definitions.md`): a role permits an action when
  it matches one of its `actions` and none of its `notActions` (dataActions likewise, separately);
  matching is case-insensitive and `*` matches any run of characters, in any position
  (`Microsoft.ContainerRegistry/*`, `*/read`). An assignment applies at its scope and every scope below.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from dev import layout

IMPORT_ACTION = "Microsoft.ContainerRegistry/registries/importImage/action"
PULL_ACTION = "Microsoft.ContainerRegistry/registries/pull/read"
PUSH_ACTION = "Microsoft.ContainerRegistry/registries/push/write"
DELETE_ACTION = "Microsoft.ContainerRegistry/registries/artifacts/delete"
READ_ACTION = "Microsoft.ContainerRegistry/registries/read"

# The template's custom roles, by the roleName the template gives them (without its ` (${appName})` suffix).
IMPORT_ROLE = layout.IMPORT_ROLE
SOURCE_ROLE = layout.SOURCE_ROLE
ROLES_TEMPLATE = Path(__file__).resolve().parents[2] / "infra" / "modules" / "roles.bicep"


@dataclass(frozen=True)
class RoleDefinition:
    """One role definition's single permission block, as ARM stores it."""

    name: str
    id: str
    actions: tuple[str, ...] = ()
    not_actions: tuple[str, ...] = ()
    data_actions: tuple[str, ...] = ()
    not_data_actions: tuple[str, ...] = ()
    builtin: bool = True

    def permits(self, action: str, *, data: bool = False) -> bool:
        granted, denied = ((self.data_actions, self.not_data_actions) if data
                           else (self.actions, self.not_actions))
        return (any(action_matches(p, action) for p in granted)
                and not any(action_matches(p, action) for p in denied))

    def to_json(self) -> dict:
        return {"roleName": self.name, "name": self.id, "type": "BuiltInRole" if self.builtin else "CustomRole",
                "permissions": [{"actions": list(self.actions), "notActions": list(self.not_actions),
                                 "dataActions": list(self.data_actions),
                                 "notDataActions": list(self.not_data_actions)}]}


# Contributor's notActions as published (azure-docs built-in-roles/privileged.md, 2025).
_CONTRIBUTOR_NOT_ACTIONS = (
    "Microsoft.Authorization/*/Delete", "Microsoft.Authorization/*/Write",
    "Microsoft.Authorization/elevateAccess/Action", "Microsoft.Blueprint/blueprintAssignments/write",
    "Microsoft.Blueprint/blueprintAssignments/delete", "Microsoft.Compute/galleries/share/action",
    "Microsoft.Purview/consents/write", "Microsoft.Purview/consents/delete",
    "Microsoft.Resources/deploymentStacks/manageDenySetting/action",
    "Microsoft.Subscription/cancel/action", "Microsoft.Subscription/enable/action",
)

BUILTIN_DEFINITIONS: tuple[RoleDefinition, ...] = (
    RoleDefinition("Owner", "8e3af657-a8ff-443c-a75c-2fe8c4bcb635", ("*",)),
    RoleDefinition("Contributor", "b24988ac-6180-42a0-ab88-20f7382dd24c", ("*",), _CONTRIBUTOR_NOT_ACTIONS),
    RoleDefinition("Reader", "acdd72a7-3385-48ef-bd42-f606fba81ae7", ("*/read",)),
    RoleDefinition("AcrPull", "7f951dda-4ed3-4680-a7ca-43fe172d538d", (PULL_ACTION,)),
    RoleDefinition("AcrPush", "8311e382-0749-4cb8-b61a-304f252e45ec", (PULL_ACTION, PUSH_ACTION)),
    RoleDefinition("AcrDelete", "c2f4ef07-c644-48eb-af81-4b1b4947fb11", (DELETE_ACTION,)),
    # Its control-plane actions as /work/shared/REFERENCE.md and infra/modules/roles.bicep describe them.
    RoleDefinition("Container Registry Data Importer and Data Reader", "577a9874-89fd-4f24-9dbd-b5034d0ad23a",
                   (IMPORT_ACTION, READ_ACTION, PULL_ACTION)),
)
BUILTIN_ROLES: dict[str, RoleDefinition] = {r.name: r for r in BUILTIN_DEFINITIONS}


@lru_cache(maxsize=256)
def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.I)


def action_matches(pattern: str, action: str) -> bool:
    """ARM's match: case-insensitive, `*` is any run of characters (no other metacharacters)."""
    return _pattern(pattern).fullmatch(action) is not None


def template_roles(path: Path = ROLES_TEMPLATE) -> tuple[RoleDefinition, ...]:
    """The custom roles the template deploys, exactly as written there (actions, notActions, data...)."""
    from infra.check import custom_roles  # the template's one parser; infra/ imports only the stdlib

    text = path.read_text(encoding="utf-8")
    found = []
    for symbol, lists in custom_roles(text).items():
        declared = re.search(rf"resource\s+{symbol}\s+'[^']+'\s*=\s*\{{.*?roleName:\s*'([^']+)'", text, re.S)
        name = re.sub(r"\s*\(\$\{[^}]*\}\)\s*$", "", declared.group(1)) if declared else symbol
        guid = f"{symbol}-local"
        found.append(RoleDefinition(name, guid, tuple(lists["actions"]), tuple(lists["notActions"]),
                                    tuple(lists["dataActions"]), tuple(lists["notDataActions"]), builtin=False))
    return tuple(found)


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
    return outer == "" or inner == outer or inner.startswith(outer + "/")


@dataclass
class RoleCatalog:
    """Role definitions by name (built-ins, the template's, and any a test defines); also found by id."""

    roles: dict[str, RoleDefinition] = field(default_factory=dict)

    @classmethod
    def initial(cls) -> RoleCatalog:
        return cls({r.name: r for r in (*BUILTIN_DEFINITIONS, *template_roles())})

    def resolve(self, name_or_id: str) -> RoleDefinition | None:
        key = name_or_id.rsplit("/", 1)[-1].lower()
        return next((r for r in self.roles.values() if key in (r.name.lower(), r.id.lower())), None)
