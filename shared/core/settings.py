"""App settings, read once from the environment into plain data.

Every setting the app reads is named here and nowhere else, so the deployment template and the sample
settings can be checked against this module.

Reading never raises (`read_settings`): every malformed value becomes a `SettingProblem` naming the
setting and the feature that needs it, and the value falls back to its default. The app logs the
problems once at start (shared/app_context.py) and fails the work that needs a broken setting with its
reason; work that does not need it goes on (a bad REFRESH_* setting never stops imports). The CLI and
tests use `load_settings`, which raises SettingsError listing every problem.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, ItemsView, Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from shared.core.allowlist import PatternError, RegistryPattern, parse_registry_pattern
from shared.core.backup import BackupTemplate, BackupTemplateError, parse_backup_template
from shared.core.redact import Password
from shared.core.reference import DOCKER_HUB, InvalidReference, canonical_registry_host
from shared.core.referrers import DEFAULT_CHOICE, ReferrerChoice, parse_setting
from shared.core.resource_ids import RegistryId, parse_registry_id

DEFAULT_ARM_ENDPOINT = "https://management.azure.com"
DEFAULT_ARM_AUDIENCE = "https://management.azure.com"  # sovereign clouds differ from their endpoint
DEFAULT_IMPORT_QUEUE = "acr-import-requests"
DEFAULT_STATUS_TABLE = "importstatus"
# Public registries most platform teams mirror. Any other source (including other ACRs) must be named:
# whoever can write to the queue can otherwise pull anything into your registry.
DEFAULT_ALLOWED_SOURCES = (DOCKER_HUB, "mcr.microsoft.com")
DEFAULT_TRACKED_IMAGES = "tracked-images.json"  # shipped with the app, relative to its root
DEFAULT_REPLICATION_RULES = "replication-rules.json"  # likewise; an empty rule list replicates nothing

CREDENTIAL_PREFIX = "SOURCE_CREDENTIALS__"
CREDENTIAL_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")


# What a setting is needed by. A problem blocks the features that need its setting, and only those.
IMPORTS = "imports"  # every import: requests, and what the refresh and replication enqueue
REFRESH = "refresh"
REPLICATION = "replication"
PRUNE = "prune"  # the daily status clean-up
STORAGE = "storage"  # the status table and the dead-letter queue: without them nothing can be recorded
BACKUP = "backup"  # Force and IfChanged imports, which may move a tag (BACKUP_TAG_TEMPLATE); no feature needs it
OPS = "ops"  # the operator endpoints under /api/ops (read-only)
FEATURE_NEEDS = {
    IMPORTS: (STORAGE, IMPORTS),
    REFRESH: (STORAGE, IMPORTS, REFRESH),
    REPLICATION: (STORAGE, IMPORTS, REPLICATION),
    PRUNE: (STORAGE, PRUNE),
    OPS: (STORAGE, OPS),
}
# OPERATOR_SIGN_IN: how people reach /api/ops. `key`: the host checks a function key; `entra`: App Service
# Authentication signs them in and the app checks that it did (shared/ops/access.py).
SIGN_IN_KEY, SIGN_IN_ENTRA = "key", "entra"
SIGN_IN_MODES = (SIGN_IN_KEY, SIGN_IN_ENTRA)
# OPERATOR_APP_ROLE: an Entra app role's value (no spaces, not starting with '.': Entra's own rule), at most
# this long; App Service Authentication checks groups but not app roles, so the app checks this one itself.
APP_ROLE = re.compile(r"[!-~]{1,120}")

MAX_CONFIG_WAIT_SECONDS = 540.0  # host.json's functionTimeout is 600 s: a wait must end inside it
MAX_QUEUE_DELAY_SECONDS = 7 * 24 * 3600.0  # the longest a queue message can be kept invisible
_QUEUE_NAME = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,52}[a-z0-9]$")  # room for "-rejected"
_TABLE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]{2,62}$")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_NUMBER = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")
KEY_VAULT_REFERENCE = "@Microsoft.KeyVault("


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the setting."""

    def __init__(self, message: str, problems: tuple[SettingProblem, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems


class SettingsUnusable(RuntimeError):
    """Settings so broken that not even the failure can be recorded (the app's storage); names the setting."""


@dataclass(frozen=True)
class SettingProblem:
    """A setting the app cannot use: which one, what is wrong (naming it), and what needs it (a feature
    above, or `credential:<NAME>` for one credential set)."""

    setting: str
    message: str
    needed_by: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class CredentialSet:
    """A named source credential. `registries` limits where it may be sent (empty: anywhere allowed)."""

    name: str
    username: str | None
    password: Password
    registries: tuple[str, ...] = ()
    allowlist: tuple[RegistryPattern, ...] = field(default=(), repr=False)  # `registries` parsed (allowlist.py)


@dataclass(frozen=True)
class Settings:
    target_registry: str | None
    allowed_target_registries: tuple[str, ...]
    allowed_source_registries: tuple[str, ...]  # as configured, for messages; `source_allowlist` decides
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
    arm_request_limits: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # {} : ARM's documented
    registry_endpoints: Mapping[str, str] = field(default_factory=dict)
    tracked_images: str = DEFAULT_TRACKED_IMAGES
    refresh_concurrency: int = 16
    refresh_backoff_seconds: float = 300.0
    refresh_time_budget_seconds: float = 420.0  # well inside the 10-minute Consumption limit
    status_retention_days: float = 30.0
    replication_rules: str = DEFAULT_REPLICATION_RULES
    referrers: ReferrerChoice = DEFAULT_CHOICE  # REFERRERS + REFERRERS_REQUIRED: a request's default
    referrers_max_depth: int = 4
    referrers_max_count: int = 64
    referrers_cosign_tags: bool = True
    default_target: RegistryId | None = None  # TARGET_REGISTRY parsed
    allowed_targets: tuple[RegistryId, ...] = ()  # ALLOWED_TARGET_REGISTRIES parsed
    source_allowlist: tuple[RegistryPattern, ...] = ()  # ALLOWED_SOURCE_REGISTRIES parsed
    problems: tuple[SettingProblem, ...] = ()
    backup_tag_template: BackupTemplate | None = None  # BACKUP_TAG_TEMPLATE parsed; None: no backups
    operator_sign_in: str = SIGN_IN_KEY  # OPERATOR_SIGN_IN: one of SIGN_IN_MODES
    operator_app_role: str = ""  # OPERATOR_APP_ROLE: "" any signed-in person Easy Auth let through
    refresh_schedule: str = ""  # REFRESH_SCHEDULE as set, shown to operators (the host binds and checks it)

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.import_queue}-rejected"

    @property
    def poison_queue(self) -> str:
        return f"{self.import_queue}-poison"

    def credential_set(self, name: str) -> CredentialSet | None:
        return self.credential_sets.get(name.upper())

    def credential_problem(self, name: str) -> SettingProblem | None:
        """The first problem of credential set `name`'s settings (it is left out of credential_sets)."""
        wanted = f"credential:{name.upper()}"
        return next((p for p in self.problems if p.needed_by == wanted), None)

    def problems_for(self, feature: str) -> tuple[SettingProblem, ...]:
        """The problems that stop `feature` (IMPORTS, REFRESH, REPLICATION, PRUNE)."""
        needs = FEATURE_NEEDS[feature]
        return tuple(p for p in self.problems if p.needed_by in needs)

    def secret_values(self) -> tuple[str, ...]:
        """Every configured secret, so scrubbers can remove them from anything that leaves the app."""
        return tuple(c.password.reveal() for c in self.credential_sets.values() if c.password)


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


def _shown(raw: str) -> str:
    return repr(raw if len(raw) <= 80 else raw[:77] + "...")


def _shown_url(raw: str) -> str:
    """A URL for a message: without its query (a SAS signature) and its user:password@."""
    scheme, sep, rest = raw.split("?", 1)[0].partition("://")
    if sep:
        authority, slash, path = rest.partition("/")
        rest = authority.rpartition("@")[2] + slash + path
    return _shown(scheme + sep + rest)


class _Env:
    """The environment being read, collecting a problem per bad setting instead of stopping at the first."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = values
        self.problems: list[SettingProblem] = []

    def get(self, name: str) -> str | None:
        return self.values.get(name)

    def items(self) -> ItemsView[str, str]:
        return self.values.items()

    def problem(self, setting: str, message: str, needed_by: str) -> None:
        self.problems.append(SettingProblem(setting, message, needed_by))


def _text(env: _Env, name: str, default: str = "") -> str:
    raw = env.get(name)
    return raw.strip() if isinstance(raw, str) and raw.strip() else default


def _number(env: _Env, name: str, default: float, minimum: float, maximum: float, needed_by: str, *,
            integer: bool = False) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    text = raw.strip()
    kind = "a whole number" if integer else "a number"
    if not text.isascii() or not _NUMBER.fullmatch(text) or (integer and "." in text):
        env.problem(name, f"{name} must be {kind} (digits{'' if integer else ', optionally .digits'}), "
                          f"got {_shown(raw)}", needed_by)
        return default
    value = float(text)
    if not minimum <= value <= maximum:
        env.problem(name, f"{name} must be between {minimum:g} and {maximum:g}, got {_shown(raw)}", needed_by)
        return default
    return value


def _flag(env: _Env, name: str, needed_by: str, default: bool = False) -> bool:
    raw = (env.get(name) or "").strip().lower() or ("true" if default else "false")
    if raw not in ("true", "false", "1", "0", "yes", "no"):
        env.problem(name, f"{name} must be true or false, got {_shown(raw)}", needed_by)
        return default
    return raw in ("true", "1", "yes")


def _sign_in(env: _Env) -> str:
    """OPERATOR_SIGN_IN. A wrong value falls back to `key` (the host then asks for a function key: never
    more open than meant) and the operator endpoints say which setting is wrong."""
    raw = _text(env, "OPERATOR_SIGN_IN", SIGN_IN_KEY)
    if raw not in SIGN_IN_MODES:
        env.problem("OPERATOR_SIGN_IN", f"OPERATOR_SIGN_IN must be {' or '.join(SIGN_IN_MODES)}, got {_shown(raw)}",
                    OPS)
        return SIGN_IN_KEY
    return raw


def _app_role(env: _Env) -> str:
    """OPERATOR_APP_ROLE. A wrong value stops the operator endpoints (500 naming it) rather than let anyone in."""
    raw = _text(env, "OPERATOR_APP_ROLE")
    if raw and (not APP_ROLE.fullmatch(raw) or raw.startswith(".")):
        env.problem("OPERATOR_APP_ROLE", "OPERATOR_APP_ROLE must be an Entra app role's value: 1-120 printable "
                    f"ASCII characters, no spaces, not starting with '.', got {_shown(raw)}", OPS)
    return raw


def _referrers(env: _Env) -> ReferrerChoice:
    required = _flag(env, "REFERRERS_REQUIRED", IMPORTS)
    choice = parse_setting(_text(env, "REFERRERS", "all"), required)
    if isinstance(choice, str):
        env.problem("REFERRERS", choice, IMPORTS)
        return ReferrerChoice(required=required)
    return choice


def _https_url(env: _Env, name: str, default: str, needed_by: str) -> str:
    """An endpoint the app sends its token to: https, a host, nothing else (no userinfo, query)."""
    raw = _text(env, name, default)
    problem = https_url_problem(raw)
    if problem:
        env.problem(name, f"{name} {problem}, got {_shown_url(raw)}", needed_by)
        return default
    return raw.rstrip("/")


def _location(env: _Env, name: str, default: str, needed_by: str) -> str:
    """A configuration file: a path relative to the app root, or an https:// URL (a blob)."""
    raw = _text(env, name, default)
    if not raw.isprintable():
        env.problem(name, f"{name} has control characters, got {_shown(raw)}", needed_by)
        return default
    if "://" in raw:
        problem = https_url_problem(raw, query=True)
        if problem:  # never echo the query: it may be a SAS signature
            env.problem(name, f"{name} {problem} (or a path in the app), got {_shown_url(raw)}", needed_by)
            return default
    return raw


def https_url_problem(text: str, *, query: bool = False) -> str | None:
    """Why `text` is not an https URL the app may send a token to, or None."""
    if not text.isascii() or not text.isprintable() or " " in text:
        return "must be an https:// URL of printable ASCII"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return "must be an https:// URL with a valid host and port"
    if parts.scheme.lower() != "https":
        return ("must be an https:// URL: over http the app's token would travel in the clear"
                if parts.scheme.lower() == "http" else "must be an https:// URL")
    if not parts.hostname or parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return "must be an https:// URL with a host and no user:password@"
    if port == 0:
        return "must be an https:// URL with a valid port"
    if parts.fragment or (parts.query and not query):
        return "must be an https:// URL without query or fragment"
    return None


def _credential_sets(env: _Env) -> dict[str, CredentialSet]:
    """Credential sets from SOURCE_CREDENTIALS__<NAME>__USERNAME / __PASSWORD / __REGISTRIES. A set with a
    problem is left out, and its problem (needed by `credential:<NAME>`) fails the requests naming it."""
    parts: dict[str, dict[str, str]] = {}
    for key, value in env.items():
        if not key.upper().startswith(CREDENTIAL_PREFIX):
            continue
        name, _, item = key[len(CREDENTIAL_PREFIX):].rpartition("__")
        if not name or item.upper() not in ("USERNAME", "PASSWORD", "REGISTRIES"):
            owner = (name or item).upper()
            env.problem(key, f"{key}: expected {CREDENTIAL_PREFIX}<NAME>__USERNAME, __PASSWORD or __REGISTRIES",
                           f"credential:{owner}")
            parts.setdefault(owner, {})["BROKEN"] = "1"
            continue
        parts.setdefault(name.upper(), {})[item.upper()] = value
    sets = {}
    for name, items in parts.items():
        setting = f"{CREDENTIAL_PREFIX}{name}"
        needed_by = f"credential:{name}"
        if "BROKEN" in items:
            continue
        if not CREDENTIAL_NAME.fullmatch(name):
            env.problem(setting, f"{setting}: a credential set name is 1-64 letters, digits and _", needed_by)
            continue
        password = items.get("PASSWORD") or ""
        if not password:
            env.problem(f"{setting}__PASSWORD", f"{setting}__PASSWORD is missing or empty", needed_by)
            continue
        unresolved = [item for item in ("USERNAME", "PASSWORD")
                      if (items.get(item) or "").strip().lower().startswith(KEY_VAULT_REFERENCE.lower())]
        if unresolved:  # App Service leaves a reference it could not resolve in the setting as its literal text
            env.problem(f"{setting}__{unresolved[0]}", f"{setting}__{unresolved[0]} is an unresolved Key Vault "
                                                       "reference: App Service could not read the secret (check "
                                                       "that it exists and the app's identity has Key Vault Secrets "
                                                       "User)", needed_by)
            continue
        patterns, bad = [], []
        for text in _split(items.get("REGISTRIES")):
            try:
                patterns.append(parse_registry_pattern(text))
            except PatternError as err:
                bad.append(str(err))
        if bad:
            env.problem(f"{setting}__REGISTRIES", f"{setting}__REGISTRIES: {'; '.join(bad)}", needed_by)
            continue
        if items.get("REGISTRIES") is not None and not patterns:
            env.problem(f"{setting}__REGISTRIES", f"{setting}__REGISTRIES is set but names no registry "
                                                     "(remove it to allow any allowed source)", needed_by)
            continue
        sets[name] = CredentialSet(name=name, username=(items.get("USERNAME") or "").strip() or None,
                                   password=Password(password), registries=tuple(p.text for p in patterns),
                                   allowlist=tuple(patterns))
    return sets


def _source_allowlist(env: _Env) -> tuple[RegistryPattern, ...]:
    texts = _split(env.get("ALLOWED_SOURCE_REGISTRIES")) or DEFAULT_ALLOWED_SOURCES
    patterns: list[RegistryPattern] = []
    for text in texts:
        try:
            patterns.append(parse_registry_pattern(text))
        except PatternError as err:
            env.problem("ALLOWED_SOURCE_REGISTRIES", f"ALLOWED_SOURCE_REGISTRIES: {err}", IMPORTS)
    return tuple(patterns)


def _registry_ids(env: _Env, name: str, texts: tuple[str, ...]) -> tuple[RegistryId, ...]:
    found = []
    for text in texts:
        try:
            found.append(parse_registry_id(text))
        except (ValueError, KeyError) as err:
            why = str(err) if isinstance(err, ValueError) else "must be a registry resource id"
            hint = " (targets are named by resource id, never by host or wildcard)" if not text.startswith("/") else ""
            env.problem(name, f"{name}: {_shown(text)} {why}{hint}", IMPORTS)
    return tuple(found)


def parse_endpoints(text: str | None) -> dict[str, str]:
    """`docker.io=https://10.0.0.5:443,mcr.microsoft.com=https://...` -> {host: base URL}."""
    endpoints = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        host, sep, url = part.partition("=")
        if not sep or not host.strip() or not url.strip().startswith(("https://", "http://")):
            raise ValueError(f"{part.strip()!r} is not host=https://endpoint")
        endpoints[host.strip().lower()] = url.strip().rstrip("/")
    return endpoints


def _endpoints(env: _Env) -> dict[str, str]:
    """REGISTRY_ENDPOINTS: where the app's own registry reads go (private networking, the local stack).
    Https only: the app sends registry credentials and its Entra token there."""
    try:
        endpoints = parse_endpoints(env.get("REGISTRY_ENDPOINTS"))
    except ValueError as err:
        env.problem("REGISTRY_ENDPOINTS", f"REGISTRY_ENDPOINTS: {err}", IMPORTS)
        return {}
    bad = []
    for host, url in endpoints.items():
        try:
            canonical_registry_host(host)
        except InvalidReference as err:
            bad.append(f"{_shown(host)} is not a registry host: {err.reason}")
        problem = https_url_problem(url)  # a path is fine: some registries serve /v2/ below a prefix
        if problem:
            bad.append(f"{host}={_shown_url(url)} {problem}")
    if bad:
        env.problem("REGISTRY_ENDPOINTS", f"REGISTRY_ENDPOINTS: {'; '.join(bad)}", IMPORTS)
        return {}
    return endpoints


ARM_LIMIT_KINDS = ("reads", "writes", "deletes")  # ARM's kinds of request, each with its own bucket
_ARM_LIMIT_NUMBER = r"([0-9]{1,6}(?:\.[0-9]{1,3})?)"
_ARM_LIMIT = re.compile(f"({'|'.join(ARM_LIMIT_KINDS)})={_ARM_LIMIT_NUMBER}/{_ARM_LIMIT_NUMBER}")


def _arm_request_limits(env: _Env) -> dict[str, tuple[float, float]]:
    """ARM_REQUEST_LIMITS `reads=250/25,writes=200/10`: the token buckets (size / refill per second) ARM
    gives the app's identity per subscription, which the app paces itself by (shared/azure/arm_budget.py).
    Unset: ARM's documented ones. Kinds not named keep theirs."""
    text = _text(env, "ARM_REQUEST_LIMITS")
    limits: dict[str, tuple[float, float]] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        match = _ARM_LIMIT.fullmatch(part)
        size, refill = (float(match[2]), float(match[3])) if match else (0.0, 0.0)
        if match is None or size < 1 or refill <= 0 or match[1] in limits:
            env.problem("ARM_REQUEST_LIMITS", f"ARM_REQUEST_LIMITS: {_shown(part)} is not <kind>=<bucket size>/"
                                              f"<refill per second> once per kind ({', '.join(ARM_LIMIT_KINDS)}), "
                                              "e.g. reads=250/25,writes=200/10", IMPORTS)
            return {}
        limits[match[1]] = (size, refill)
    return limits


def _backup_tag_template(env: _Env) -> BackupTemplate | None:
    """BACKUP_TAG_TEMPLATE: unset or empty, no backups. A broken one fails the requests that could move a tag
    (Force, IfChanged: needed by BACKUP), never silently moving a tag without the backup that was asked for."""
    raw = env.get("BACKUP_TAG_TEMPLATE")
    if raw is None or not raw.strip():
        return None
    try:
        return parse_backup_template(raw.strip())
    except BackupTemplateError as err:
        env.problem("BACKUP_TAG_TEMPLATE", f"BACKUP_TAG_TEMPLATE {err}, got {_shown(raw)}", BACKUP)
        return None


def _login_server_suffix(env: _Env) -> str:
    raw = _text(env, "ACR_LOGIN_SERVER_SUFFIX", "azurecr.io").lower()
    try:
        normal = canonical_registry_host(raw)
    except InvalidReference as err:
        env.problem("ACR_LOGIN_SERVER_SUFFIX", f"ACR_LOGIN_SERVER_SUFFIX must be a DNS domain like azurecr.io: "
                                                  f"{err.reason}", IMPORTS)
        return "azurecr.io"
    if ":" in normal or "." not in normal or normal.replace(".", "").isdigit():
        env.problem("ACR_LOGIN_SERVER_SUFFIX", f"ACR_LOGIN_SERVER_SUFFIX must be a DNS domain like azurecr.io, "
                                                  f"got {_shown(raw)}", IMPORTS)
        return "azurecr.io"
    return normal


def _name(env: _Env, name: str, default: str, pattern: re.Pattern[str], rule: str) -> str:
    raw = _text(env, name, default)
    if not pattern.fullmatch(raw) or (name == "IMPORT_STATUS_TABLE" and raw.lower() == "tables"):
        env.problem(name, f"{name} must be {rule}, got {_shown(raw)}", STORAGE)  # where failures are recorded
        return default
    return raw


def read_settings(env: Mapping[str, str] | None = None, *,
                  check_storage: Callable[[Mapping[str, str]], tuple[str, str] | None] | None = None) -> Settings:
    """Every setting, never raising: problems are in `Settings.problems`, each naming its setting.
    `check_storage` (shared/azure/storage.py `settings_problem`, passed in by shared/app_context.py) also
    checks the AzureWebJobsStorage settings (the app's own status table and queues)."""
    return _read_settings(_Env(os.environ if env is None else env), check_storage)


def _read_settings(env: _Env,
                   check_storage: Callable[[Mapping[str, str]], tuple[str, str] | None] | None) -> Settings:
    target = _text(env, "TARGET_REGISTRY") or None
    default_target = next(iter(_registry_ids(env, "TARGET_REGISTRY", (target,))), None) if target else None
    explicit_targets = _split(env.get("ALLOWED_TARGET_REGISTRIES"))
    if "*" in explicit_targets:
        env.problem("ALLOWED_TARGET_REGISTRIES", "ALLOWED_TARGET_REGISTRIES: '*' is not allowed: name every "
                                                    "target registry by resource id", IMPORTS)
    allowed_targets = _registry_ids(env, "ALLOWED_TARGET_REGISTRIES",
                                    tuple(t for t in explicit_targets if t != "*")) if explicit_targets else \
        ((default_target,) if default_target else ())
    source_allowlist = _source_allowlist(env)
    client_id = _text(env, "AZURE_CLIENT_ID") or None
    if client_id and not _GUID.fullmatch(client_id):
        env.problem("AZURE_CLIENT_ID", f"AZURE_CLIENT_ID must be the client id (a GUID) of the app's "
                                          f"user-assigned identity, got {_shown(client_id)}", IMPORTS)
        client_id = None
    if check_storage is not None:
        problem = check_storage(env.values)
        if problem:
            env.problem(problem[0], problem[1], STORAGE)
    wait = MAX_CONFIG_WAIT_SECONDS
    settings = Settings(
        target_registry=str(default_target) if default_target else None,
        allowed_target_registries=tuple(str(t) for t in allowed_targets),
        allowed_source_registries=tuple(p.text for p in source_allowlist),
        credential_sets=_credential_sets(env),
        allow_inline_credentials=_flag(env, "ALLOW_INLINE_CREDENTIALS", IMPORTS),
        azure_client_id=client_id,
        arm_endpoint=_https_url(env, "ARM_ENDPOINT", DEFAULT_ARM_ENDPOINT, IMPORTS),
        arm_audience=_https_url(env, "ARM_AUDIENCE", DEFAULT_ARM_AUDIENCE, IMPORTS),
        import_queue=_name(env, "IMPORT_QUEUE", DEFAULT_IMPORT_QUEUE, _QUEUE_NAME,
                           "a queue name of 3-54 lowercase letters, digits and single inner hyphens (the app adds "
                           "-rejected and -poison)"),
        status_table=_name(env, "IMPORT_STATUS_TABLE", DEFAULT_STATUS_TABLE, _TABLE_NAME,
                           "a table name of 3-63 letters and digits starting with a letter"),
        acr_login_server_suffix=_login_server_suffix(env),
        max_attempts=int(_number(env, "IMPORT_MAX_ATTEMPTS", 6, 1, 100, IMPORTS, integer=True)),
        retry_base_seconds=_number(env, "IMPORT_RETRY_BASE_SECONDS", 15.0, 0, MAX_QUEUE_DELAY_SECONDS, IMPORTS),
        retry_max_seconds=_number(env, "IMPORT_RETRY_MAX_SECONDS", 900.0, 0, MAX_QUEUE_DELAY_SECONDS, IMPORTS),
        authorization_grace_seconds=_number(env, "AUTHORIZATION_GRACE_SECONDS", 600.0, 0, 86400, IMPORTS),
        poll_interval_seconds=_number(env, "IMPORT_POLL_INTERVAL_SECONDS", 0.5, 0.05, 60, IMPORTS),
        import_wait_seconds=_number(env, "IMPORT_WAIT_SECONDS", 20.0, 0, wait, IMPORTS),
        import_deadline_seconds=_number(env, "IMPORT_DEADLINE_SECONDS", 7200.0, 1, MAX_QUEUE_DELAY_SECONDS, IMPORTS),
        arm_request_limits=_arm_request_limits(env),
        registry_endpoints=_endpoints(env),
        tracked_images=_location(env, "TRACKED_IMAGES", DEFAULT_TRACKED_IMAGES, REFRESH),
        refresh_concurrency=int(_number(env, "REFRESH_CONCURRENCY", 16, 1, 256, REFRESH, integer=True)),
        refresh_backoff_seconds=_number(env, "REFRESH_BACKOFF_SECONDS", 300.0, 0, MAX_QUEUE_DELAY_SECONDS, REFRESH),
        refresh_time_budget_seconds=_number(env, "REFRESH_TIME_BUDGET_SECONDS", 420.0, 1, wait, REFRESH),
        status_retention_days=_number(env, "STATUS_RETENTION_DAYS", 30.0, 0, 36500, PRUNE),
        replication_rules=_location(env, "REPLICATION_RULES", DEFAULT_REPLICATION_RULES, REPLICATION),
        referrers=_referrers(env),
        referrers_max_depth=int(_number(env, "REFERRERS_MAX_DEPTH", 4, 1, 16, IMPORTS, integer=True)),
        referrers_max_count=int(_number(env, "REFERRERS_MAX_COUNT", 64, 1, 1000, IMPORTS, integer=True)),
        referrers_cosign_tags=_flag(env, "REFERRERS_COSIGN_TAGS", IMPORTS, default=True),
        default_target=default_target,
        allowed_targets=allowed_targets,
        source_allowlist=source_allowlist,
        backup_tag_template=_backup_tag_template(env),
        operator_sign_in=_sign_in(env),
        operator_app_role=_app_role(env),
        refresh_schedule=_text(env, "REFRESH_SCHEDULE")[:200],
    )
    return _with_problems(settings, tuple(env.problems))


def _with_problems(settings: Settings, problems: tuple[SettingProblem, ...]) -> Settings:
    return replace(settings, problems=problems) if problems else settings


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """The settings, or SettingsError naming every malformed one (the CLI and tests: fail at once)."""
    settings = read_settings(env)
    if settings.problems:
        raise SettingsError("; ".join(p.message for p in settings.problems), settings.problems)
    return settings
