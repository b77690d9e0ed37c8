"""Backup before a tag moves (BACKUP_TAG_TEMPLATE), end to end: real `import_image` on a queue message, the
ARM stand-in copying between real registries, the row in Azurite. What is checked is what a user sees: the
target registry itself (read with an admin registry client, not the app's bookkeeping), the request's row
and reason, and the importImage bodies ARM received."""

from __future__ import annotations

import json
import uuid
from datetime import datetime

import pytest

from cli.status import summary_lines
from dev import layout, seed
from shared import app_context
from shared.core.outcome import State
from shared.imports.http_api import status_body
from tests.helpers import deliver, next_retry, status

TARGET = layout.TARGET_ACR.resource_id
TEMPLATE = "{tag}-backup-{date}"
HELLO = "docker.io/library/hello-world:latest"
NGINX = "docker.io/library/nginx:1.27"


@pytest.fixture
def backups_on(app_env, monkeypatch):
    monkeypatch.setenv("BACKUP_TAG_TEMPLATE", TEMPLATE)
    app_context.reset()


def target_digest(repo: str, tag: str) -> str | None:
    found = seed.admin_client(layout.TARGET_ACR.login_server).head_manifest(repo, tag)
    return found.digest if found else None


def import_posts(control) -> list[dict]:
    return [r["body"] for r in control.requests() if r["method"] == "POST" and r["path"].endswith("/importImage")]


def backup_posts(control) -> list[dict]:
    return [b for b in import_posts(control) if b["source"].get("resourceId") == TARGET]


def backup_name(record, tag: str) -> str:
    return f"{tag}-backup-{datetime.fromisoformat(record.first_attempt_at):%Y%m%d}"


def existing_tag(stack, source: str = HELLO) -> tuple[str, str]:
    """A new target tag `app:<tag>` holding `source`'s image (imported NoForce: no backup), and its digest."""
    tag = f"bk-{uuid.uuid4().hex[:8]}"
    request_id = deliver({"source": source, "targetTags": [f"app:{tag}"]})
    assert status(request_id).state is State.SUCCEEDED, status(request_id).reason
    digest = target_digest("app", tag)
    assert digest is not None
    return tag, digest


@pytest.mark.parametrize("mode", ["Force", "IfChanged"])
def test_a_moved_tag_keeps_its_previous_image_under_the_backup_tag(backups_on, control, stack, mode):
    tag, old = existing_tag(stack)
    control.clear_requests()
    request_id = deliver({"source": NGINX, "targetTags": [f"app:{tag}"], "mode": mode})
    record = status(request_id)
    assert record.state is State.SUCCEEDED, record.reason
    backup = backup_name(record, tag)
    assert target_digest("app", tag) == stack.digest("docker.io", "library/nginx", "1.27"), "the tag moved"
    assert target_digest("app", backup) == old, "the previous image is kept under the backup tag"
    assert record.backup_tags == [f"app:{backup}={old}"]
    assert f"kept the previous {old[:19]}… as app:{backup}" in record.reason
    assert f"backups:    app:{backup}={old}" in summary_lines(record), "bin/acr-import status shows it"
    assert status_body(record)["backupTags"] == [f"app:{backup}={old}"], "and the HTTP API / --json"
    first, second = import_posts(control)
    assert first == {"source": {"resourceId": TARGET, "sourceImage": f"app@{old}"},
                     "targetTags": [f"app:{backup}"], "mode": "Force"}, "the backup first, inside the target"
    assert second["targetTags"] == [f"app:{tag}"] and second["mode"] == "Force"


def test_no_backup_for_a_new_tag_or_one_that_already_holds_the_source(backups_on, control, stack):
    new = f"bk-new-{uuid.uuid4().hex[:8]}"
    tag, _ = existing_tag(stack, NGINX)
    control.clear_requests()
    request_id = deliver({"source": NGINX, "targetTags": [f"app:{new}", f"app:{tag}"], "mode": "Force"})
    record = status(request_id)
    assert record.state is State.SUCCEEDED, record.reason
    assert record.backup_tags == [] and "kept the previous" not in record.reason
    assert backup_posts(control) == [] and len(import_posts(control)) == 1
    assert target_digest("app", backup_name(record, new)) is None
    assert target_digest("app", backup_name(record, tag)) is None


def test_no_backup_without_a_template(app_env, control, stack):
    tag, old = existing_tag(stack)
    control.clear_requests()
    request_id = deliver({"source": NGINX, "targetTags": [f"app:{tag}"], "mode": "Force"})
    record = status(request_id)
    assert record.state is State.SUCCEEDED and record.backup_tags == []
    assert backup_posts(control) == []
    assert target_digest("app", tag) != old and target_digest("app", backup_name(record, tag)) is None


def test_no_backup_for_no_force(backups_on, control, stack):
    tag, old = existing_tag(stack)
    control.clear_requests()
    request_id = deliver({"source": NGINX, "targetTags": [f"app:{tag}"]})
    record = status(request_id)
    assert record.state is State.FAILED, "NoForce never moves a tag"
    assert backup_posts(control) == [] and target_digest("app", tag) == old


