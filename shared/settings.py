"""App settings, read once from the environment into plain data.

Every setting the app reads is named here and nowhere else, so the deployment template and the sample
settings can be checked against this module.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_ARM_ENDPOINT = "https://management.azure.com"
DEFAULT_ARM_AUDIENCE = "https://management.azure.com"  # sovereign clouds differ from their endpoint
DEFAULT_IMPORT_QUEUE = "acr-import-requests"
DEFAULT_STATUS_TABLE = "importstatus"
# Public registries most platform teams mirror. Any other source (including other ACRs) must be named:
# whoever can write to the queue can otherwise pull anything into your registry.
DEFAULT_ALLOWED_SOURCES = ("docker.io", "mcr.microsoft.com")
DEFAULT_TRACKED_IMAGES = "tracked-images.json"  # shipped with the app, relative to its root
DEFAULT_REPLICATION_RULES = "replication-rules.json"  # likewise; an empty rule list replicates nothing

CREDENTIAL_PREFIX = "SOURCE_CREDENTIALS__"
CREDENTIAL_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the setting."""


@dataclass(frozen=True, repr=False)
class CredentialSet:
    """A named source credential. `registries` limits where it may be sent (empty: anywhere allowed)."""

    name: str
    username: str | None
    password: str
    registries: tuple[str, ...] = ()

    def __repr__(self) -> str:  # never show the secret, even in a traceback
        return f"CredentialSet(name={self.name!r}, registries={self.registries!r})"


@dataclass(frozen=True)
class Settings:
    target_registry: str | None
    allowed_target_registries: tuple[str, ...]
    allowed_source_registries: tuple[str, ...]
    credential_sets: Mapping[str, CredentialSet] = field(repr=False)
    allow_inline_credentials: bool = False
    azure_client_id: str | None = None
    arm_endpoint: str = DEFAULT_ARM_ENDPOINT
    arm_audience: str = DEFAULT_ARM_AUDIENCE
    import_queue: str = DEFAULT_IMPORT_QUEUE
    status_table: str = DEFAULT_STATUS_TABLE
    acr_login_server_suffix: str = "azurecr.io"
    max_attempts: int = 6
    retry_base_seconds: float = 15.0
    retry_max_seconds: float = 900.0
    authorization_grace_seconds: float = 600.0
    poll_interval_seconds: float = 0.5
    import_wait_seconds: float = 20.0
    import_deadline_seconds: float = 7200.0
    registry_endpoints: Mapping[str, str] = field(default_factory=dict)
    tracked_images: str = DEFAULT_TRACKED_IMAGES
    refresh_concurrency: int = 16
    refresh_backoff_seconds: float = 300.0
    refresh_time_budget_seconds: float = 420.0  # well inside the 10-minute Consumption limit
    status_retention_days: float = 30.0
    replication_rules: str = DEFAULT_REPLICATION_RULES

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.import_queue}-rejected"

    @property
    def poison_queue(self) -> str:
        return f"{self.import_queue}-poison"

    def credential_set(self, name: str) -> CredentialSet | None:
        return self.credential_sets.get(name.upper())

    def secret_values(self) -> tuple[str, ...]:
        """Every configured secret, so scrubbers can remove them from anything that leaves the app."""
        return tuple(c.password for c in self.credential_sets.values() if c.password)


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


