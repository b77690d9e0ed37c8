"""Hostile configuration: every setting the app reads, written wrong every way we could think of, and the
allowlists written every way the docs show them.

Promises checked here:
- reading settings never raises; each malformed value is reported once, naming the setting;
- a request that needs a broken setting ends `failed` with that reason (worker and runner), never raises,
  never reaches the poison queue; settings only other features need do not stop imports;
- requests, the refresh's tracked images and replication rules decide sources, targets and credential
  sets alike (one table through all three);
- configuration blobs are read over https only, with the app's identity honouring AZURE_CLIENT_ID, and the
  read is bounded (size, redirects).
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from dev import layout
from dev.app_settings import local_app_settings
from shared.azure.storage import settings_problem
from shared.core import allowlist, policy
from shared.core.outcome import State
from shared.core.request import ImportRequest, parse_request
from shared.core.settings import (
    BACKUP,
    IMPORTS,
    OPS,
    PRUNE,
    REFRESH,
    REPLICATION,
    STORAGE,
    SettingsError,
    load_settings,
    read_settings,
)
from shared.refresh.tracked import TrackedImage, parse_entry
from shared.replication.replicate import ReplicationConfigError, parse_rules

REPO = Path(__file__).resolve().parents[2]
BASE = {k: v for k, v in local_app_settings().items()}
SOURCE, TARGET, OTHER = layout.SOURCE_ACR, layout.TARGET_ACR, layout.OTHER_SUB_ACR
GUID = "11111111-1111-4111-8111-111111111111"
STORAGE_ACCOUNT_ID = f"/subscriptions/{GUID}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/acct"
IDENTITY_ID = (f"/subscriptions/{GUID}/resourceGroups/rg/providers/Microsoft.ManagedIdentity/"
               "userAssignedIdentities/app-id")
PLANTED = "planted-secret-9f3e1d"  # a credential-set password: must never appear in a report

# --- every setting, malformed ---------------------------------------------------------------------------
NOT_NUMBERS = ["many", "nan", "inf", "-inf", "1e3", "1_0", "0x10", "\uff16", "\u0661\u0662", "1,5", "5 s",
               "\u200b5", "1" + "0" * 400, "--1", "+5", "0.", ".5", "\x005"]
NUMBERS = {  # name: (feature, integer, a value below the minimum, a value above the maximum)
    "IMPORT_MAX_ATTEMPTS": (IMPORTS, True, "0", "101"),
    "IMPORT_RETRY_BASE_SECONDS": (IMPORTS, False, "-1", "604801"),
    "IMPORT_RETRY_MAX_SECONDS": (IMPORTS, False, "-0.5", "999999999"),
    "AUTHORIZATION_GRACE_SECONDS": (IMPORTS, False, "-1", "86401"),
    "IMPORT_POLL_INTERVAL_SECONDS": (IMPORTS, False, "0.01", "61"),
    "IMPORT_WAIT_SECONDS": (IMPORTS, False, "-3", "541"),
    "IMPORT_DEADLINE_SECONDS": (IMPORTS, False, "0", "604801"),
    "REFRESH_CONCURRENCY": (REFRESH, True, "0", "257"),
    "REFRESH_BACKOFF_SECONDS": (REFRESH, False, "-1", "604801"),
    "REFRESH_TIME_BUDGET_SECONDS": (REFRESH, False, "0", "600"),
    "STATUS_RETENTION_DAYS": (PRUNE, False, "-1", "36501"),
    "REFERRERS_MAX_DEPTH": (IMPORTS, True, "0", "17"),
    "REFERRERS_MAX_COUNT": (IMPORTS, True, "0", "1001"),
}
BAD_HOST_PATTERNS = ["*.io", "a.*.io", "**.azurecr.io", "*.*.io", "*azurecr.io", "*.", "docker.io/library",
                     "https://docker.io", "bad host", "d\u00f3cker.io", "docker.io\x00", "reg.io:99999", "reg.io:",
                     "reg.io:08", "[::1", "*.10.0.0.1", "-reg.io", "reg..io", "/subscriptions/not-a-guid",
                     STORAGE_ACCOUNT_ID, SOURCE.resource_id + "/replications/x", "\u202ereg.io", "a" * 300 + ".io"]
BAD_REGISTRY_IDS = ["myregistry.azurecr.io", "*", "*.azurecr.io", f"/subscriptions/{GUID}", STORAGE_ACCOUNT_ID,
                    SOURCE.resource_id.replace(GUID, "not-a-guid"),
                    SOURCE.resource_id.replace("mysourceregistry", "ab"),
                    SOURCE.resource_id + "/replications/westeurope", SOURCE.resource_id.replace("my", "m\u00fd"),
                    "https://myregistry.azurecr.io", "myregistry", "/" + "x" * 2000]
BAD_HTTPS_URLS = ["http://management.azure.com", "management.azure.com", "https://", "ftp://management.azure.com",
                  f"https://user:{PLANTED}@management.azure.com", "https://management.azure.com?x=1",
                  "https://m\u00e1nagement.azure.com", "https://management.azure.com:99999", "https://a b.com",
                  "https://management.azure.com#top", "javascript:alert(1)"]
BAD_LOCATIONS = ["http://acct.blob.core.windows.net/config/tracked.json", "ftp://host/tracked.json", "https://",
                 f"https://user:{PLANTED}@acct.blob.core.windows.net/c/t.json", "tracked\x00.json", "tracked\n.json",
                 "file:///etc/passwd", "https://acct.blob.core.windows.net/c/t.json#x",
                 "HTTP://acct.blob.core.windows.net/c/t.json?sv=1&sig=" + PLANTED]


def _cases() -> list[tuple[str, dict[str, str], str, str]]:
    """(case id, settings to change, the setting the report must name, what it stops)."""
    cases = []

    def add(env: dict[str, str], setting: str, needed_by: str) -> None:
        cases.append((f"{setting}={next(iter(env.values()))!r}"[:90], env, setting, needed_by))

    for name, (feature, integer, low, high) in NUMBERS.items():
        for value in [*NOT_NUMBERS, low, high, *(["1.5"] if integer else [])]:
            add({name: value}, name, feature)
    for value in ["maybe", "on", "\uff54rue", "1.0", "tru e"]:
        add({"ALLOW_INLINE_CREDENTIALS": value}, "ALLOW_INLINE_CREDENTIALS", IMPORTS)
        add({"REFERRERS_REQUIRED": value}, "REFERRERS_REQUIRED", IMPORTS)
        add({"REFERRERS_COSIGN_TAGS": value}, "REFERRERS_COSIGN_TAGS", IMPORTS)
    for value in ["some", "signatures", "application/", "/json", "application/spdx+json,all", "all,none",
                  "application/spdx json", "application/vnd.cncf.notary.signature;required", "\u00e1pp/x",
                  "applicati\u00f6n/x", ",".join(f"application/t{i}" for i in range(21)), "NONE"]:
        add({"REFERRERS": value}, "REFERRERS", IMPORTS)
    for value in BAD_HOST_PATTERNS:
        add({"ALLOWED_SOURCE_REGISTRIES": f"docker.io,{value}"}, "ALLOWED_SOURCE_REGISTRIES", IMPORTS)
        add({"SOURCE_CREDENTIALS__CONTOSO__REGISTRIES": value}, "SOURCE_CREDENTIALS__CONTOSO__REGISTRIES",
            "credential:CONTOSO")
    for value in BAD_REGISTRY_IDS:
        add({"TARGET_REGISTRY": value}, "TARGET_REGISTRY", IMPORTS)
        add({"ALLOWED_TARGET_REGISTRIES": f"{TARGET.resource_id},{value}"}, "ALLOWED_TARGET_REGISTRIES", IMPORTS)
    for value in ["not-a-guid", "app-user-assigned", IDENTITY_ID, "aaaaaaaa-0000-4000-8000-00000000a00\u0662",
                  "{aaaaaaaa-0000-4000-8000-00000000a002}"]:
        add({"AZURE_CLIENT_ID": value}, "AZURE_CLIENT_ID", IMPORTS)
    for value in BAD_HTTPS_URLS:
        add({"ARM_ENDPOINT": value}, "ARM_ENDPOINT", IMPORTS)
        add({"ARM_AUDIENCE": value}, "ARM_AUDIENCE", IMPORTS)
    for value in ["*.azurecr.io", ".azurecr.io", "azurecr", "azurecr.io:443", "https://azurecr.io", "azurecr.io/",
                  "\u00e1zurecr.io", "10.0.0.1", "azure cr.io", "[::1]"]:
        add({"ACR_LOGIN_SERVER_SUFFIX": value}, "ACR_LOGIN_SERVER_SUFFIX", IMPORTS)
    for value in ["Imports", "ab", "imports_queue", "-imports", "imp--orts", "i" * 55, "imports queue",
                  "imp\u00f6rts", "imports-"]:
        add({"IMPORT_QUEUE": value}, "IMPORT_QUEUE", STORAGE)
    for value in ["import-status", "1status", "ab", "tables", "t" * 64, "st\u00e1tus", "status table"]:
        add({"IMPORT_STATUS_TABLE": value}, "IMPORT_STATUS_TABLE", STORAGE)
    for value in ["reads=250", "reads=0/25", "reads=250/0", "reads=250/25,reads=250/25", "lists=1/1", "reads=-1/5",
                  "reads=250/25;writes=200/10", "reads = 250/25", "reads=1e3/25", "reads=\uff12/1", "writes=200/10,"
                  "x"]:
        add({"ARM_REQUEST_LIMITS": value}, "ARM_REQUEST_LIMITS", IMPORTS)
    for value in ["docker.io=http://10.0.0.5", "docker.io", "docker.io=10.0.0.5:443", "=https://x.example",
                  "bad host=https://x.example", f"docker.io=https://user:{PLANTED}@x.example", "docker.io=https://x/path?query",
                  "docker.io=https://x.example?y=1", "*.io=https://x.example", "docker.io=ftp://x.example"]:
        add({"REGISTRY_ENDPOINTS": value}, "REGISTRY_ENDPOINTS", IMPORTS)
    for value in ["{tag", "{tag}-{nope}", "-{tag}", "{tag}", "{tag}/x", "{{tag}}", "{tag:>5}", "x" * 129,
                  "{tag}-b\u00e4ckup", "{tag}-{date}:x"]:
        add({"BACKUP_TAG_TEMPLATE": value}, "BACKUP_TAG_TEMPLATE", BACKUP)
    for value in ["Entra", "KEY", "entraid", "aad", "none", "anonymous", "key,entra", "\uff45ntra", "entra\x00"]:
        add({"OPERATOR_SIGN_IN": value}, "OPERATOR_SIGN_IN", OPS)
    for value in ["reader role", ".reader", "r\u00f4le", "x" * 121, "reader\x00", "reader\nadmin"]:
        add({"OPERATOR_APP_ROLE": value}, "OPERATOR_APP_ROLE", OPS)
    for value in BAD_LOCATIONS:
        add({"TRACKED_IMAGES": value}, "TRACKED_IMAGES", REFRESH)
        add({"REPLICATION_RULES": value}, "REPLICATION_RULES", REPLICATION)
    for env, setting in [
        ({"SOURCE_CREDENTIALS__CONTOSO__PASSWORD": ""}, "SOURCE_CREDENTIALS__CONTOSO__PASSWORD"),
        ({"SOURCE_CREDENTIALS__CONTOSO__PASSWORD": "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/"
                                                   "secrets/contoso)"}, "SOURCE_CREDENTIALS__CONTOSO__PASSWORD"),
        ({"SOURCE_CREDENTIALS__CONTOSO__PASSWORD": " @microsoft.keyvault(VaultName=kv;SecretName=contoso)"},
         "SOURCE_CREDENTIALS__CONTOSO__PASSWORD"),
        ({"SOURCE_CREDENTIALS__CONTOSO__USERNAME": "@Microsoft.KeyVault(VaultName=kv;SecretName=contoso-user)"},
         "SOURCE_CREDENTIALS__CONTOSO__USERNAME"),
        ({"SOURCE_CREDENTIALS__CONTOSO__TOKEN": PLANTED}, "SOURCE_CREDENTIALS__CONTOSO__TOKEN"),
        ({"SOURCE_CREDENTIALS__CONTOSO__REGISTRIES": " , ,"}, "SOURCE_CREDENTIALS__CONTOSO__REGISTRIES"),
    ]:
        add(env, setting, "credential:CONTOSO")
    add({"SOURCE_CREDENTIALS__C\u00d6NTOSO__PASSWORD": PLANTED}, "SOURCE_CREDENTIALS__C\u00d6NTOSO",
        "credential:C\u00d6NTOSO")
    add({"SOURCE_CREDENTIALS__CONT-OSO__PASSWORD": PLANTED}, "SOURCE_CREDENTIALS__CONT-OSO", "credential:CONT-OSO")
    add({"SOURCE_CREDENTIALS__HUB\n__PASSWORD": PLANTED}, "SOURCE_CREDENTIALS__HUB\n", "credential:HUB\n")
    return cases


CASES = _cases()
# Read by the code, but not app settings this module can get wrong: the host binds REFRESH_SCHEDULE (and
# refuses a bad NCRONTAB itself), the CA bundles are a test-only trust override, telemetry is
# TestTelemetrySettings (it never stops the app, so it has no SettingProblem), NO_PROXY is the network's, read as
# requests reads it (an entry that is no host matches nothing: tests/azure/test_transport.py).
NOT_HERE = {"REFRESH_SCHEDULE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "APPLICATIONINSIGHTS_CONNECTION_STRING",
            "APPLICATIONINSIGHTS_AUTHENTICATION_STRING", "NO_PROXY", "no_proxy",
            "IDENTITY_ENDPOINT", "MSI_ENDPOINT"}  # the platform's: their absence is logged (test_config_mistakes)
STORAGE_CASES = [
    ({"AzureWebJobsStorage": "garbage"}, "AzureWebJobsStorage"),
    ({"AzureWebJobsStorage": "DefaultEndpointsProtocol=https;AccountName=x"}, "AzureWebJobsStorage"),
    ({"AzureWebJobsStorage": "", "AzureWebJobsStorage__queueServiceUri": "http://q.example"},
     "AzureWebJobsStorage__queueServiceUri"),
    ({"AzureWebJobsStorage": "", "AzureWebJobsStorage__accountName": "Bad_Name"}, "AzureWebJobsStorage__accountName"),
    ({"AzureWebJobsStorage": "", "AzureWebJobsStorage__queueServiceUri": "https://q.example"},
     "AzureWebJobsStorage__tableServiceUri"),
    ({"AzureWebJobsStorage": ""}, "AzureWebJobsStorage__queueServiceUri"),
]


def _ids(cases) -> list[str]:
    return [c[0] for c in cases]


class TestEverySettingMalformed:
    """Load reports each malformed value, naming the setting and what it stops; nothing raises."""

    def test_the_table_covers_every_setting_the_code_reads(self):
        from infra.check import settings_read_by_code

        covered = {setting for _, _, setting, _ in CASES} | {s for _, s in STORAGE_CASES}
        for name in settings_read_by_code():
            if name in NOT_HERE or name.startswith("*"):
                continue
            assert any(c == name or c.startswith(name) for c in covered), f"no malformed case for {name}"
        assert len(CASES) >= 300

    @pytest.mark.parametrize(("case", "env", "setting", "needed_by"), CASES, ids=_ids(CASES))
    def test_read_reports_it_once_naming_the_setting(self, case, env, setting, needed_by):
        settings = read_settings({**BASE, **env})
        found = [p for p in settings.problems if p.setting == setting]
        assert len(found) == 1, settings.problems
        assert setting in found[0].message and found[0].needed_by == needed_by
        assert PLANTED not in " ".join(p.message for p in settings.problems)
        with pytest.raises(SettingsError, match=re.escape(setting)):
            load_settings({**BASE, **env})

    @pytest.mark.parametrize(("case", "env", "setting", "needed_by"),
                             [c for c in CASES if c[3] in (REFRESH, REPLICATION, PRUNE, OPS)],
                             ids=_ids(c for c in CASES if c[3] in (REFRESH, REPLICATION, PRUNE, OPS)))
    def test_settings_of_other_features_do_not_stop_imports(self, case, env, setting, needed_by):
        settings = read_settings({**BASE, **env})
        assert settings.problems_for(IMPORTS) == ()
        assert isinstance(parse_request('{"source": "nginx:1.27"}', settings), ImportRequest)
        stopped = [f for f in (REFRESH, REPLICATION, PRUNE, OPS) if settings.problems_for(f)]
        assert stopped == [needed_by]

    @pytest.mark.parametrize(("env", "setting"), STORAGE_CASES, ids=[s for _, s in STORAGE_CASES])
    def test_storage_settings_are_checked_without_echoing_them(self, env, setting):
        settings = read_settings({**BASE, **env}, check_storage=settings_problem)
        [problem] = [p for p in settings.problems if p.needed_by == STORAGE]
        assert problem.setting == setting and setting in problem.message
        assert "AccountName=x" not in problem.message

    @given(st.dictionaries(st.sampled_from(sorted({s for _, _, s, _ in CASES} | set(NUMBERS))),
                           st.text(max_size=60), max_size=6))
    @hypothesis_settings(max_examples=300)
    def test_any_values_at_all_never_raise(self, values):
        settings = read_settings({**BASE, **values}, check_storage=settings_problem)
        for problem in settings.problems:
            assert problem.setting in problem.message
        parse_request('{"source": "nginx:1.27"}', settings)


class TestDocumentedSettingsAreAccepted:
    """What docs/settings.md, the sample settings and the infra parameters show loads without a problem."""

    def test_the_sample_settings(self):
        values = json.loads((REPO / "local.settings.sample.json").read_text())["Values"]
        values["SOURCE_CREDENTIALS__DOCKERHUB__PASSWORD"] = "resolved-by-app-service"  # a Key Vault reference there
        assert read_settings(values, check_storage=settings_problem).problems == ()

    def test_an_unresolved_key_vault_reference_is_reported_not_sent(self):
        values = json.loads((REPO / "local.settings.sample.json").read_text())["Values"]
        settings = read_settings(values)
        assert settings.credential_set("dockerhub") is None
        assert "unresolved Key Vault reference" in settings.credential_problem("dockerhub").message

    def test_the_local_stack_settings(self):
        assert read_settings(BASE, check_storage=settings_problem).problems == ()

    @pytest.mark.parametrize("env", [
        {"IMPORT_MAX_ATTEMPTS": " 6 ", "IMPORT_WAIT_SECONDS": "0", "ALLOW_INLINE_CREDENTIALS": " TRUE "},
        {"ALLOWED_SOURCE_REGISTRIES": " docker.io , *.azurecr.io ,, "},
        {"ALLOWED_TARGET_REGISTRIES": f"{TARGET.resource_id.upper()}, {SOURCE.resource_id}"},
        {"ARM_ENDPOINT": "https://management.chinacloudapi.cn/", "ACR_LOGIN_SERVER_SUFFIX": "AzureCR.cn"},
        {"TRACKED_IMAGES": "https://acct.blob.core.windows.net/config/tracked.json?sv=2022&sig=abc"},
        {"SOURCE_CREDENTIALS__SRC__PASSWORD": "p", "SOURCE_CREDENTIALS__SRC__REGISTRIES": SOURCE.resource_id},
        {"AZURE_CLIENT_ID": layout.USER_ASSIGNED_IDENTITY.client_id.upper()},
        {"STATUS_RETENTION_DAYS": "0", "REFRESH_CONCURRENCY": "256"},
        {"REGISTRY_ENDPOINTS": "docker.io=https://mirror.example:8443/v2-proxy/hub,ghcr.io=https://10.0.0.5"},
        {"BACKUP_TAG_TEMPLATE": " {tag}-backup-{date} "},
    ], ids=["spaced", "allowlist-spaced", "ids-any-case", "sovereign", "sas-url", "credential-by-id", "client-id",
            "edges", "endpoint-prefix", "backup-template"])
    def test_good_values_in_every_documented_shape(self, env):
        assert read_settings({**BASE, **env}).problems == ()


# --- allowlists: one table, three consumers -------------------------------------------------------------
def _documented(path: str, pattern: str) -> str:
    return re.search(pattern, (REPO / path).read_text()).group(1)


SAMPLE = json.loads((REPO / "local.settings.sample.json").read_text())["Values"]["ALLOWED_SOURCE_REGISTRIES"]
PARAMETERS = json.loads((REPO / "infra/main.parameters.example.json").read_text())[
    "parameters"]["allowedSourceRegistries"]["value"]
BICEP_DEFAULT = _documented("infra/main.bicep", r"param allowedSourceRegistries string = '([^']*)'")
DOCS_DEFAULT = _documented("docs/settings.md", r"\| `ALLOWED_SOURCE_REGISTRIES` \| `([^`]*)`")
ALLOWLISTS = {  # name: (value, the sources it allows)
    "sample": (SAMPLE, {"docker.io", "mcr", "contoso", "acr", "other-acr"}),
    "infra-parameters": (PARAMETERS, {"docker.io", "mcr", "acr"}),
    "bicep-default": (BICEP_DEFAULT, {"docker.io", "mcr"}),
    "docs-default": (DOCS_DEFAULT, {"docker.io", "mcr"}),
    "unset": ("", {"docker.io", "mcr"}),
    "resource-id": (f"docker.io,{SOURCE.resource_id}", {"docker.io", "acr"}),
    "resource-id-any-case": (SOURCE.resource_id.upper(), {"acr"}),
    "login-server-any-case": ("Docker.IO,MySourceRegistry.AzureCR.io", {"docker.io", "acr"}),
    "docker-hub-alias": ("index.docker.io", {"docker.io"}),
    "wildcard": ("*.azurecr.io", {"acr", "other-acr"}),
    "spaced": (" docker.io , *.azurecr.io ,", {"docker.io", "acr", "other-acr"}),
    "star": ("*", {"docker.io", "mcr", "contoso", "ghcr", "acr", "other-acr"}),
    "other-acr-by-id": (OTHER.resource_id, {"other-acr"}),
}
SOURCES = {  # name: (host, ACR resource id or None)
    "docker.io": ("docker.io", None),
    "mcr": ("mcr.microsoft.com", None),
    "contoso": ("registry.contoso.com", None),
    "ghcr": ("ghcr.io", None),
    "acr": (SOURCE.login_server, SOURCE.resource_id),
    "other-acr": (OTHER.login_server, OTHER.resource_id),
}
TABLE = [(a, s, s in allowed) for a, (_, allowed) in ALLOWLISTS.items() for s in SOURCES]


def _allowlist_settings(allowlist: str):
    return load_settings({"TARGET_REGISTRY": TARGET.resource_id, "ALLOWED_SOURCE_REGISTRIES": allowlist,
                          "ALLOWED_TARGET_REGISTRIES": f"{TARGET.resource_id},{SOURCE.resource_id}"})


def _refused_by_allowlist(reasons: list[str]) -> bool:
    assert reasons and all("ALLOWED_SOURCE_REGISTRIES" in r for r in reasons), reasons
    return True


class TestAllowlistsDecideAlikeEverywhere:
    """(allowlist, source, expected) through requests (by host and by sourceRegistry), tracked images and
    replication rules: the same answer each time, and no allowlist form makes any of them raise."""

    def test_the_documented_allowlists_were_found(self):
        assert "*.azurecr.io" in SAMPLE and "mysourceregistry.azurecr.io" in PARAMETERS
        assert BICEP_DEFAULT == DOCS_DEFAULT == "docker.io,mcr.microsoft.com"

    @pytest.mark.parametrize(("allowlist", "source", "expected"), TABLE, ids=[f"{a}-{s}" for a, s, _ in TABLE])
    def test_requests(self, allowlist, source, expected):
        settings = _allowlist_settings(ALLOWLISTS[allowlist][0])
        host, registry = SOURCES[source]
        documents = [{"source": f"{host}/team/app:1"}]
        if registry:
            documents.append({"sourceRegistry": registry, "source": "team/app:1"})
        for document in documents:
            result = parse_request(json.dumps(document), settings)
            if expected:
                assert isinstance(result, ImportRequest), result.reason
            else:
                assert not isinstance(result, ImportRequest) and _refused_by_allowlist([result.reason])

    @pytest.mark.parametrize(("allowlist", "source", "expected"), TABLE, ids=[f"{a}-{s}" for a, s, _ in TABLE])
    def test_tracked_images(self, allowlist, source, expected):
        settings = _allowlist_settings(ALLOWLISTS[allowlist][0])
        host, _ = SOURCES[source]
        found = parse_entry(0, {"source": f"{host}/team/app", "tags": ["1"]}, settings)
        allowed = isinstance(found, TrackedImage)
        assert allowed is expected
        if not allowed:
            _refused_by_allowlist([str(p) for p in found])

    @pytest.mark.parametrize(("allowlist", "source", "expected"),
                             [row for row in TABLE if SOURCES[row[1]][1]],
                             ids=[f"{a}-{s}" for a, s, _ in TABLE if SOURCES[s][1]])
    def test_replication_rules(self, allowlist, source, expected):
        settings = _allowlist_settings(ALLOWLISTS[allowlist][0])
        _, registry = SOURCES[source]
        rule = {"version": 1, "rules": [{"source": registry, "targets": [TARGET.resource_id]}]}
        try:
            parse_rules(json.dumps(rule), settings)
            allowed = True
        except ReplicationConfigError as err:
            allowed = not _refused_by_allowlist([str(err)])
        assert allowed is expected

    @given(st.lists(st.sampled_from(["docker.io", "index.docker.io", "mcr.microsoft.com", "*.azurecr.io", "*",
                                     "*.contoso.com", "registry.contoso.com", SOURCE.login_server.upper(),
                                     SOURCE.resource_id, OTHER.resource_id.upper(), "ghcr.io:443", " ",
                                     "*.microsoft.com"]), max_size=4),
           st.sampled_from(sorted(SOURCES)))
    @hypothesis_settings(max_examples=200)
    def test_any_mix_of_documented_forms_decides_alike(self, entries, source):
        settings = _allowlist_settings(",".join(entries))
        host, registry = SOURCES[source]
        decisions = {"request": isinstance(parse_request(json.dumps({"source": f"{host}/team/app:1"}), settings),
                                           ImportRequest),
                     "tracked": isinstance(parse_entry(0, {"source": f"{host}/team/app", "tags": ["1"]}, settings),
                                           TrackedImage)}
        if registry:
            decisions["request by id"] = isinstance(parse_request(json.dumps(
                {"sourceRegistry": registry, "source": "team/app:1"}), settings), ImportRequest)
            rule = {"source": registry, "targets": [TARGET.resource_id]}
            try:
                parse_rules(json.dumps({"version": 1, "rules": [rule]}), settings)
                decisions["replication"] = True
            except ReplicationConfigError:
                decisions["replication"] = False
        assert len(set(decisions.values())) == 1, decisions

    @given(entry=st.text(max_size=80), host=st.text(max_size=80))
    @hypothesis_settings(max_examples=400)
    def test_no_entry_and_no_host_make_a_decision_raise(self, entry, host):
        settings = read_settings({"TARGET_REGISTRY": TARGET.resource_id, "ALLOWED_SOURCE_REGISTRIES": entry,
                                  "SOURCE_CREDENTIALS__X__PASSWORD": "p", "SOURCE_CREDENTIALS__X__REGISTRIES": entry})
        policy.source_refusal(host, None, settings)
        policy.credential_refusal("x", host, settings)
        parse_request(json.dumps({"source": f"{host}/a:1", "credential": "x"}), settings)
        parse_entry(0, {"source": f"{host}/a", "tags": ["1"], "credential": "x"}, settings)


HOST_MATCHES = [  # (host, allowlist entry, allowed): wildcards cover one label, ports match exactly
    ("mcr.microsoft.com", "mcr.microsoft.com", True),
    ("MCR.Microsoft.com", "mcr.microsoft.COM", True),
    ("mcr.microsoft.com", "microsoft.com", False),
    ("a.azurecr.io", "*.azurecr.io", True),
    ("MyRegistry.AzureCR.io", "*.azurecr.io", True),
    ("azurecr.io", "*.azurecr.io", False),
    ("a.b.azurecr.io", "*.azurecr.io", False),
    ("evilazurecr.io", "*.azurecr.io", False),
    ("a.azurecr.io.evil.com", "*.azurecr.io", False),
    ("a.azurecr.io:443", "*.azurecr.io", False),
    ("a.azurecr.io:443", "*.azurecr.io:443", True),
    ("a.azurecr.io:8443", "*.azurecr.io:443", False),
    ("localhost:5000", "localhost:5000", True),
    ("localhost:5001", "localhost:5000", False),
    ("localhost", "localhost:5000", False),
    ("127.0.0.1:5000", "127.0.0.1:5000", True),
    ("[::1]:5000", "[0:0:0:0:0:0:0:1]:5000", True),
    ("docker.io", "docker.io", True),
    ("index.docker.io", "docker.io", True),
    ("registry-1.docker.io", "docker.io", True),
    ("registry.hub.docker.com", "docker.io", True),
    ("docker.io", "registry-1.docker.io", True),
    ("docker.io", "*.docker.io", False),
    ("quay.io", "docker.io", False),
    ("reg_x.io", "reg.io", False),
    ("https://reg.io", "reg.io", False),
    ("", "*.azurecr.io", False),
]
PATTERN_REFUSALS = [  # (entry, words of the reason)
    ("a.*.io", "only one leading '*.' label"),
    ("*azurecr.io", "only one leading '*.' label"),
    ("*.io", "at least two labels"),
    ("*.*.io", "only one leading '*.' label"),
    ("*.10.0.0.1", "at least two labels"),
    ("*.2.3.4", 'registry host "2.3.4" is not a valid IPv4 address'),
    ("reg.io/app", "without scheme or path"),
    ("/subscriptions/x", "resource id"),
    (STORAGE_ACCOUNT_ID, "must be a container registry resource id"),
    ("r\u00e9g.io", "printable ASCII"),
]


class TestAllowlistEntries:
    """How one parsed entry matches (one grammar: shared/core/allowlist.py)."""

    @pytest.mark.parametrize(("host", "entry", "expected"), HOST_MATCHES, ids=[f"{h}~{e}" for h, e, _ in HOST_MATCHES])
    def test_matching(self, host, entry, expected):
        assert allowlist.allowed_by((allowlist.parse_registry_pattern(entry),), host, None, "azurecr.io") is expected

    @pytest.mark.parametrize(("entry", "words"), PATTERN_REFUSALS, ids=[e[:40] for e, _ in PATTERN_REFUSALS])
    def test_malformed_entries_are_refused_with_a_reason(self, entry, words):
        with pytest.raises(allowlist.PatternError, match=re.escape(words)):
            allowlist.parse_registry_pattern(entry)


CREDENTIAL_TABLE = [  # (REGISTRIES, source host, may the set be sent there)
    (SOURCE.resource_id, SOURCE.login_server, True),
    (SOURCE.resource_id.upper(), SOURCE.login_server, True),
    (SOURCE.resource_id, OTHER.login_server, False),
    (SOURCE.resource_id, "docker.io", False),
    ("*.azurecr.io", SOURCE.login_server, True),
    ("*.azurecr.io", "docker.io", False),
    ("docker.io", "docker.io", True),
    ("index.docker.io", "docker.io", True),
    ("registry.contoso.com,docker.io", "registry.contoso.com", True),
    ("registry.contoso.com", "registry.contoso.com.evil.example", False),
    ("*", "ghcr.io", True),
]


class TestCredentialSetRegistries:
    """A credential set's REGISTRIES in any allowlist form: requests and tracked entries agree, no raise."""

    @pytest.mark.parametrize(("registries", "host", "expected"), CREDENTIAL_TABLE,
                             ids=[f"{r[:30]}-{h}" for r, h, _ in CREDENTIAL_TABLE])
    def test_requests_and_tracked_images_agree(self, registries, host, expected):
        settings = load_settings({"TARGET_REGISTRY": TARGET.resource_id, "ALLOWED_SOURCE_REGISTRIES": "*",
                                  "SOURCE_CREDENTIALS__SET__USERNAME": "user",
                                  "SOURCE_CREDENTIALS__SET__PASSWORD": PLANTED,
                                  "SOURCE_CREDENTIALS__SET__REGISTRIES": registries})
        request = parse_request(json.dumps({"source": f"{host}/team/app:1", "credential": "set"}), settings)
        entry = parse_entry(0, {"source": f"{host}/team/app", "tags": ["1"], "credential": "set"}, settings)
        assert isinstance(request, ImportRequest) is expected
        assert isinstance(entry, TrackedImage) is expected
        if not expected:
            assert "may only be sent to" in request.reason and PLANTED not in request.reason

    def test_a_broken_set_is_refused_with_its_setting_and_the_others_work(self):
        settings = read_settings({**BASE, "SOURCE_CREDENTIALS__CONTOSO__REGISTRIES": "*.io"})
        broken = parse_request(json.dumps({"source": "registry.contoso.com/a:1", "credential": "contoso"}), settings)
        assert "SOURCE_CREDENTIALS__CONTOSO__REGISTRIES" in broken.reason
        assert isinstance(parse_request(json.dumps({"source": "docker.io/a/b:1", "credential": "dockerhub"}),
                                        settings), ImportRequest)


