"""ACR resource ids: the one way requests, settings and the engine name a registry in Azure."""

from __future__ import annotations

import re
from dataclasses import dataclass

REGISTRY_TYPE = "Microsoft.ContainerRegistry/registries"
_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_REGISTRY_NAME = re.compile(r"^[a-zA-Z0-9]{5,50}$")
EXAMPLE = "/subscriptions/<guid>/resourceGroups/<group>/providers/Microsoft.ContainerRegistry/registries/<name>"


@dataclass(frozen=True)
class RegistryId:
    subscription: str
    resource_group: str
    name: str

    def __str__(self) -> str:
        return (f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
                f"/providers/{REGISTRY_TYPE}/{self.name}")

    def login_server(self, suffix: str = "azurecr.io") -> str:
        return f"{self.name.lower()}.{suffix}"

    def same_as(self, other: RegistryId) -> bool:
        """ARM resource ids compare case-insensitively."""
        return str(self).lower() == str(other).lower()


def parse_registry_id(text: str) -> RegistryId:
    """A registry resource id, or ValueError saying what is wrong with it."""
    from azure.mgmt.core.tools import is_valid_resource_id, parse_resource_id  # pulls in azure.core: defer

    text = text.strip()
    if not is_valid_resource_id(text):
        raise ValueError(f"must be a registry resource id like {EXAMPLE}")
    parts = parse_resource_id(text)  # a subscription or resource group id is "valid" too: keys may be missing
    if f"{parts.get('namespace')}/{parts.get('type')}".lower() != REGISTRY_TYPE.lower() or parts.get("children") \
            or not parts.get("resource_group"):
        raise ValueError(f"must be a container registry resource id ({REGISTRY_TYPE}), like {EXAMPLE}")
    if not _GUID.match(str(parts.get("subscription"))):
        raise ValueError("has a subscription that is not a GUID")
    if not _REGISTRY_NAME.match(str(parts.get("name"))):
        raise ValueError("has a registry name that is not 5-50 letters or digits")
    return RegistryId(str(parts["subscription"]).lower(), str(parts["resource_group"]), str(parts["name"]))