def _number(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {raw!r}")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = (env.get(name) or "false").strip().lower()
    if raw not in ("true", "false", "1", "0", "yes", "no"):
        raise SettingsError(f"{name} must be true or false, got {raw!r}")
    return raw in ("true", "1", "yes")


def credential_sets_from(env: Mapping[str, str]) -> dict[str, CredentialSet]:
    """Credential sets from SOURCE_CREDENTIALS__<NAME>__USERNAME / __PASSWORD / __REGISTRIES."""
    parts: dict[str, dict[str, str]] = {}
    for key, value in env.items():
        if not key.upper().startswith(CREDENTIAL_PREFIX):
            continue
        name, _, item = key[len(CREDENTIAL_PREFIX):].rpartition("__")
        if not name or item.upper() not in ("USERNAME", "PASSWORD", "REGISTRIES"):
            raise SettingsError(f"{key}: expected {CREDENTIAL_PREFIX}<NAME>__USERNAME, __PASSWORD or __REGISTRIES")
        parts.setdefault(name.upper(), {})[item.upper()] = value
    sets = {}
    for name, items in parts.items():
        if not CREDENTIAL_NAME.match(name):
            raise SettingsError(f"{CREDENTIAL_PREFIX}{name}: a credential set name is letters, digits and _")
        if not items.get("PASSWORD"):
            raise SettingsError(f"{CREDENTIAL_PREFIX}{name}__PASSWORD is missing or empty")
        sets[name] = CredentialSet(name=name, username=items.get("USERNAME") or None,
                                   password=items["PASSWORD"], registries=_split(items.get("REGISTRIES")))
    return sets


def _check_registry_pattern(setting: str, pattern: str) -> None:
    """`*` allows any host; otherwise a host[:port] or `*.domain`, or (sources) an ACR resource id."""
    from shared.reference import InvalidReference, registry_host_matches

    if pattern == "*" or pattern.lower().startswith("/subscriptions/"):
        return
    try:
        registry_host_matches("example.invalid", pattern)
    except InvalidReference as err:
        raise SettingsError(f"{setting}: {pattern!r} is not a registry host or pattern: {err.reason}") from None


def _endpoints(env: Mapping[str, str]) -> dict[str, str]:
    """REGISTRY_ENDPOINTS: where the app's own registry reads go (private networking, the local stack)."""
    from shared.registry_client import parse_endpoints

    try:
        return parse_endpoints(env.get("REGISTRY_ENDPOINTS"))
    except ValueError as err:
        raise SettingsError(f"REGISTRY_ENDPOINTS: {err}") from None


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    target = (env.get("TARGET_REGISTRY") or "").strip() or None
    allowed_targets = _split(env.get("ALLOWED_TARGET_REGISTRIES")) or ((target,) if target else ())
    allowed_sources = _split(env.get("ALLOWED_SOURCE_REGISTRIES")) or DEFAULT_ALLOWED_SOURCES
    for pattern in allowed_sources:
        _check_registry_pattern("ALLOWED_SOURCE_REGISTRIES", pattern)
    credential_sets = credential_sets_from(env)
    for credential in credential_sets.values():
        for pattern in credential.registries:
            _check_registry_pattern(f"{CREDENTIAL_PREFIX}{credential.name}__REGISTRIES", pattern)
    return Settings(
        target_registry=target,
        allowed_target_registries=allowed_targets,
        allowed_source_registries=allowed_sources,
        credential_sets=credential_sets,
        allow_inline_credentials=_flag(env, "ALLOW_INLINE_CREDENTIALS"),
        azure_client_id=(env.get("AZURE_CLIENT_ID") or "").strip() or None,
        arm_endpoint=(env.get("ARM_ENDPOINT") or DEFAULT_ARM_ENDPOINT).rstrip("/"),
        arm_audience=(env.get("ARM_AUDIENCE") or DEFAULT_ARM_AUDIENCE).rstrip("/"),
        import_queue=(env.get("IMPORT_QUEUE") or DEFAULT_IMPORT_QUEUE).strip(),
        status_table=(env.get("IMPORT_STATUS_TABLE") or DEFAULT_STATUS_TABLE).strip(),
        acr_login_server_suffix=(env.get("ACR_LOGIN_SERVER_SUFFIX") or "azurecr.io").strip().lower(),
        max_attempts=int(_number(env, "IMPORT_MAX_ATTEMPTS", 6, 1)),
        retry_base_seconds=_number(env, "IMPORT_RETRY_BASE_SECONDS", 15.0, 0),
        retry_max_seconds=_number(env, "IMPORT_RETRY_MAX_SECONDS", 900.0, 0),
        authorization_grace_seconds=_number(env, "AUTHORIZATION_GRACE_SECONDS", 600.0, 0),
        poll_interval_seconds=_number(env, "IMPORT_POLL_INTERVAL_SECONDS", 0.5, 0.05),
        import_wait_seconds=_number(env, "IMPORT_WAIT_SECONDS", 20.0, 0),
        import_deadline_seconds=_number(env, "IMPORT_DEADLINE_SECONDS", 7200.0, 1),
        registry_endpoints=_endpoints(env),
        tracked_images=(env.get("TRACKED_IMAGES") or DEFAULT_TRACKED_IMAGES).strip(),
        refresh_concurrency=int(_number(env, "REFRESH_CONCURRENCY", 16, 1)),
        refresh_backoff_seconds=_number(env, "REFRESH_BACKOFF_SECONDS", 300.0, 0),
        refresh_time_budget_seconds=_number(env, "REFRESH_TIME_BUDGET_SECONDS", 420.0, 1),
        status_retention_days=_number(env, "STATUS_RETENTION_DAYS", 30.0, 0),
        replication_rules=(env.get("REPLICATION_RULES") or DEFAULT_REPLICATION_RULES).strip(),
    )