# --- through the worker and the runner --------------------------------------------------------------------
def _request_for(needed_by: str) -> dict:
    if needed_by.startswith("credential:"):
        return {"id": f"cfg-{uuid.uuid4().hex[:12]}", "source": "registry.contoso.com/a:1",
                "credential": needed_by.partition(":")[2].lower(), "targetTags": ["cfg:1"]}
    return {"id": f"cfg-{uuid.uuid4().hex[:12]}", "source": "nginx:1.27", "targetTags": ["cfg:1"]}


def _poison(app_env) -> list:
    from tests.helpers import queue

    client = queue(app_env, f"{app_env['IMPORT_QUEUE']}-poison")
    try:
        return client.peek_messages(max_messages=32)
    except Exception:  # the queue was never created: nothing went there
        return []


def _through_the_worker(case) -> bool:
    _, env, setting, needed_by = case
    value = next(iter(env.values()))
    if "\x00" in value or needed_by not in (IMPORTS, "credential:CONTOSO"):  # no NUL in an environment
        return False
    if setting in NUMBERS:  # every number setting, a few values each (read_settings' cases have them all)
        _, _, low, high = NUMBERS[setting]
        return value in ("many", "nan", "\uff16", low, high)
    return True


WORKER_CASES = [c for c in CASES if _through_the_worker(c)]


