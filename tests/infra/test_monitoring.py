"""The workbook, the alert rules and the sign-in against the code (infra/monitoring.py through infra/check.py).

Each test breaks a copy, on the query side or on the code side, and asserts the finding a deployer would need:
the emitted names are read from the code, so renaming a metric or a log field in the code is caught as surely
as a typo in a query."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from infra import check, monitoring

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def copy(tmp_path):
    shutil.copytree(REPO / "infra", tmp_path / "infra", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "shared", tmp_path / "shared", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("function_app.py", "local.settings.sample.json", "host.json"):
        shutil.copy(REPO / name, tmp_path)
    return tmp_path


def edit(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text()
    assert old in text, f"the mutation's anchor {old!r} is gone from {path.name}"
    path.write_text(text.replace(old, new, count))


def findings(repo: Path) -> set[tuple[str, str]]:
    return {(f.rule, f.subject) for f in check.check(repo)}


def workbook_queries(repo: Path = REPO) -> dict[str, str]:
    return {q.where: q.text for q in monitoring.queries(repo / "infra") if q.where.startswith("workbook: ")}


# --- the queries against the code ------------------------------------------------------------------------

def test_a_misspelled_metric_in_the_workbook_is_caught_with_the_panel(copy):
    edit(copy / "infra/monitor/workbook.json", 'name == \\"acr_importer.import.duration\\"',
         'name == \\"acr_importer.imports.duration\\"')
    [finding] = check.check(copy)
    assert (finding.rule, finding.subject) == ("monitor-unknown-metric", "acr_importer.imports.duration")
    assert "Import durations" in finding.message and "acr_importer.import.duration" in finding.message


@pytest.mark.parametrize(("old", "new", "expected"), [
    ('customDimensions[\\"registry\\"]', 'customDimensions[\\"host\\"]', ("monitor-unknown-dimension", "host")),
    ("e.backoffUntil", "e.backOffUntil", ("monitor-unknown-field", "backOffUntil")),
    ("'\\\"event\\\": \\\"replication\\\"'", "'\\\"event\\\": \\\"replicate\\\"'",
     ("monitor-unknown-event", "replicate")),
    ('outcome == \\"retrying\\"', 'outcome == \\"retried\\"', ("monitor-unknown-value", "retried")),
    ('customDimensions[\\"acr_importer.duration_ms\\"]', 'customDimensions[\\"acr_importer.durationMs\\"]',
     ("monitor-unknown-dimension", "acr_importer.durationMs")),
    ('name == \\"import_image_poison\\"', 'name == \\"import_poison\\"',
     ("monitor-unknown-operation", "import_poison")),
])
def test_a_misspelled_dimension_field_event_state_or_operation_in_the_workbook_is_caught(copy, old, new, expected):
    edit(copy / "infra/monitor/workbook.json", old, new)
    assert expected in findings(copy)


def test_a_misspelled_metric_in_an_alert_query_is_caught(copy):
    edit(copy / "infra/monitor/alerts/refresh-missing.kql", '"acr_importer.refresh.runs"', '"acr_importer.refresh.run"')
    assert findings(copy) == {("monitor-unknown-metric", "acr_importer.refresh.run")}


def test_a_metric_renamed_in_the_code_is_caught_in_the_queries_that_use_it(copy):
    edit(copy / "shared/azure/telemetry.py", '"acr_importer.refresh.runs"', '"acr_importer.refresh.run_count"')
    found = check.check(copy)
    assert {f.subject for f in found} == {"acr_importer.refresh.runs"}
    assert any(f.message.startswith("alert refresh-missing.kql") for f in found)
    assert any(f.message.startswith("workbook: Refresh runs by result") for f in found)


def test_a_dimension_renamed_in_the_code_is_caught(copy):
    edit(copy / "shared/azure/telemetry.py", '[Observation(value, {"registry": host})',
         '[Observation(value, {"upstream": host})')
    assert findings(copy) == {("monitor-unknown-dimension", "registry")}


def test_a_log_field_renamed_in_the_code_is_caught(copy):
    """The refresh summary's fields are its dataclass's, camelCased: renaming one is a finding."""
    edit(copy / "shared/refresh/run.py", "    skipped: int\n    errors: int\n",
         "    skipped_tags: int\n    errors: int\n")
    assert ("monitor-unknown-field", "skipped") in findings(copy)


def test_a_field_added_to_a_log_line_later_in_its_function_counts_as_emitted(copy):
    """log_outcome adds `code` after building the line; dropping that addition makes `code` unknown."""
    edit(copy / "shared/imports/recorder.py",
         'fields.update({"kind": str(outcome.failure.kind), "code": outcome.failure.code})',
         'fields.update({"kind": str(outcome.failure.kind)})')
    assert ("monitor-unknown-field", "code") in findings(copy)


def test_a_log_query_without_an_event_is_reported(copy):
    edit(copy / "infra/monitor/workbook.json", "| where tostring(e.event) == \\\"settings\\\"\\n", "")
    edit(copy / "infra/monitor/workbook.json", "| where message contains '\\\"event\\\": \\\"settings\\\"'\\n", "")
    assert ("monitor-unknown-event", "workbook: Settings problems reported at start") in findings(copy)


def test_every_metric_the_app_emits_is_on_the_workbook():
    """A new instrument in telemetry.py needs a panel: the operator cannot look at what is not shown."""
    shown = set()
    for text in workbook_queries().values():
        shown |= monitoring.uses(text).names
    assert set(monitoring.emitted(REPO).metrics) <= shown


def test_the_workbook_has_the_panels_the_issue_asks_for():
    used = {where: monitoring.uses(text) for where, text in workbook_queries().items()}
    metrics = set().union(*(u.names for u in used.values()))
    events = set().union(*(u.events for u in used.values()))
    assert {"acr_importer.imports", "acr_importer.import.duration", "acr_importer.refresh.changed",
            "acr_importer.refresh.errors", "acr_importer.upstream.ratelimit_remaining"} <= metrics
    assert {"import", "refresh", "replication"} <= events
    assert any("code" in u.dimensions and u.values >= {"failed", "rejected"} for u in used.values()), "failures by code"
    assert any("code" in u.dimensions and u.values == {"retrying"} for u in used.values()), "throttling by code"


# --- the template's wiring --------------------------------------------------------------------------------

def test_an_alert_rule_that_does_not_notify_the_action_group_is_reported(copy):
    main = copy / "infra/main.bicep"
    text = main.read_text()
    at = text.index("resource failureRateAlert")
    rest = text[at:].replace("actionGroups: empty(alertActionGroupId) ? [] : [alertActionGroupId]",
                             "actionGroups: []", 1)
    main.write_text(text[:at] + rest)
    assert findings(copy) == {("alert-without-action-group", "failureRateAlert")}


def test_every_alert_rule_notifies_the_action_group_parameter_and_watches_application_insights():
    main = (REPO / "infra/main.bicep").read_text()
    rules = monitoring._resource_blocks(main, "Microsoft.Insights/scheduledQueryRules")
    assert {symbol for symbol, _ in rules} == {"poisonAlert", "failureRateAlert", "refreshMissingAlert"}
    for _, body in rules:
        assert "actionGroups: empty(alertActionGroupId) ? [] : [alertActionGroupId]" in body
        assert "scopes: [\n      insights.id\n    ]" in body
    assert "\nparam alertActionGroupId string = ''" in main


def test_an_alert_query_the_template_does_not_deploy_is_reported(copy):
    (copy / "infra/monitor/alerts/extra.kql").write_text('customMetrics\n| where name == "acr_importer.imports"\n')
    assert findings(copy) == {("monitor-not-deployed", "extra.kql")}


def test_a_workbook_not_linked_to_application_insights_is_reported(copy):
    edit(copy / "infra/main.bicep", "    sourceId: insights.id\n", "    sourceId: logs.id\n")
    assert findings(copy) == {("monitor-not-deployed", "monitor/workbook.json")}


def test_the_workbook_is_linked_to_the_deployed_application_insights():
    workbook = json.loads((REPO / "infra/monitor/workbook.json").read_text())
    assert workbook["fallbackResourceIds"] == ["__APPLICATION_INSIGHTS_ID__"]
    main = (REPO / "infra/main.bicep").read_text()
    assert ("replace(loadTextContent('monitor/workbook.json'), '__APPLICATION_INSIGHTS_ID__', insights.id)"
            in main)


def test_alert_placeholders_are_all_replaced_by_the_template():
    main = (REPO / "infra/main.bicep").read_text()
    for path in sorted((REPO / "infra/monitor/alerts").glob("*.kql")):
        for placeholder in set(re.findall(r"__[A-Z_]+__", path.read_text())):
            assert f"loadTextContent('monitor/alerts/{path.name}'), '{placeholder}'," in main, (path.name, placeholder)


# --- App Service Authentication --------------------------------------------------------------------------

def test_the_excluded_paths_are_the_machine_routes_of_function_app():
    machine, _ = monitoring.machine_paths(REPO)
    assert set(machine) >= {"/runtime/webhooks/eventgrid"}
    routes = monitoring.routes_of(REPO / "function_app.py")
    assert {r.function for r in routes if r.machine} >= {"submit_import", "import_status", "list_imports"}
    assert "/api/imports/*" in machine  # imports/{id}, as function_app.py routes it
    assert not any(p.startswith(("/api/ui", "/api/ops")) for p in machine)


def test_a_machine_route_missing_from_the_excluded_paths_is_reported(copy):
    edit(copy / "infra/main.bicep", "        '/api/imports/*'\n", "")
    [finding] = check.check(copy)
    assert (finding.rule, finding.subject) == ("sign-in-blocks-machine-path", "/api/imports/*")


def test_a_new_machine_route_must_be_excluded_too(copy):
    edit(copy / "function_app.py", '@app.route(route="imports", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)',
         '@app.route(route="imports", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)\n'
         '@app.route(route="redrive/{id}", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)')
    assert ("sign-in-blocks-machine-path", "/api/redrive/*") in findings(copy)


def test_the_event_grid_webhook_must_stay_on_its_key(copy):
    edit(copy / "infra/main.bicep",
         "        '/runtime/webhooks/eventgrid'\n        '/runtime/webhooks/EventGrid'\n", "")
    assert findings(copy) == {("sign-in-blocks-machine-path", "/runtime/webhooks/eventgrid")}


def test_an_excluded_path_that_opens_an_operator_route_is_reported(copy):
    """The page's routes choose their auth level at indexing time (not a literal FUNCTION): they need sign-in,
    so a broad exclusion such as /api/* is refused."""
    edit(copy / "function_app.py", "def _http(", 'LEVEL = func.AuthLevel.ANONYMOUS\n\n\n'
         '@app.route(route="ops/health", methods=["GET"], auth_level=LEVEL)\n'
         'def ops_health(req: func.HttpRequest) -> func.HttpResponse:\n    return func.HttpResponse("{}")\n\n\n'
         'def _http(')
    assert findings(copy) == set(), "the operator route alone, with sign-in on it, is fine"
    edit(copy / "infra/main.bicep", "        '/api/imports'\n", "        '/api/*'\n")
    assert ("sign-in-exposes-operator-path", "/api/ops/health") in findings(copy)


def test_a_client_secret_instead_of_the_managed_identity_is_reported(copy):
    edit(copy / "infra/main.bicep", "clientSecretSettingName: 'OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID'",
         "clientSecretSettingName: 'MICROSOFT_PROVIDER_AUTHENTICATION_SECRET'")
    assert {rule for rule, _ in findings(copy)} == {"sign-in-incomplete"}


def test_sign_in_is_required_and_sends_people_to_the_login_page(copy):
    edit(copy / "infra/main.bicep", "unauthenticatedClientAction: 'RedirectToLoginPage'",
         "unauthenticatedClientAction: 'AllowAnonymous'")
    assert findings(copy) == {("sign-in-incomplete", "RedirectToLoginPage")}


def test_sign_in_is_off_without_the_entra_parameters_and_sets_operator_sign_in():
    main = (REPO / "infra/main.bicep").read_text()
    settings = check.template_app_settings(main)
    assert settings["OPERATOR_SIGN_IN"] == "operatorSignIn ? 'entra' : 'key'"
    assert "var operatorSignIn = !empty(operatorSignInClientId)" in main
    assert "\nparam operatorSignInClientId string = ''" in main
    [body] = [b for _, b in monitoring._resource_blocks(main, "Microsoft.Web/sites/config") if "authsettingsV2" in b]
    head = main[main.index("resource signIn "):main.index("resource signIn ") + 120]
    assert "= if (operatorSignIn)" in head
    assert "groups: [\n                operatorGroupObjectId\n              ]" in body
    assert settings["OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID"] == "signInIdentity.properties.clientId"
    assert ("resource signInIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' "
            "= if (operatorSignIn)") in main
