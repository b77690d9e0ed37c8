"""The CLI as a person runs it: a subprocess (`python -m cli`, `bin/acr-import` from elsewhere) against the
local stack, with the app running in the runner. Plus the pure parts of redrive."""

from __future__ import annotations

import base64
import json
import os
import pty
import subprocess
import sys
import uuid

import pytest
from azure.storage.queue import QueueClient

from cli.redrive import restore_letter, restore_poison
from dev import layout, oci, seed
from shared.core.redact import REMOVED

ACR_IMPORT = layout.REPO_ROOT / "bin" / "acr-import"


def cli(*args: str, wrapper: bool = False, cwd=layout.REPO_ROOT, env: dict | None = None,
        timeout: float = 90) -> subprocess.CompletedProcess:
    argv = [str(ACR_IMPORT), *args] if wrapper else [sys.executable, "-m", "cli", *args]
    return subprocess.run(argv, cwd=cwd, env=os.environ.copy() if env is None else env, capture_output=True,
                          text=True, timeout=timeout)



def queue(app_env, suffix: str = "") -> QueueClient:
    return QueueClient.from_connection_string(layout.AZURITE_CONNECTION_STRING, app_env["IMPORT_QUEUE"] + suffix)


def test_import_follows_a_multi_arch_image_to_success_with_progress(app_env, control, runner_factory, stack):
    control.add_faults("operation", {"delay": 2})
    runner_factory(http_port=None, IMPORT_WAIT_SECONDS="0.5")
    tag = f"cli-{uuid.uuid4().hex[:6]}"
    done = cli("import", "-n", "myregistry", "--source", "docker.io/library/hello-world:latest", "-t", f"hw:{tag}",
               "--timeout", "60")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("queued cli-") and f"myregistry.azurecr.io hw:{tag} (NoForce)" in lines[0]
    progress = [line.split()[1] for line in lines[1:] if line.strip()[:1].isdigit()]
    assert progress[0] == "received" and progress[-1] == "succeeded" and "running" in progress, done.stdout
    assert any("manifests pending" in line for line in lines), done.stdout
    assert "state:      succeeded" in done.stdout
    image = oci.inspect_image(seed.admin_client(layout.TARGET_ACR.login_server), "hw", tag)
    assert image.digest == stack.digest("docker.io", "library/hello-world", "latest")
    assert len(image.platforms) == 4


def test_no_wait_then_status_and_list_through_the_wrapper_from_another_folder(app_env, runner_factory, tmp_path):
    runner_factory()
    tag = f"nowait-{uuid.uuid4().hex[:6]}"
    queued = cli("import", "--name", layout.TARGET_ACR.resource_id, "--source", "nginx:1.27", "--image",
                 f"web:{tag}", "--no-wait", wrapper=True, cwd=tmp_path)
    assert queued.returncode == 0, queued.stderr
    request_id = queued.stdout.strip()  # --no-wait: the id alone on stdout
    waited = cli("status", request_id, "--wait", "--timeout", "60", wrapper=True, cwd=tmp_path)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert "state:      succeeded" in waited.stdout and "history:" in waited.stdout
    as_json = json.loads(cli("status", request_id, "--json", wrapper=True, cwd=tmp_path).stdout)
    assert as_json["state"] == "succeeded" and as_json["targetTags"] == [f"web:{tag}"]
    listed = cli("list", "--state", "succeeded", "--since", "10m", wrapper=True, cwd=tmp_path,
                 env={**os.environ, "COLUMNS": "300"})  # wide enough for every value whole
    assert listed.returncode == 0
    header, *rows = listed.stdout.splitlines()
    assert header.split()[:3] == ["UPDATED", "(UTC)", "STATE"]
    assert any(request_id in row and f"web:{tag}" in row for row in rows)
    assert not cli("list", "--state", "failed", wrapper=True, cwd=tmp_path).stdout.strip()


def test_a_failed_import_exits_1_with_the_reason(app_env, runner_factory):
    runner_factory()
    done = cli("import", "-n", "myregistry", "--source", "mcr.microsoft.com/windows/nanoserver:never",
               "-t", f"missing:{uuid.uuid4().hex[:6]}", "--timeout", "60")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "state:      failed" in done.stdout and "MANIFEST" in done.stdout.upper()