class TestMalformedSettingsThroughTheWorker:
    """A message delivered to `import_image` (and to its poison handler) while a setting it needs is broken
    ends `failed` with the reason naming the setting: no raise, a dead letter, nothing in the poison queue."""

    @pytest.mark.parametrize(("case", "env", "setting", "needed_by"), WORKER_CASES, ids=_ids(WORKER_CASES))
    def test_the_message_ends_failed_naming_the_setting(self, app_env, monkeypatch, case, env, setting, needed_by):
        from shared import app_context
        from tests.helpers import dead_letters, deliver, status

        for name, value in env.items():
            monkeypatch.setenv(name, value)
        app_context.reset()
        document = _request_for(needed_by)
        deliver(document)
        record = status(document["id"])
        assert record.state is State.FAILED and record.code == "SettingsInvalid"
        assert setting in record.reason and PLANTED not in record.reason
        assert [letter["id"] for letter in dead_letters(app_env)] == [document["id"]]
        deliver(document, function="import_image_poison", dequeue_count=5)
        assert status(document["id"]).state is State.FAILED
        assert len(dead_letters(app_env)) == 1 and _poison(app_env) == []

    @pytest.mark.parametrize(("env", "setting"), STORAGE_CASES, ids=[s for _, s in STORAGE_CASES])
    def test_broken_storage_is_one_clear_line_per_message(self, app_env, monkeypatch, caplog, env, setting):
        from shared import app_context
        from shared.core.settings import SettingsUnusable
        from tests.helpers import deliver

        for name, value in env.items():
            monkeypatch.setenv(name, value)
        app_context.reset()
        caplog.set_level(logging.INFO, logger="acr_importer")
        for _ in range(2):
            with pytest.raises(SettingsUnusable, match=re.escape(setting)):
                deliver(_request_for(IMPORTS))
        lines = [r.getMessage() for r in caplog.records if '"unrecorded"' in r.getMessage()]
        assert len(lines) == 2 and all(setting in line for line in lines)
        assert sum(1 for r in caplog.records if '"event": "settings"' in r.getMessage()) == 1

    def test_problems_are_logged_once_at_start_whatever_the_traffic(self, app_env, monkeypatch, caplog):
        from shared import app_context
        from tests.helpers import deliver

        monkeypatch.setenv("IMPORT_MAX_ATTEMPTS", "many")
        monkeypatch.setenv("REFRESH_CONCURRENCY", "-1")
        app_context.reset()
        caplog.set_level(logging.INFO, logger="acr_importer")
        for _ in range(3):
            deliver(_request_for(IMPORTS))
        started = [json.loads(r.getMessage()) for r in caplog.records if r.getMessage().startswith('{"event": '
                                                                                                    '"settings"')]
        assert sorted(s["setting"] for s in started) == ["IMPORT_MAX_ATTEMPTS", "REFRESH_CONCURRENCY"]
        assert {s["setting"]: s["stops"] for s in started}["REFRESH_CONCURRENCY"] == ["refresh"]

    @pytest.mark.parametrize("env", [{"REFRESH_CONCURRENCY": "many"}, {"REPLICATION_RULES": "http://x.example/r"},
                                     {"TRACKED_IMAGES": "ftp://x/t.json"}, {"STATUS_RETENTION_DAYS": "-1"}],
                             ids=["refresh", "replication", "tracked", "prune"])
    def test_settings_only_other_features_need_do_not_stop_an_import(self, app_env, control, monkeypatch, env):
        from shared import app_context
        from tests.helpers import deliver, status

        for name, value in env.items():
            monkeypatch.setenv(name, value)
        app_context.reset()
        document = {"id": f"cfg-{uuid.uuid4().hex[:12]}", "source": "docker.io/library/hello-world:latest",
                    "targetTags": [f"cfg:{uuid.uuid4().hex[:6]}"]}
        deliver(document)
        assert status(document["id"]).state is State.SUCCEEDED, status(document["id"]).reason

    @pytest.mark.parametrize("env", [{"REPLICATION_RULES": "http://x.example/rules.json"},
                                     {"ALLOWED_TARGET_REGISTRIES": "myregistry.azurecr.io"}],
                             ids=["replication-setting", "imports-setting"])
    def test_events_on_the_queue_end_failed_naming_the_setting(self, app_env, monkeypatch, env):
        from shared import app_context
        from shared.replication.events import event_key
        from tests.helpers import dead_letters, deliver, status
        from tests.replication.test_events import SAMPLE

        for name, value in env.items():
            monkeypatch.setenv(name, value)
        app_context.reset()
        event = {**SAMPLE, "id": uuid.uuid4().hex}
        deliver(json.dumps(event))
        record = status(f"event-{event_key(event['topic'], event['id'])}")
        assert record.state is State.FAILED and next(iter(env)) in record.reason
        assert len(dead_letters(app_env)) == 1 and _poison(app_env) == []

    def test_the_refresh_records_the_setting_and_does_not_raise(self, app_env, monkeypatch):
        from shared import app_context
        from shared.refresh.run import RefreshLog
        from tests.helpers import user_function

        monkeypatch.setenv("REFRESH_CONCURRENCY", "\uff11\uff16")
        app_context.reset()
        user_function("refresh_tracked_images")(None)
        latest = RefreshLog(app_env["IMPORT_STATUS_TABLE"]).latest()
        assert any("REFRESH_CONCURRENCY" in p for p in latest["problems"]), latest

    def test_the_prune_timer_does_not_run_on_a_mistyped_retention(self, app_env, monkeypatch, caplog):
        from shared import app_context
        from tests.helpers import user_function

        monkeypatch.setenv("STATUS_RETENTION_DAYS", "3O")
        app_context.reset()
        caplog.set_level(logging.INFO, logger="acr_importer")
        user_function("prune_import_status")(None)
        assert any('"not run"' in r.getMessage() and "STATUS_RETENTION_DAYS" in r.getMessage()
                   for r in caplog.records)


