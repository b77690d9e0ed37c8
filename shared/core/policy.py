"""Who may import what from where: the allowlists and the rules for credential sets, in one place.

Allowlist entries are parsed once, when the settings load (shared/core/allowlist.py), into typed values,
so deciding compares parsed values and cannot raise. Requests (shared/core/request.py), the refresh's tracked
images (shared/refresh/tracked.py) and replication rules (shared/replication/replicate.py) ask the same functions here
(`source_refusal`, `target_refusal`, `credential_refusal`), so the three cannot disagree.

An ACR resource id in a source allowlist allows that registry both when a request names it by
`sourceRegistry` and when a reference names its login server (`<name>.<ACR_LOGIN_SERVER_SUFFIX>`): ACR
names are unique per cloud, so the login server is that registry and no other. Resource ids compare
case-insensitively, as ARM compares them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.core.allowlist import allowed_by
from shared.core.outcome import Problem
from shared.core.redact import Password
from shared.core.reference import ImageReference
from shared.core.resource_ids import RegistryId
from shared.core.settings import Settings


# --- the decisions ------------------------------------------------------------------------------------
def source_refusal(host: str | None, registry: RegistryId | None, settings: Settings) -> str | None:
    """Why a source may not be imported from, or None. `host` is the reference's registry host; with an
    ACR named by resource id (`registry`), its login server is used when `host` is None."""
    suffix = settings.acr_login_server_suffix
    if host is None and registry is not None:
        host = registry.login_server(suffix)
    if allowed_by(settings.source_allowlist, host, registry, suffix):
        return None
    shown = repr(host) if host else repr(registry.name if registry else "?")
    listed = ",".join(settings.allowed_source_registries) or "(empty)"
    return f"registry {shown} is not allowed; ALLOWED_SOURCE_REGISTRIES is {listed}"


def target_refusal(target: RegistryId, settings: Settings) -> str | None:
    if any(target.same_as(allowed) for allowed in settings.allowed_targets):
        return None
    return f"registry {target.name!r} ({target}) is not in ALLOWED_TARGET_REGISTRIES"


def credential_refusal(name: str, host: str | None, settings: Settings) -> str | None:
    """Why credential set `name` may not be sent to `host`: not configured, configured wrongly (the
    setting's problem), or bound to other registries. None when it may."""
    broken = settings.credential_problem(name)
    if broken is not None:
        return f"credential set {name!r} cannot be used: {broken.message}"
    found = settings.credential_set(name)
    if found is None:
        return (f"no credential set named {name!r} is configured "
                f"(SOURCE_CREDENTIALS__{name.upper()}__PASSWORD)")
    if found.allowlist and (host is None or not allowed_by(found.allowlist, host, None,
                                                            settings.acr_login_server_suffix)):
        return f"credential set {name!r} may only be sent to {','.join(found.registries)}, not {host!r}"
    if not found.username:
        return (f"credential set {name!r} has no username (SOURCE_CREDENTIALS__{name.upper()}__USERNAME): "
                f"{USERNAME_RULE}")
    return None


USERNAME_RULE = ("registries take a password or token only with its user (Docker Hub: the account name with a "
                 "personal access token; an ACR token: its name; a service principal: its app id), and ACR's "
                 "import passes both to the source registry; a password alone is not a token")


# --- the request's view -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SourceCredentials:
    """What goes into ImportSource.credentials: always a username with the password (see USERNAME_RULE)."""

    username: str | None
    password: Password


def check_source_matches_registry(source: ImageReference, registry: RegistryId, settings: Settings,
                                  problems: list[Problem]) -> None:
    expected = registry.login_server(settings.acr_login_server_suffix)
    if source.registry != expected:
        problems.append(Problem("source", f"names registry {source.registry!r} but sourceRegistry is "
                                          f"{registry.name!r}; omit the host or use {expected!r}"))


def check_source_allowed(source: ImageReference, source_registry: RegistryId | None, settings: Settings,
                         problems: list[Problem]) -> None:
    host = source_registry.login_server(settings.acr_login_server_suffix) if source_registry else source.registry
    refusal = source_refusal(host, source_registry, settings)
    if refusal:
        problems.append(Problem("sourceRegistry" if source_registry else "source", refusal))


def check_target_allowed(target: RegistryId, settings: Settings, problems: list[Problem]) -> None:
    refusal = target_refusal(target, settings)
    if refusal:
        problems.append(Problem("target", refusal))


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
        if not doc.get("username") or "username" in bad:
            problems.append(Problem("username", f"is required with password: {USERNAME_RULE}"))
            return None
        return SourceCredentials(doc["username"], Password(doc["password"]))
    if not named:
        return None
    if source is None:
        if settings.credential_set(named) is None:
            problems.append(Problem("credential", credential_refusal(named, None, settings) or ""))
        return None
    refusal = credential_refusal(named, source.registry, settings)
    if refusal:
        problems.append(Problem("credential", refusal))
        return None
    found = settings.credential_set(named)
    assert found is not None
    return SourceCredentials(found.username, found.password)