def test_refresh_says_what_it_did_in_lines_for_people_and_keeps_the_log_events_for_debug(app_env, tmp_path):
    """The refresh's structured summary event is for the app's logs (App Insights), not a terminal: the CLI
    prints a line per result and one summary line; `--debug` adds the log lines on stderr."""
    config = tmp_path / "tracked.json"
    # a target repository of this test's own: another test may have imported hello-world:latest already
    target = f"cli-refresh-{uuid.uuid4().hex[:8]}/hello-world"
    config.write_text(json.dumps({"images": [
        {"source": "docker.io/library/hello-world", "targetRepository": target, "tags": ["latest", "no-such-tag"]}]}))
    done = cli("refresh", "--config", str(config))
    assert done.returncode == 1, done.stdout + done.stderr  # one tag is an error
    errors = done.stderr.splitlines()
    assert len(errors) == 2 and errors[0].startswith("settings: "), done.stderr
    assert errors[1] == f"checking the tracked tags in {config} against their targets...", done.stderr
    assert "{" not in done.stderr and '"event"' not in done.stdout
    out = done.stdout.splitlines()
    enqueued = f"enqueued      docker.io/library/hello-world:latest -> myregistry.azurecr.io/{target}:latest"
    assert out[0].startswith(enqueued), out
    assert out[1].startswith("error         docker.io/library/hello-world:no-such-tag"), out
    assert len(out) == 3 and out[2].startswith("checked 2, changed 0, missing 1, ") and "errors 1" in out[2], out
    loud = cli("--debug", "refresh", "--config", str(config))
    assert '"event": "refresh"' in loud.stderr and loud.stdout.splitlines()[-1].startswith("checked 2,")
    # at a terminal, progress as the checks end (rewritten in place), still no log event
    terminal, own = pty.openpty()
    try:
        subprocess.run([sys.executable, "-m", "cli", "refresh", "--dry-run", "--config", str(config)],
                       cwd=layout.REPO_ROOT, stderr=own, stdout=subprocess.DEVNULL, timeout=90, check=False)
        shown = os.read(terminal, 65536).decode()
    finally:
        os.close(own)
        os.close(terminal)
    assert "\rchecked 2/2 tags" in shown and '"event"' not in shown, shown


def test_redrive_restores_what_it_can_and_keeps_what_it_cannot(app_env, runner_factory):
    """An inline password is gone from the dead letter: redrive keeps the letter until given a credential set."""
    runner = runner_factory(ALLOW_INLINE_CREDENTIALS="true")
    request_id = f"dl-{uuid.uuid4().hex[:8]}"
    queue(app_env).send_message(json.dumps({
        "id": request_id, "source": "docker.io/myrepo/image:tag", "username": "dockeruser",
        "password": "wrong-password-123", "targetTags": [f"private:{request_id}"]}))
    assert runner.wait_idle(timeout=60)
    assert cli("status", request_id).returncode == 1

    kept = cli("redrive", "--from", "rejected")
    assert kept.returncode == 1
    assert f"kept      {request_id}" in kept.stdout and "--credential NAME" in kept.stdout
    assert "wrong-password-123" not in kept.stdout + kept.stderr
    assert len(queue(app_env, "-rejected").peek_messages(max_messages=32)) == 1

    dry = cli("redrive", "--credential", "dockerhub", "--dry-run")
    assert dry.returncode == 0 and f"would redrive {request_id}" in dry.stdout
    assert len(queue(app_env, "-rejected").peek_messages(max_messages=32)) == 1

    moved = cli("redrive", "--credential", "dockerhub", "--id", request_id)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert f"redriven  {request_id}" in moved.stdout and "was failed: " in moved.stdout
    assert queue(app_env, "-rejected").peek_messages(max_messages=32) == []
    waited = cli("status", request_id, "--wait", "--timeout", "60", "--json")
    assert waited.returncode == 0, waited.stdout
    record = json.loads(waited.stdout)
    assert record["state"] == "succeeded" and record["attempts"] == 1
    history = [t["state"] for t in record["transitions"]]
    assert history.index("failed") < history.index("received") < history.index("succeeded"), history


def test_redrive_moves_a_poison_message_back_with_a_new_transition(app_env):
    request_id = f"poison-{uuid.uuid4().hex[:8]}"
    body = {"id": request_id, "source": "nginx:1.27", "retry": {"attempt": 3,
                                                               "firstAttemptAt": "2026-01-01T00:00:00+00:00"}}
    poison = queue(app_env, "-poison")  # app_env created the queues, as the deployment does
    poison.send_message(base64.b64encode(json.dumps(body).encode()).decode())
    moved = cli("redrive", "--from", "poison")
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert poison.peek_messages() == []
    [message] = queue(app_env).receive_messages()
    sent = json.loads(base64.b64decode(message.content))
    assert sent == {"id": request_id, "source": "nginx:1.27"}
    status = json.loads(cli("status", request_id, "--json").stdout)
    assert status["state"] == "received" and "redriven from" in status["reason"]
    assert status["reason"].find(app_env["IMPORT_QUEUE"] + "-poison") > 0