class TestMalformedSettingsThroughTheRunner:
    @pytest.mark.parametrize(("env", "setting", "needed_by"), [
        ({"IMPORT_MAX_ATTEMPTS": "many"}, "IMPORT_MAX_ATTEMPTS", IMPORTS),
        ({"ALLOWED_SOURCE_REGISTRIES": f"docker.io,{SOURCE.resource_id},*.io"}, "ALLOWED_SOURCE_REGISTRIES", IMPORTS),
        ({"SOURCE_CREDENTIALS__CONTOSO__REGISTRIES": "*.*.com"}, "SOURCE_CREDENTIALS__CONTOSO__REGISTRIES",
         "credential:CONTOSO"),
    ], ids=["number", "allowlist", "credential-set"])
    def test_the_host_sees_no_error_and_the_request_ends_failed(self, app_env, runner_factory, env, setting,
                                                                 needed_by):
        from shared.azure.status import StatusStore
        from tests.helpers import dead_letters, queue

        runner = runner_factory(**env)
        document = _request_for(needed_by)
        queue(app_env, app_env["IMPORT_QUEUE"]).send_message(json.dumps(document))
        assert runner.wait_idle(timeout=60)
        record = StatusStore(app_env["IMPORT_STATUS_TABLE"]).get(document["id"])
        assert record.state is State.FAILED and setting in record.reason
        invocations = [i for i in runner.invocations if i.function.startswith("import_image")]
        assert [i.outcome for i in invocations] == ["ok"]
        assert [letter["id"] for letter in dead_letters(app_env)] == [document["id"]]
        assert _poison(app_env) == []


