"""Who may import what from where: allowlists and the rules for credentials.

Called only from request validation, so every entry point (queue, CLI, HTTP, refresh, events) obeys it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.outcome import Problem
from shared.reference import ImageReference, registry_host_matches
from shared.resource_ids import RegistryId
from shared.settings import Settings


@dataclass(frozen=True, repr=False)
class SourceCredentials:
    """What goes into ImportSource.credentials; a password alone is a token."""

    username: str | None
    password: str

    def __repr__(self) -> str:
        return f"SourceCredentials(username={self.username!r}, password='***')"


def _source_host(source: ImageReference, source_registry: RegistryId | None, settings: Settings) -> str:
    return source_registry.login_server(settings.acr_login_server_suffix) if source_registry else source.registry


def check_source_matches_registry(source: ImageReference, registry: RegistryId, settings: Settings,
                                  problems: list[Problem]) -> None:
    expected = registry.login_server(settings.acr_login_server_suffix)
    if source.registry != expected:
        problems.append(Problem("source", f"names registry {source.registry!r} but sourceRegistry is "
                                          f"{registry.name!r}; omit the host or use {expected!r}"))


def check_source_allowed(source: ImageReference, source_registry: RegistryId | None, settings: Settings,
                         problems: list[Problem]) -> None:
    host = _source_host(source, source_registry, settings)
    allowed = settings.allowed_source_registries
    by_id = source_registry and any(a.lower() == str(source_registry).lower() for a in allowed)
    if not by_id and not any(a == "*" or registry_host_matches(host, a) for a in allowed):
        field = "sourceRegistry" if source_registry else "source"
        problems.append(Problem(field, f"registry {host!r} is not allowed; ALLOWED_SOURCE_REGISTRIES is "
                                       f"{','.join(allowed)}"))


def check_target_allowed(target: RegistryId, settings: Settings, problems: list[Problem]) -> None:
    if not any(a.lower() == str(target).lower() for a in settings.allowed_target_registries):
        problems.append(Problem("target", f"registry {target.name!r} ({target}) is not in "
                                          "ALLOWED_TARGET_REGISTRIES"))


def source_credentials(doc: dict[str, Any], source: ImageReference | None, source_registry: RegistryId | None,
                       settings: Settings, bad: set[str], problems: list[Problem]) -> SourceCredentials | None:
    """The credentials to send for this source, from a named set or (only if allowed) inline."""
    inline = [f for f in ("username", "password") if f in doc]
    named = doc.get("credential") if "credential" not in bad else None
    if inline and not settings.allow_inline_credentials:
        problems.append(Problem(inline[-1], "inline credentials are refused; name a credential set in "
                                            "'credential' (or set ALLOW_INLINE_CREDENTIALS=true)"))
        return None
    if source_registry and (inline or "credential" in doc):
        problems.append(Problem("credential" if "credential" in doc else inline[-1],
                                "cannot be combined with sourceRegistry: a registry named by resource id is "
                                "imported with the app's managed identity, never with credentials"))
        return None
    if inline and named:
        problems.append(Problem("credential", "give either a credential set or inline credentials, not both"))
        return None
    if inline:
        if "password" not in doc or "password" in bad:
            problems.append(Problem("password", "is required with username"))
            return None
        return SourceCredentials(doc.get("username") if "username" not in bad else None, doc["password"])
    if not named:
        return None
    found = settings.credential_set(named)
    if found is None:
        problems.append(Problem("credential", f"no credential set named {named!r} is configured "
                                              f"(SOURCE_CREDENTIALS__{named.upper()}__PASSWORD)"))
        return None
    if source and found.registries and not any(registry_host_matches(source.registry, r) for r in found.registries):
        problems.append(Problem("credential", f"credential set {named!r} may only be sent to "
                                              f"{','.join(found.registries)}, not {source.registry!r}"))
        return None
    return SourceCredentials(found.username, found.password)
