"""The deployment's guard, since no Bicep compiler runs here: the template against the code.

Five promises are checked by reading text: every setting the app code reads is set by the template and
listed in local.settings.sample.json; the custom roles grant only what import needs (and only known
built-in roles are assigned); no connection uses a key; every metric, dimension, log event and JSON field the
workbook and the alert rules query is one the code emits, and the monitoring is deployed and wired (the
workbook to Application Insights, every alert rule to the action group parameter); App Service Authentication
leaves exactly the key-protected machine paths to function keys (infra/monitoring.py reads both from the code).
Run `python -m infra.check` from the repository root; it prints each finding and exits 1 when there is one.
"""

from __future__ import annotations

import ast
import functools
import json
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from infra import monitoring
from infra.monitoring import block as _block

REPO = Path(__file__).resolve().parent.parent

# Where the deployed app reads settings: the bindings and the core package (cli/ runs on a laptop).
CODE_GLOBS = ("function_app.py", "shared/**/*.py")

# Read by the code but deliberately not app settings, with the reason. Keys are names or glob patterns
# (an f-string name like f"{prefix}__clientId" reads as "*__clientId").
NOT_SET_BY_TEMPLATE = {
    "AzureWebJobsStorage": "the connection-string form carries a key; Azure uses the identity-based __ settings",
    "REQUESTS_CA_BUNDLE": "a TLS trust override for tests; Azure uses the system trust store",
    "CURL_CA_BUNDLE": "a TLS trust override for tests; Azure uses the system trust store",
    "IDENTITY_ENDPOINT": "set by the platform when the app has a managed identity; read to name it in messages",
    "MSI_ENDPOINT": "set by older platforms when the app has a managed identity; read to name it in messages",
    "NO_PROXY": "the proxy's exceptions, for an app behind a proxy (HTTPS_PROXY): the network's, not the template's",
    "no_proxy": "the proxy's exceptions, for an app behind a proxy (https_proxy): the network's, not the template's",
    "ARM_REQUEST_LIMITS": "ARM's documented buckets are the default; set by hand only where a subscription's differ",
}
NOT_IN_SAMPLE = {
    "*__*ServiceUri": "identity-based storage: the sample uses the connection string (Azurite)",
    "*__accountName": "identity-based storage: the sample uses the connection string (Azurite)",
    "*__clientId": "identity-based storage: the sample uses the connection string (Azurite)",
    "REQUESTS_CA_BUNDLE": NOT_SET_BY_TEMPLATE["REQUESTS_CA_BUNDLE"],
    "CURL_CA_BUNDLE": NOT_SET_BY_TEMPLATE["CURL_CA_BUNDLE"],
    "IDENTITY_ENDPOINT": NOT_SET_BY_TEMPLATE["IDENTITY_ENDPOINT"],
    "MSI_ENDPOINT": NOT_SET_BY_TEMPLATE["MSI_ENDPOINT"],
    "NO_PROXY": NOT_SET_BY_TEMPLATE["NO_PROXY"],
    "no_proxy": NOT_SET_BY_TEMPLATE["no_proxy"],
}
# A read satisfied by another form the template sets instead.
ALTERNATIVES = {"*__accountName": "*__*ServiceUri"}

# Custom roles by their symbolic name in the template, and every action each may hold.
ROLE_ALLOWLISTS = {
    "importRole": frozenset({
        "Microsoft.ContainerRegistry/registries/importImage/action",
        "Microsoft.ContainerRegistry/registries/read",
        "Microsoft.ContainerRegistry/registries/pull/read",
    }),
    "sourceRole": frozenset({
        "Microsoft.ContainerRegistry/registries/read",
        "Microsoft.ContainerRegistry/registries/pull/read",
    }),
}
# Built-in roles the template may assign (on the app's own storage, vault and Application Insights).
BUILT_IN_ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
}

KEY_PATTERNS = {
    r"listKeys\s*\(|\.listKeys\b": "reads account keys (listKeys)",
    r"listConnectionStrings": "reads connection strings",
    r"AccountKey\s*=": "a connection string with AccountKey",
    r"SharedAccessKey\s*=": "a connection string with SharedAccessKey",
    r"DefaultEndpointsProtocol\s*=": "a storage connection string",
    r"StorageAccountConnectionString": "deployment storage authenticated with a connection string",
    r"InstrumentationKey\s*=": "an Application Insights instrumentation key in a setting",
}
REQUIRED_KEYLESS = {
    r"allowSharedKeyAccess:\s*false": "the storage account must refuse shared keys (allowSharedKeyAccess: false)",
    r"disableLocalAuth:\s*true": "Application Insights must refuse key-based ingestion (DisableLocalAuth: true)",
    r"enableRbacAuthorization:\s*true": "Key Vault must use Azure RBAC (enableRbacAuthorization: true)",
}
KEYED_SETTINGS = ("AzureWebJobsStorage", "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING")