def test_bad_flags_and_bad_requests_exit_2_with_every_problem(app_env):
    missing = cli("import", "-n", "myregistry")
    assert missing.returncode == 2 and "--source" in missing.stderr
    password = cli("import", "-n", "myregistry", "--source", "nginx", "-p", "s3cret-value")
    assert password.returncode == 2 and "--credential NAME" in password.stderr
    assert "s3cret-value" not in password.stderr
    unknown = cli("import", "-n", "nosuchregistry", "--source", "nginx")
    assert unknown.returncode == 2 and "myregistry" in unknown.stderr
    invalid = cli("import", "-n", "myregistry", "--source", "nginx:Bad Tag", "-t", "UPPER:x", "--credential", "nope")
    assert invalid.returncode == 2
    problems = [line.strip().split(":")[0] for line in invalid.stderr.splitlines()[1:]]
    assert {"source", "targetTags[0]", "credential"} <= set(problems), invalid.stderr


def test_prune_deletes_rows_older_than_the_retention_and_keeps_newer_ones(app_env):
    from azure.data.tables import TableServiceClient

    from shared.azure.status import StatusRecord, StatusStore
    from shared.core.outcome import State

    store = StatusStore(app_env["IMPORT_STATUS_TABLE"])
    store.transition("recent", State.SUCCEEDED)
    table = TableServiceClient.from_connection_string(layout.AZURITE_CONNECTION_STRING).get_table_client(
        app_env["IMPORT_STATUS_TABLE"])
    table.upsert_entity(StatusRecord("old", State.FAILED, updated_at="2020-01-01T00:00:00+00:00").to_entity())
    table.upsert_entity({"PartitionKey": "refresh", "RowKey": "latest", "Summary": "{}"})
    kept_forever = cli("prune", env={**os.environ, "STATUS_RETENTION_DAYS": "0"})
    assert kept_forever.returncode == 0 and store.get("old") is not None
    done = cli("prune")
    assert done.returncode == 0 and done.stdout.startswith("deleted 1 rows"), done.stdout + done.stderr
    assert store.get("old") is None and store.get("recent") is not None
    assert table.get_entity("refresh", "latest")


def test_the_daily_prune_timer_applies_the_retention(app_env, runner_factory):
    from azure.data.tables import TableServiceClient

    from shared.azure.status import StatusRecord, StatusStore
    from shared.core.outcome import State

    table = TableServiceClient.from_connection_string(layout.AZURITE_CONNECTION_STRING).create_table_if_not_exists(
        app_env["IMPORT_STATUS_TABLE"])
    table.upsert_entity(StatusRecord("years-old", State.SUCCEEDED, updated_at="2020-01-01T00:00:00+00:00").to_entity())
    store = StatusStore(app_env["IMPORT_STATUS_TABLE"])
    store.transition("today", State.SUCCEEDED)
    runner = runner_factory(STATUS_RETENTION_DAYS="1")
    assert runner.trigger_timer("prune_import_status").outcome == "ok"
    assert store.get("years-old") is None and store.get("today") is not None


def test_missing_storage_settings_are_named(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AzureWebJobsStorage")}
    # from elsewhere than the repo root, where `make run` may have left a local.settings.json
    done = cli("list", env=env, cwd=tmp_path, wrapper=True)
    assert done.returncode == 2 and "AzureWebJobsStorage" in done.stderr and "az login" in done.stderr


# --- redrive's restoring rules, without storage --------------------------------------------------------------
def letter(body, **extra) -> dict:
    return {"id": "r1", "state": "failed", "reason": "UNAUTHORIZED", "body": body, **extra}


def test_a_letter_with_a_removed_password_needs_a_credential_set():
    body = {"id": "r1", "source": "docker.io/me/app:1", "username": "me", "password": REMOVED,
            "retry": {"attempt": 2}}
    assert restore_letter(letter(body), "m1", credential=None).document is None
    restored = restore_letter(letter(body), "m1", credential="DOCKERHUB")
    assert restored.document == {"id": "r1", "source": "docker.io/me/app:1", "credential": "DOCKERHUB"}
    assert restored.previously == "failed: UNAUTHORIZED"


@pytest.mark.parametrize("bad", [letter("not json at all"), letter('{"source": "ngi', bodyTruncated=True),
                                 letter({"source": f"registry.example/{REMOVED}/x"}), "plain text", {"id": "x"}])
def test_letters_that_cannot_be_restored_say_why(bad):
    restored = restore_letter(bad, "m1", credential=None)
    assert restored.document is None and restored.why_not


def test_a_poison_message_keeps_its_id_or_takes_the_message_id():
    assert restore_poison('{"source": "nginx", "operation": {}}', "m9", credential=None).document == {
        "source": "nginx", "id": "m9"}
    assert restore_poison("%%%", "m9", credential=None).document is None
