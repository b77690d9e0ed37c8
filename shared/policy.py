"""Who may import what from where: the allowlists and the rules for credential sets, in one place.

Allowlist entries are parsed once, when the settings load (`parse_registry_pattern`), into typed values,
so deciding compares parsed values and cannot raise. Requests (shared/request.py), the refresh's tracked
images (shared/tracked.py) and replication rules (shared/replication.py) ask the same functions here
(`source_refusal`, `target_refusal`, `credential_refusal`), so the three cannot disagree.

An ACR resource id in a source allowlist allows that registry both when a request names it by
`sourceRegistry` and when a reference names its login server (`<name>.<ACR_LOGIN_SERVER_SUFFIX>`): ACR
names are unique per cloud, so the login server is that registry and no other. Resource ids compare
case-insensitively, as ARM compares them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from shared.outcome import Problem
from shared.redact import Password
from shared.reference import ImageReference, InvalidReference, canonical_registry_host
from shared.resource_ids import RegistryId, parse_registry_id

if TYPE_CHECKING:
    from shared.settings import Settings


class PatternKind(StrEnum):
    ANY = "any"  # `*`
    HOST = "host"  # `registry.contoso.com[:port]`
    WILDCARD = "wildcard"  # `*.azurecr.io`: exactly one more DNS label
    REGISTRY = "registry"  # an ACR resource id


@dataclass(frozen=True)
class RegistryPattern:
    """One allowlist entry, parsed. `host` is the canonical host[:port] (HOST) or the domain[:port] after
    `*.` (WILDCARD); `registry` is set for REGISTRY."""

    text: str
    kind: PatternKind
    host: str = ""
    registry: RegistryId | None = None

    def allows(self, host: str | None, registry: RegistryId | None, suffix: str) -> bool:
        """Whether a source at `host` (canonical, or None when unknown) / ACR `registry` is covered."""
        if self.kind is PatternKind.ANY:
            return True
        if self.kind is PatternKind.REGISTRY:
            assert self.registry is not None
            return (registry is not None and registry.same_as(self.registry)) or \
                (host is not None and host == self.registry.login_server(suffix))
        if host is None:
            return False
        if self.kind is PatternKind.HOST:
            return host == self.host
        name, port = _split_port(host)
        domain, domain_port = _split_port(self.host)
        return port == domain_port and name.endswith(f".{domain}") and "." not in name[: -len(domain) - 1]

    def __str__(self) -> str:
        return self.text


class PatternError(ValueError):
    """An allowlist entry that is not a host, a `*.domain` wildcard, an ACR resource id or `*`."""


def parse_registry_pattern(text: str) -> RegistryPattern:
    """The typed form of one allowlist entry (already stripped), or PatternError saying what is wrong."""
    if not isinstance(text, str) or not text:
        raise PatternError("is empty")
    if not text.isascii() or not text.isprintable():
        raise PatternError(f"{_quote(text)} has characters a registry host or resource id cannot have "
                           "(only printable ASCII)")
    if text == "*":
        return RegistryPattern(text, PatternKind.ANY)
    if text.startswith("/"):
        try:
            registry = parse_registry_id(text)
        except (ValueError, KeyError) as err:
            reason = str(err) if isinstance(err, ValueError) else "is not a registry resource id"
            raise PatternError(f"{_quote(text)} {reason}") from None
        return RegistryPattern(str(registry), PatternKind.REGISTRY, registry=registry)
    if text.startswith("*."):
        domain = text[2:]
        if "*" in domain:
            raise PatternError(f"{_quote(text)}: a wildcard is only one leading '*.' label, as in *.azurecr.io")
        try:
            domain = canonical_registry_host(domain)
        except InvalidReference as err:
            raise PatternError(f"{_quote(text)}: {err.reason}") from None
        name, _ = _split_port(domain)
        if name.startswith("[") or name.replace(".", "").isdigit() or "." not in name:
            raise PatternError(f"{_quote(text)}: a wildcard needs a DNS domain of at least two labels, "
                               "as in *.azurecr.io")
        return RegistryPattern(text, PatternKind.WILDCARD, host=domain)
    if "*" in text:
        raise PatternError(f"{_quote(text)}: a wildcard is only one leading '*.' label, as in *.azurecr.io, "
                           "or '*' alone for any registry")
    try:
        return RegistryPattern(text, PatternKind.HOST, host=canonical_registry_host(text))
    except InvalidReference as err:
        raise PatternError(f"{_quote(text)} is not a registry host, *.domain wildcard or ACR resource id: "
                           f"{err.reason}") from None


def _split_port(host: str) -> tuple[str, str | None]:
    if host.startswith("["):
        close = host.index("]")
        return host[: close + 1], (host[close + 2:] or None)
    name, separator, port = host.partition(":")
    return name, (port if separator else None)


def _quote(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:77] + "...")


def _canonical(host: str) -> str | None:
    try:
        return canonical_registry_host(host)
    except InvalidReference:
        return None


def allowed_by(patterns: tuple[RegistryPattern, ...], host: str | None, registry: RegistryId | None,
               suffix: str) -> bool:
    canonical = _canonical(host) if host is not None else None
    return any(p.allows(canonical, registry, suffix) for p in patterns)


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