SETTING_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
ENV_RECEIVERS = ("env", "environ", "environment")
GUID = re.compile(r"'([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})'")
APP_SETTING = re.compile(r"\{\s*name:\s*'([^']+)'\s*[,\n]\s*value:\s*('(?:[^'\\]|\\.)*'|[^\n}]+)")
BINDING_EXPRESSION = re.compile(r"%([A-Za-z][A-Za-z0-9_]*)%")


@dataclass(frozen=True)
class Finding:
    """One broken promise: which rule, about what, and what to do."""

    rule: str
    subject: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.subject}: {self.message}"


# --- what the code reads ------------------------------------------------------------------------------

def _is_env(node: ast.AST) -> bool:
    if isinstance(node, ast.Name):
        return node.id in ENV_RECEIVERS
    return isinstance(node, ast.Attribute) and node.attr == "environ"


def _name_of(node: ast.AST, constants: Mapping[str, str]) -> str | None:
    """A setting name from a literal or a module constant, or a glob from an f-string (holes become `*`)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "*" for v in node.values)
    return None


def _module_constants(tree: ast.Module) -> dict[str, str]:
    """Module-level `NAME = "text"`, so `env.get(CONNECTION_SETTING)` counts as a read of its value."""
    return {target.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
            for target in node.targets if isinstance(target, ast.Name)}


def _reads_in(tree: ast.Module, bindings: bool) -> Iterable[tuple[str, int]]:
    """Names read from the environment; with `bindings`, also `%NAME%` binding expressions."""
    constants = _module_constants(tree)
    for node in ast.walk(tree):
        name = None
        if isinstance(node, ast.Call):
            func = node.func
            reads_env = isinstance(func, ast.Attribute) and (
                func.attr == "getenv" or (func.attr in ("get", "pop") and _is_env(func.value)))
            if reads_env and node.args:
                name = _name_of(node.args[0], constants)
            elif any(_is_env(a) for a in node.args):  # helpers such as _number(env, "NAME", ...)
                for arg in node.args:
                    candidate = _name_of(arg, constants)
                    if candidate and SETTING_NAME.match(candidate) and candidate.upper() == candidate:
                        yield candidate, node.lineno
        elif isinstance(node, ast.Subscript) and _is_env(node.value):
            name = _name_of(node.slice, constants)
        elif bindings and isinstance(node, ast.Constant) and isinstance(node.value, str):
            for match in BINDING_EXPRESSION.finditer(node.value):
                yield match.group(1), node.lineno
        if name and re.match(r"^[A-Za-z*][A-Za-z0-9_*]*$", name):
            yield name, node.lineno


def settings_read_by_code(repo: Path = REPO) -> dict[str, list[str]]:
    """Every setting name (or glob, for computed names) the deployed code reads, with where."""
    found: dict[str, list[str]] = {}
    for pattern in CODE_GLOBS:
        for path in sorted(repo.glob(pattern)):
            where = str(path.relative_to(repo))
            for name, line in _reads_in_source(path.read_text(encoding="utf-8"), where):
                found.setdefault(name, []).append(f"{where}:{line}")
    return found


@functools.lru_cache(maxsize=512)
def _reads_in_source(source: str, where: str) -> tuple[tuple[str, int], ...]:
    """The reads in one file's text; cached, as the tests check many copies of the same code."""
    return tuple(_reads_in(ast.parse(source, filename=where), bindings="azure.functions" in source))


# --- what the template sets ---------------------------------------------------------------------------

def template_app_settings(bicep: str) -> dict[str, str]:
    """App settings `{ name: '...', value: ... }` in the template; `${...}` in a name reads as `*`."""
    return {re.sub(r"\$\{[^}]*\}", "*", m.group(1)): m.group(2).strip() for m in APP_SETTING.finditer(bicep)}


def _covered(name: str, available: Iterable[str]) -> bool:
    """A read is covered when a set name matches it (either side may be a glob)."""
    return any(fnmatchcase(name, have) or fnmatchcase(have, name) for have in available)


def _strings_in(array_text: str) -> list[str]:
    return re.findall(r"'([^']*)'", array_text)


def custom_roles(bicep: str) -> dict[str, dict[str, list[str]]]:
    """Custom role definitions by symbolic name: their actions, dataActions and notActions."""
    roles = {}
    for match in re.finditer(r"resource\s+(\w+)\s+'Microsoft\.Authorization/roleDefinitions@[^']+'\s*=", bicep):
        body = _block(bicep, match.end())
        lists = {}
        for key in ("actions", "dataActions", "notActions", "notDataActions"):
            found = re.search(rf"\b{key}:\s*\[(.*?)\]", body, re.S)
            lists[key] = _strings_in(found.group(1)) if found else []
        roles[match.group(1)] = lists
    return roles


# --- the checks ---------------------------------------------------------------------------------------