def test_a_backup_that_fails_leaves_the_tag_and_is_retried(backups_on, app_env, control, stack):
    tag, old = existing_tag(stack)
    control.clear_requests()
    control.add_faults("operation", {"fail": {"code": "InternalServerError", "message": "copy failed"}})
    request_id = deliver({"source": NGINX, "targetTags": [f"app:{tag}"], "mode": "Force"})
    record = status(request_id)
    assert record.state is State.RETRYING and record.code == "BackupFailed"
    assert f"app:{tag} was left where it was at {old} (not moved): its backup app:{backup_name(record, tag)} " \
           "could not be made" in record.reason
    assert target_digest("app", tag) == old, "never moved without the backup that was asked for"
    assert len(import_posts(control)) == 1, "the main import was never started"
    deliver(next_retry(app_env))
    record = status(request_id)
    assert record.state is State.SUCCEEDED, record.reason
    assert target_digest("app", backup_name(record, tag)) == old
    assert target_digest("app", tag) == stack.digest("docker.io", "library/nginx", "1.27")


def test_a_backup_that_keeps_failing_ends_failed_with_the_tag_unmoved(backups_on, control, stack, monkeypatch):
    monkeypatch.setenv("IMPORT_MAX_ATTEMPTS", "1")
    app_context.reset()
    tag, old = existing_tag(stack)
    control.add_faults("operation", {"fail": {"code": "InternalServerError", "message": "copy failed"}})
    request_id = deliver({"source": NGINX, "targetTags": [f"app:{tag}"], "mode": "IfChanged"})
    record = status(request_id)
    assert record.state is State.FAILED and record.code == "BackupFailed"
    assert "gave up after 1 attempts" in record.reason and "was left where it was" in record.reason
    assert target_digest("app", tag) == old and record.backup_tags == []


def test_a_new_attempt_after_the_backup_makes_the_same_backup_not_a_second(backups_on, app_env, control, stack):
    """The backup is made, then the main import's POST fails (500): the next attempt starts over from the
    row as a redelivery after a crash there would (RUNNING or RETRYING, no operation): it renders the same
    name from the run's first attempt and imports the same digest under it again (Force: harmless)."""
    tag, old = existing_tag(stack)
    control.clear_requests()
    control.add_faults("import", {}, {"status": 500})  # the backup's POST passes, the main import's fails
    request_id = deliver({"source": NGINX, "targetTags": [f"app:{tag}"], "mode": "Force"})
    record = status(request_id)
    assert record.state is State.RETRYING, record.reason
    backup = backup_name(record, tag)
    assert record.backup_tags == [f"app:{backup}={old}"] and target_digest("app", backup) == old
    assert target_digest("app", tag) == old
    deliver(next_retry(app_env))
    record = status(request_id)
    assert record.state is State.SUCCEEDED, record.reason
    assert record.backup_tags == [f"app:{backup}={old}"]
    first, again = backup_posts(control)
    assert first == again, "the same backup again, by the same name"
    assert target_digest("app", backup) == old
    assert target_digest("app", tag) == stack.digest("docker.io", "library/nginx", "1.27")


def test_a_broken_template_fails_force_and_ifchanged_naming_it_and_lets_no_force_go_on(app_env, control, stack,
                                                                                        monkeypatch):
    monkeypatch.setenv("BACKUP_TAG_TEMPLATE", "{tag}-{nope}")
    app_context.reset()
    tag = f"bk-{uuid.uuid4().hex[:8]}"
    for mode in ("Force", "IfChanged"):
        record = status(deliver({"source": NGINX, "targetTags": [f"app:{tag}"], "mode": mode}))
        assert record.state is State.FAILED and record.code == "SettingsInvalid"
        assert "BACKUP_TAG_TEMPLATE has an unknown placeholder {nope}" in record.reason
    assert import_posts(control) == []
    record = status(deliver({"source": NGINX, "targetTags": [f"app:{tag}"]}))
    assert record.state is State.SUCCEEDED, record.reason


def test_a_refresh_that_moves_a_tracked_tag_keeps_the_previous_image(app_env, runner_factory, tmp_path):
    """The refresh enqueues IfChanged imports: a tag it moves gets its backup the same way."""
    from shared.azure.status import StatusStore

    uid = uuid.uuid4().hex[:8]
    repo, prefix = f"library/bk-{uid}", f"bk{uid}/"
    old = seed.push_image(seed.admin_client("docker.io"), repo, "1.0", seed.build_image(repo, ["linux/amd64"]))
    path = tmp_path / "tracked.json"
    path.write_text(json.dumps({"version": 1, "images": [{"source": f"docker.io/{repo}", "tags": ["1.0"],
                                                          "targetPrefix": prefix}]}))
    runner = runner_factory(TRACKED_IMAGES=str(path), BACKUP_TAG_TEMPLATE=TEMPLATE)
    target_repo = f"{prefix}bk-{uid}"

    def refresh() -> None:
        invocation = runner.trigger_timer("refresh_tracked_images")
        assert invocation.outcome == "ok", invocation.error
        assert runner.wait_idle(timeout=120), "the imports did not drain"

    refresh()
    assert target_digest(target_repo, "1.0") == old
    new = seed.push_image(seed.admin_client("docker.io"), repo, "1.0",
                          seed.build_image(repo, ["linux/amd64"], version=2))
    refresh()
    assert target_digest(target_repo, "1.0") == new
    [moved] = [r for r in StatusStore(app_env["IMPORT_STATUS_TABLE"]).list() if r.backup_tags]
    backup = backup_name(moved, "1.0")
    assert moved.backup_tags == [f"{target_repo}:{backup}={old}"] and moved.state is State.SUCCEEDED
    assert target_digest(target_repo, backup) == old
