"""The grammar of one allowlist entry (ALLOWED_SOURCE_REGISTRIES, a credential set's `registries`): a host,
a `*.domain` wildcard, an ACR resource id, or `*`, parsed into a typed `RegistryPattern` when the settings
load. What the allowlists allow or refuse is decided in shared/core/policy.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from shared.core.reference import InvalidReference, canonical_registry_host
from shared.core.resource_ids import RegistryId, parse_registry_id


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