def check_settings(reads: dict[str, list[str]], template: dict[str, str], sample: Iterable[str]) -> list[Finding]:
    findings = []
    sample = list(sample)
    for name, where in sorted(reads.items()):
        if name not in NOT_SET_BY_TEMPLATE and not _covered(name, template) and not (
                name in ALTERNATIVES and _covered(ALTERNATIVES[name], template)):
            findings.append(Finding("setting-missing-from-template", name,
                                    f"read at {', '.join(where)} but infra/main.bicep does not set it; add it to "
                                    "the app settings (or to NOT_SET_BY_TEMPLATE with the reason)"))
        if name not in NOT_IN_SAMPLE and not _covered(name, sample):
            findings.append(Finding("setting-missing-from-sample", name,
                                    f"read at {', '.join(where)} but local.settings.sample.json does not list it"))
    return findings


def check_set_once(bicep: str) -> list[Finding]:
    """An app setting written twice: ARM keeps one of them, and the template reads as setting both."""
    names = [re.sub(r"\$\{[^}]*\}", "*", m.group(1)) for m in APP_SETTING.finditer(bicep)]
    return [Finding("setting-set-twice", name, "infra/main.bicep sets this app setting more than once; keep one")
            for name in sorted({n for n in names if names.count(n) > 1})]


def check_roles(bicep: str) -> list[Finding]:
    findings = []
    roles = custom_roles(bicep)
    for symbol in ROLE_ALLOWLISTS:
        if symbol not in roles:
            findings.append(Finding("role-missing", symbol, "the custom role is not defined in the template"))
    for symbol, lists in roles.items():
        allowed = ROLE_ALLOWLISTS.get(symbol)
        if allowed is None:
            findings.append(Finding("role-unknown", symbol, "a custom role the checker has no allowlist for"))
            continue
        for action in lists["actions"]:
            if action not in allowed:
                findings.append(Finding("role-grants-too-much", symbol, f"{action!r} is more than import needs "
                                        f"(allowed: {', '.join(sorted(allowed))})"))
        for action in lists["dataActions"]:
            findings.append(Finding("role-grants-too-much", symbol, f"data action {action!r} is not needed"))
    for guid in sorted(set(GUID.findall(bicep))):
        if guid.lower() not in BUILT_IN_ROLES:
            findings.append(Finding("role-unknown-built-in", guid,
                                    "a role definition id that is not on the allowlist of built-in roles "
                                    f"({', '.join(BUILT_IN_ROLES.values())})"))
    return findings


def check_keyless(bicep: str, template: dict[str, str]) -> list[Finding]:
    findings = []
    for pattern, what in KEY_PATTERNS.items():
        for match in re.finditer(pattern, bicep):
            line = bicep.count("\n", 0, match.start()) + 1
            findings.append(Finding("connection-uses-key", f"line {line}", what))
    for pattern, what in REQUIRED_KEYLESS.items():
        if not re.search(pattern, bicep, re.I):
            findings.append(Finding("connection-uses-key", pattern.split(":")[0].replace("\\", ""), what))
    for name in KEYED_SETTINGS:
        if name in template:
            findings.append(Finding("connection-uses-key", name, "a connection-string setting; use the identity-based "
                                                                 f"{name}__* settings"))
    credential = template.get("AzureWebJobsStorage__credential", "")
    if credential.strip("'") != "managedidentity":
        findings.append(Finding("connection-uses-key", "AzureWebJobsStorage__credential",
                                "must be 'managedidentity' so the host connects with the app's identity"))
    for name, value in template.items():
        if name.endswith("__PASSWORD") and not value.startswith("'@Microsoft.KeyVault("):
            findings.append(Finding("connection-uses-key", name, "a password must be a Key Vault reference"))
    return findings


def sample_settings(path: Path) -> list[str]:
    return list(json.loads(path.read_text(encoding="utf-8")).get("Values", {}))


def check(repo: Path = REPO, infra: Path | None = None, sample: Path | None = None) -> list[Finding]:
    """Every finding for the template in `infra` (default: the repository's) against the code in `repo`."""
    infra = infra or repo / "infra"
    sample = sample or repo / "local.settings.sample.json"
    main = (infra / "main.bicep").read_text(encoding="utf-8")
    everything = "\n".join([main, *(p.read_text(encoding="utf-8") for p in sorted(infra.glob("modules/*.bicep")))])
    template = template_app_settings(main)
    return [*check_settings(settings_read_by_code(repo), template, sample_settings(sample)),
            *check_set_once(main), *check_roles(everything), *check_keyless(everything, template),
            *check_monitoring(repo, infra, main)]


ACTION_GROUP_PARAMETER = "alertActionGroupId"


def check_monitoring(repo: Path, infra: Path, main: str) -> list[Finding]:
    """The workbook's and alerts' names against the code's telemetry, their wiring, and the sign-in's paths."""
    problems = [*monitoring.check_queries(monitoring.emitted(repo), monitoring.queries(infra)),
                *monitoring.check_wiring(main, infra, ACTION_GROUP_PARAMETER),
                *monitoring.check_sign_in(main, repo)]
    return [Finding(p.rule, p.subject, p.message) for p in problems]


def main() -> int:
    findings = check()
    for finding in findings:
        print(finding)
    if not findings:
        print("infra: every setting set, roles within their allowlists, no keys, monitoring queries what the app "
              "emits, sign-in leaves the machine API to keys")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
