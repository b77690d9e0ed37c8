"""The deployment template against the code (infra/check.py), and proof that the guard bites: each test
mutates a copy of the template (or the code or the sample) and asserts the finding a deployer would need."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from infra import check

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def copy(tmp_path):
    """A copy of what the checker reads: infra/, the sample settings and the app code."""
    shutil.copytree(REPO / "infra", tmp_path / "infra", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "shared", tmp_path / "shared", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "function_app.py", tmp_path)
    shutil.copy(REPO / "local.settings.sample.json", tmp_path)
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"the mutation's anchor {old!r} is gone from {path.name}"
    path.write_text(text.replace(old, new, 1))


def rules(findings) -> set[tuple[str, str]]:
    return {(f.rule, f.subject) for f in findings}


def test_the_repository_passes():
    assert check.check(REPO) == []


def test_python_m_infra_check_reports_and_exits_nonzero_on_a_finding(copy):
    ok = subprocess.run([sys.executable, "-m", "infra.check"], cwd=REPO, capture_output=True, text=True)
    assert ok.returncode == 0 and "no keys" in ok.stdout
    edit(copy / "infra/main.bicep", "allowSharedKeyAccess: false", "allowSharedKeyAccess: true")
    findings = check.check(copy)
    assert [f.rule for f in findings] == ["connection-uses-key"]
    assert "allowSharedKeyAccess" in str(findings[0])


# --- settings ------------------------------------------------------------------------------------------

def test_a_setting_dropped_from_the_template_is_reported_with_where_the_code_reads_it(copy):
    edit(copy / "infra/main.bicep", "  { name: 'IMPORT_WAIT_SECONDS', value: string(tuned.IMPORT_WAIT_SECONDS) }\n", "")
    [finding] = check.check(copy)
    assert (finding.rule, finding.subject) == ("setting-missing-from-template", "IMPORT_WAIT_SECONDS")
    assert "shared/core/settings.py:" in finding.message


def test_a_setting_written_twice_is_reported_once(copy):
    edit(copy / "infra/main.bicep", "  { name: 'IMPORT_WAIT_SECONDS', value: string(tuned.IMPORT_WAIT_SECONDS) }\n",
         "  { name: 'IMPORT_WAIT_SECONDS', value: string(tuned.IMPORT_WAIT_SECONDS) }\n"
         "  { name: 'IMPORT_WAIT_SECONDS', value: '5' }\n")
    assert rules(check.check(copy)) == {("setting-set-twice", "IMPORT_WAIT_SECONDS")}


def test_a_new_setting_in_the_code_must_reach_template_and_sample(copy):
    (copy / "shared/replication/rules_file.py").write_text(
        'import os\n\ndef rules_file():\n    return os.environ.get("REPLICATION_RULES_FILE", "replication.json")\n')
    assert rules(check.check(copy)) == {("setting-missing-from-template", "REPLICATION_RULES_FILE"),
                                        ("setting-missing-from-sample", "REPLICATION_RULES_FILE")}


def test_settings_read_through_helpers_constants_and_bindings_are_found(copy):
    (copy / "shared/extra.py").write_text(
        'import os\nNAME = "EXTRA_CONSTANT"\n\ndef read(env):\n'
        '    return _number(env, "EXTRA_HELPER", 1, 0), os.environ[NAME], os.getenv("EXTRA_GETENV")\n')
    edit(copy / "function_app.py", 'schedule="%REFRESH_SCHEDULE%"', 'schedule="%EXTRA_SCHEDULE%"')
    missing = {subject for rule, subject in rules(check.check(copy)) if rule == "setting-missing-from-template"}
    assert missing == {"EXTRA_CONSTANT", "EXTRA_HELPER", "EXTRA_GETENV", "EXTRA_SCHEDULE"}


def test_a_setting_missing_from_the_sample_is_reported(copy):
    sample = json.loads((copy / "local.settings.sample.json").read_text())
    del sample["Values"]["REFRESH_SCHEDULE"]
    (copy / "local.settings.sample.json").write_text(json.dumps(sample))
    assert rules(check.check(copy)) == {("setting-missing-from-sample", "REFRESH_SCHEDULE")}


def test_identity_based_storage_is_required_in_the_template(copy):
    edit(copy / "infra/main.bicep",
         "  { name: 'AzureWebJobsStorage__queueServiceUri', value: storage.properties.primaryEndpoints.queue }\n", "")
    edit(copy / "infra/main.bicep",
         "  { name: 'AzureWebJobsStorage__tableServiceUri', value: storage.properties.primaryEndpoints.table }\n", "")
    edit(copy / "infra/main.bicep",
         "  { name: 'AzureWebJobsStorage__blobServiceUri', value: storage.properties.primaryEndpoints.blob }\n", "")
    assert ("setting-missing-from-template", "*__*ServiceUri") in rules(check.check(copy))


# --- roles ---------------------------------------------------------------------------------------------

def test_an_action_beyond_import_is_reported(copy):
    edit(copy / "infra/modules/roles.bicep", "          'Microsoft.ContainerRegistry/registries/importImage/action'\n",
         "          'Microsoft.ContainerRegistry/registries/importImage/action'\n"
         "          'Microsoft.ContainerRegistry/registries/push/write'\n")
    [finding] = check.check(copy)
    assert (finding.rule, finding.subject) == ("role-grants-too-much", "importRole")
    assert "push/write" in finding.message


@pytest.mark.parametrize("grant", ["'Microsoft.ContainerRegistry/*'", "'*'"])
def test_a_wildcard_action_is_reported(copy, grant):
    edit(copy / "infra/modules/roles.bicep", "          'Microsoft.ContainerRegistry/registries/pull/read'\n        ]",
         f"          {grant}\n        ]")
    assert rules(check.check(copy)) == {("role-grants-too-much", "importRole")}


def test_data_actions_are_reported(copy):
    edit(copy / "infra/modules/roles.bicep", "dataActions: []",
         "dataActions: [\n          'Microsoft.ContainerRegistry/registries/repositories/content/write'\n        ]")
    assert ("role-grants-too-much", "importRole") in rules(check.check(copy))


def test_assigning_contributor_instead_of_the_custom_role_is_reported(copy):
    edit(copy / "infra/main.bicep", "roleDefinitionName: roles.outputs.importRoleName",
         "roleDefinitionName: 'b24988ac-6180-42a0-ab88-20f7382dd24c'")
    assert rules(check.check(copy)) == {("role-unknown-built-in", "b24988ac-6180-42a0-ab88-20f7382dd24c")}


def test_a_custom_role_the_checker_does_not_know_is_reported(copy):
    text = (copy / "infra/modules/roles.bicep").read_text()
    (copy / "infra/modules/roles.bicep").write_text(text.replace("resource sourceRole", "resource readerRole"))
    assert rules(check.check(copy)) == {("role-unknown", "readerRole"), ("role-missing", "sourceRole")}


# --- keys ----------------------------------------------------------------------------------------------

def test_a_storage_connection_string_with_a_key_is_reported(copy):
    edit(copy / "infra/main.bicep", "  { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }\n",
         "  { name: 'AzureWebJobsStorage', value: 'DefaultEndpointsProtocol=https;AccountName=${storage.name};"
         "AccountKey=${storage.listKeys().keys[0].value}' }\n")
    found = check.check(copy)
    subjects = {f.subject for f in found if f.rule == "connection-uses-key"}
    assert {"AzureWebJobsStorage", "AzureWebJobsStorage__credential"} <= subjects
    messages = " ".join(f.message for f in found)
    assert "AccountKey" in messages and "listKeys" in messages


def test_key_based_application_insights_and_vault_access_policies_are_reported(copy):
    edit(copy / "infra/main.bicep", "DisableLocalAuth: true", "DisableLocalAuth: false")
    edit(copy / "infra/main.bicep", "enableRbacAuthorization: true", "enableRbacAuthorization: false")
    messages = [f.message for f in check.check(copy)]
    assert any("DisableLocalAuth" in m for m in messages) and any("enableRbacAuthorization" in m for m in messages)


def test_a_password_that_is_not_a_key_vault_reference_is_reported(copy):
    edit(copy / "infra/main.bicep",
         "value: '@Microsoft.KeyVault(VaultName=${vaultName};SecretName=${c.secretName})'", "value: c.password")
    assert rules(check.check(copy)) == {("connection-uses-key", "SOURCE_CREDENTIALS__*__PASSWORD")}


def test_deployment_storage_with_a_connection_string_is_reported(copy):
    edit(copy / "infra/main.bicep", "type: 'SystemAssignedIdentity'", "type: 'StorageAccountConnectionString'")
    assert [f.rule for f in check.check(copy)] == ["connection-uses-key"]


# --- what the template promises beyond the checker's rules ---------------------------------------------

def test_the_template_declares_the_queues_table_and_event_filter_the_app_uses():
    main = (REPO / "infra/main.bicep").read_text()
    events = (REPO / "infra/modules/push-events.bicep").read_text()
    assert "[importQueue, '${importQueue}-rejected', '${importQueue}-poison']" in main
    assert "name: statusTable" in main
    assert "/functions/replicate_on_push" in events
    assert "includedEventTypes: [\n        'Microsoft.ContainerRegistry.ImagePushed'\n      ]" in events
    assert "name: 'python'\n        version: '3.11'" in main and "tier: 'FlexConsumption'" in main


def test_the_parameters_example_names_only_parameters_the_template_declares():
    main = (REPO / "infra/main.bicep").read_text()
    example = json.loads((REPO / "infra/main.parameters.example.json").read_text())
    for name in example["parameters"]:
        assert f"\nparam {name} " in main, name
    tuning = example["parameters"]["tuning"]["value"]
    assert all(f"  {key}: '" in main for key in tuning)