# --- configuration blobs ----------------------------------------------------------------------------------
class _Blob(BaseHTTPRequestHandler):
    """A blob endpoint: checks the bearer token is the stand-in's, for the expected client id."""

    def do_GET(self) -> None:
        from dev import tokens

        server = self.server
        path, query = urlsplit(self.path).path, parse_qs(urlsplit(self.path).query)
        auth = self.headers.get("Authorization", "")
        server.seen.append({"path": path, "auth": auth, "query": query})
        if path == "/redirect":
            return self._answer(302, b"", {"Location": server.redirect_to})
        if path == "/big":
            return self._answer(200, b"{" + b" " * (2 * 1024 * 1024) + b"}")
        if "sig" not in query:
            try:
                claims = tokens.verify_entra_token(auth.removeprefix("Bearer "), audience="https://storage.azure.com")
            except Exception:
                return self._answer(401, b"no valid token")
            if claims["appid"] != server.client_id:
                return self._answer(403, b"AuthorizationPermissionMismatch")
        body = server.files.get(path)
        return self._answer(200, body) if body is not None else self._answer(404, b"BlobNotFound")

    def _answer(self, status: int, body: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def blobs(stack):
    """Two local HTTPS blob endpoints (the second is where a redirect points), trusting the stack's CA."""
    servers = []
    for _ in range(2):
        server = ThreadingHTTPServer((layout.HOST, 0), _Blob)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(layout.SERVER_CERT, layout.SERVER_KEY)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        server.seen, server.files = [], {}
        server.handle_error = lambda *args: None  # the client hanging up on the oversized body is expected
        server.client_id = layout.USER_ASSIGNED_IDENTITY.client_id
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    servers[0].redirect_to = f"https://{layout.HOST}:{servers[1].server_address[1]}/rules.json"
    servers[1].files["/rules.json"] = b'{"version": 1, "rules": []}'
    yield servers
    for server in servers:
        server.shutdown()
        server.server_close()


def _url(server, path: str) -> str:
    return f"https://{layout.HOST}:{server.server_address[1]}{path}"


def _blob_settings(app_env, **env: str):
    from shared.azure.config_source import forget_cached

    forget_cached()
    return read_settings({**app_env, **env})


TRACKED = json.dumps({"version": 1, "images": [{"source": "docker.io/library/nginx", "tags": ["1.27"]}]}).encode()
RULES = json.dumps({"version": 1, "rules": [{"source": SOURCE.resource_id, "targets": [TARGET.resource_id]}]}).encode()


class TestConfigurationBlobs:
    def test_both_settings_are_read_with_the_user_assigned_identity(self, app_env, blobs):
        from shared.refresh.tracked import load_config_text, parse_config
        from shared.replication.replicate import load_rules

        blobs[0].files.update({"/tracked.json": TRACKED, "/rules.json": RULES})
        settings = _blob_settings(app_env, AZURE_CLIENT_ID=layout.USER_ASSIGNED_IDENTITY.client_id,
                                  TRACKED_IMAGES=_url(blobs[0], "/tracked.json"),
                                  REPLICATION_RULES=_url(blobs[0], "/rules.json"),
                                  ALLOWED_SOURCE_REGISTRIES="docker.io,*.azurecr.io")
        assert len(parse_config(load_config_text(settings), settings).images) == 1
        assert len(load_rules(settings).rules) == 1
        assert [s["path"] for s in blobs[0].seen] == ["/tracked.json", "/rules.json"]

    def test_without_the_client_id_the_system_identity_is_refused_and_the_error_names_the_setting(self, app_env,
                                                                                                  blobs):
        from shared.refresh.tracked import TrackedConfigError, load_config_text
        from shared.replication.replicate import load_rules

        blobs[0].files.update({"/tracked.json": TRACKED, "/rules.json": RULES})
        settings = _blob_settings(app_env, TRACKED_IMAGES=_url(blobs[0], "/tracked.json"),
                                  REPLICATION_RULES=_url(blobs[0], "/rules.json"))
        with pytest.raises(TrackedConfigError, match=r"^TRACKED_IMAGES: .* answered HTTP 403"):
            load_config_text(settings)
        with pytest.raises(ReplicationConfigError, match=r"^REPLICATION_RULES: .* answered HTTP 403"):
            load_rules(settings)

    @pytest.mark.parametrize("setting", ["TRACKED_IMAGES", "REPLICATION_RULES"])
    def test_http_is_refused_at_start_and_never_contacted(self, app_env, blobs, setting):
        from shared.azure.config_source import ConfigUnavailable, read_config

        url = _url(blobs[0], "/tracked.json").replace("https://", "http://")
        settings = _blob_settings(app_env, **{setting: url})
        [problem] = settings.problems
        assert problem.setting == setting and "https://" in problem.message
        with pytest.raises(ConfigUnavailable, match=f"^{setting}: only https"):
            read_config(setting, url, settings)
        assert blobs[0].seen == []

    def test_a_redirect_is_not_followed_with_the_token(self, app_env, blobs):
        from shared.replication.replicate import load_rules

        settings = _blob_settings(app_env, AZURE_CLIENT_ID=layout.USER_ASSIGNED_IDENTITY.client_id,
                                  REPLICATION_RULES=_url(blobs[0], "/redirect"))
        with pytest.raises(ReplicationConfigError, match=r"REPLICATION_RULES: .*HTTP 302.*not followed"):
            load_rules(settings)
        assert blobs[1].seen == []

    def test_an_oversized_blob_is_refused(self, app_env, blobs):
        from shared.refresh.tracked import TrackedConfigError, load_config_text

        settings = _blob_settings(app_env, AZURE_CLIENT_ID=layout.USER_ASSIGNED_IDENTITY.client_id,
                                  TRACKED_IMAGES=_url(blobs[0], "/big"))
        with pytest.raises(TrackedConfigError, match=r"TRACKED_IMAGES: .* bytes"):
            load_config_text(settings)

    def test_a_sas_url_sends_no_token_and_errors_never_show_the_signature(self, app_env, blobs):
        from shared.refresh.tracked import TrackedConfigError, load_config_text

        blobs[0].files["/tracked.json"] = TRACKED
        ok = _blob_settings(app_env, TRACKED_IMAGES=_url(blobs[0], "/tracked.json") + f"?sv=2022&sig={PLANTED}")
        assert json.loads(load_config_text(ok))["version"] == 1
        assert blobs[0].seen[-1]["auth"] == ""
        missing = _blob_settings(app_env, TRACKED_IMAGES=_url(blobs[0], "/missing.json") + f"?sig={PLANTED}")
        with pytest.raises(TrackedConfigError) as refused:
            load_config_text(missing)
        assert "HTTP 404" in str(refused.value) and PLANTED not in str(refused.value)

    @pytest.mark.parametrize("content", [b"\xff\xfe not utf-8", b"x" * (1024 * 1024 + 1)], ids=["binary", "big"])
    def test_a_file_that_is_not_a_config_names_the_setting(self, tmp_path, content):
        from shared.refresh.tracked import TrackedConfigError, load_config_text

        path = tmp_path / "tracked.json"
        path.write_bytes(content)
        with pytest.raises(TrackedConfigError, match=r"^TRACKED_IMAGES: "):
            load_config_text(read_settings({**BASE, "TRACKED_IMAGES": str(path)}))


class TestTelemetrySettings:
    """A malformed Application Insights setting turns telemetry off with a line naming it; the app still loads
    (in a child process: configuring Azure Monitor changes process-wide OpenTelemetry state)."""

    @pytest.mark.parametrize("env", [
        {"APPLICATIONINSIGHTS_CONNECTION_STRING": "garbage"},
        {"APPLICATIONINSIGHTS_CONNECTION_STRING": f"InstrumentationKey={PLANTED};IngestionEndpoint=ftp://x"},
        {"APPLICATIONINSIGHTS_CONNECTION_STRING": "garbage", "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "=;=;"},
    ], ids=["not-a-connection-string", "bad-key-and-endpoint", "bad-authentication-string"])
    def test_the_app_loads_and_names_the_setting(self, env):
        import os
        import subprocess
        import sys

        script = ("import logging, sys; logging.basicConfig(stream=sys.stderr)\n"
                  "import function_app\n"
                  "from shared.azure import telemetry\n"
                  "print('enabled' if telemetry.enabled() else 'disabled')\n")
        child = {k: v for k, v in os.environ.items() if not k.startswith("APPLICATIONINSIGHTS_")}
        done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env={**child, **env}, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "disabled"
        assert "APPLICATIONINSIGHTS_CONNECTION_STRING" in done.stderr and PLANTED not in done.stderr
