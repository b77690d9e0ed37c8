"""The scheduled refresh end to end: the runner fires `refresh_tracked_images`, requests go through the queue,
the Azure stand-in imports between real registries. Reads are counted where they land: at the Docker Hub
front (the app's Docker Hub reads) and in the target registry's access log."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import subprocess
import sys
import uuid
from collections import Counter

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueClient

from dev import layout, seed
from shared.azure.status import StatusStore
from shared.core.outcome import State
from shared.refresh.run import RefreshLog

TARGET_LOG = layout.STATE_DIR / "logs" / "acr-myregistry.log"
ACCESS = re.compile(r'"(HEAD|GET|PUT|POST|PATCH|DELETE) (/v2/\S*) HTTP')



@pytest.fixture
def uid() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def tracked(tmp_path, runner_factory):
    """Write a tracked-images file and start the runner with TRACKED_IMAGES pointing at it."""
    def start(*images: dict, **settings: str):
        path = tmp_path / "tracked.json"
        path.write_text(json.dumps({"version": 1, "images": list(images)}))
        return runner_factory(TRACKED_IMAGES=str(path), **settings)

    return start


def push(host: str, repo: str, tag: str, *, version: int = 1) -> str:
    image = seed.build_image(repo, ["linux/amd64", "linux/arm64"], version=version)
    return seed.push_image(seed.admin_client(host), repo, tag, image)


def target_digest(repo: str, tag: str) -> str | None:
    found = seed.admin_client(layout.TARGET_ACR.login_server).head_manifest(repo, tag)
    return found.digest if found else None


def refresh(runner, app_env) -> dict:
    invocation = runner.trigger_timer("refresh_tracked_images")
    assert invocation.outcome == "ok", invocation.error
    assert runner.wait_idle(timeout=120), "the imports did not drain"
    return RefreshLog(app_env["IMPORT_STATUS_TABLE"]).latest()


def target_log_offset() -> int:
    return TARGET_LOG.stat().st_size


def target_requests_since(offset: int) -> Counter:
    with open(TARGET_LOG, "rb") as log:
        log.seek(offset)
        text = log.read().decode(errors="replace")
    return Counter(f"{m.group(1)} {'manifests' if '/manifests/' in m.group(2) else m.group(2)}"
                   for m in ACCESS.finditer(text))


def records(app_env) -> list:
    return StatusStore(app_env["IMPORT_STATUS_TABLE"]).list()


def test_refresh_imports_what_is_missing_then_only_heads_then_exactly_the_changed_tag(app_env, tracked, front, uid):
    hub, mcr, contoso, private = (f"library/rf-{uid}", f"rf-{uid}/base", f"rf-{uid}/app", f"myrepo/rf-{uid}")
    digests = {("hub", "1.0"): push("docker.io", hub, "1.0"), ("hub", "2.0"): push("docker.io", hub, "2.0"),
               ("mcr", "ltsc"): push("mcr.microsoft.com", mcr, "ltsc"),
               ("contoso", "v1"): push("registry.contoso.com", contoso, "v1"),
               ("private", "v1"): push("docker.io", private, "v1")}
    prefix = f"rf{uid}/"
    runner = tracked(
        {"source": f"docker.io/{hub}", "tags": ["1.0", "2.0"], "targetPrefix": prefix},
        {"source": f"mcr.microsoft.com/{mcr}", "tags": ["ltsc"], "targetPrefix": prefix},
        {"source": f"registry.contoso.com/{contoso}", "tags": ["v1"], "credential": "contoso", "targetPrefix": prefix},
        {"source": f"docker.io/{private}", "tags": ["v1"], "credential": "dockerhub", "targetPrefix": prefix},
        REFERRERS="none")  # the cost of a refresh without referrers: two HEADs a tag (see the referrers test below)

    first = refresh(runner, app_env)
    assert (first["missing"], first["enqueued"], first["errors"]) == (5, 5, 0), first
    assert first["rateLimitRemaining"]["docker.io"] > 0
    assert {r.state for r in records(app_env)} == {State.SUCCEEDED}
    repos = {"hub": f"{prefix}rf-{uid}", "mcr": f"{prefix}{mcr}", "contoso": f"{prefix}{contoso}",
             "private": f"{prefix}{private}"}
    for (name, tag), digest in digests.items():
        assert target_digest(repos[name], tag) == digest, (name, tag)

    front.reset()
    offset = target_log_offset()
    second = refresh(runner, app_env)
    assert (second["unchanged"], second["enqueued"], second["checked"]) == (5, 0, 5), second
    assert front.stats() == {"HEAD manifests": 3}  # docker.io: 1.0, 2.0 and the private v1; nothing else
    assert target_requests_since(offset) == Counter({"HEAD manifests": 5})
    assert len(records(app_env)) == 5

    moved = push("docker.io", hub, "2.0", version=2)
    third = refresh(runner, app_env)
    assert (third["changed"], third["unchanged"], third["enqueued"]) == (1, 4, 1), third
    assert target_digest(repos["hub"], "2.0") == moved
    assert target_digest(repos["hub"], "1.0") == digests[("hub", "1.0")]
    latest = [r for r in records(app_env) if r.source.endswith(":2.0")]
    assert [r.state for r in latest].count(State.SUCCEEDED) == 2 and len(records(app_env)) == 6


def test_a_new_tag_inside_the_semver_range_is_picked_up_and_a_denied_one_is_not(app_env, tracked, uid):
    repo = f"library/sv-{uid}"
    for tag in ("1.24", "1.25", "1.26.0-rc1", "2.0"):
        push("docker.io", repo, tag)
    runner = tracked({"source": f"docker.io/{repo}", "semver": ">=1.25 <2", "exclude": [r"1\.29.*"],
                      "targetPrefix": f"sv{uid}/"})
    first = refresh(runner, app_env)
    assert first["enqueued"] == 1
    target = f"sv{uid}/sv-{uid}"
    assert target_digest(target, "1.25") is not None and target_digest(target, "1.24") is None
    assert target_digest(target, "1.26.0-rc1") is None and target_digest(target, "2.0") is None

    push("docker.io", repo, "1.27")
    push("docker.io", repo, "1.29")
    second = refresh(runner, app_env)
    assert (second["missing"], second["unchanged"], second["enqueued"]) == (1, 1, 1), second
    assert target_digest(target, "1.27") is not None and target_digest(target, "1.29") is None


def test_an_upstream_answering_429_is_backed_off_and_reported_while_the_others_refresh(app_env, tracked, front,
                                                                                       uid):
    hub, mcr = f"library/rl-{uid}", f"rl-{uid}/base"
    push("docker.io", hub, "1")
    push("docker.io", hub, "2")
    mcr_digest = push("mcr.microsoft.com", mcr, "1")
    runner = tracked({"source": f"docker.io/{hub}", "tags": ["1", "2"], "targetPrefix": f"rl{uid}/"},
                     {"source": f"mcr.microsoft.com/{mcr}", "tags": ["1"], "targetPrefix": f"rl{uid}/"})
    front.fail(429, retry_after=60)
    first = refresh(runner, app_env)
    assert (first["skipped"], first["missing"], first["enqueued"]) == (2, 1, 1), first
    assert "docker.io" in first["backoffUntil"] and first["rateLimitRemaining"]["docker.io"] is not None
    assert target_digest(f"rl{uid}/{mcr}", "1") == mcr_digest
    assert front.stats().get("HEAD manifests", 0) >= 1

    front.reset()  # Docker Hub answers again, but the Retry-After has not passed
    second = refresh(runner, app_env)
    assert (second["skipped"], second["unchanged"], second["enqueued"]) == (2, 1, 0), second
    assert front.stats() == {}
    assert target_digest(f"rl{uid}/rl-{uid}", "1") is None


def test_if_changed_skips_an_unchanged_image_and_a_matching_no_force_conflict_succeeds(app_env, tracked, stack,
                                                                                       uid):
    runner = tracked({"source": "nginx", "tags": ["1.27"]})
    queue = QueueClient.from_connection_string(layout.AZURITE_CONNECTION_STRING, app_env["IMPORT_QUEUE"])
    digest = stack.digest("docker.io", "library/nginx", "1.27")

    def run(doc: dict):
        queue.send_message(json.dumps(doc))
        assert runner.wait_idle(timeout=90)
        return StatusStore(app_env["IMPORT_STATUS_TABLE"]).get(doc["id"])

    tag = f"ifc-{uid}:a"
    first = run({"id": f"a-{uid}", "source": "nginx:1.27", "targetTags": [tag], "mode": "IfChanged"})
    assert (first.state, first.reason) == (State.SUCCEEDED, "imported; no referrers")
    again = run({"id": f"b-{uid}", "source": "nginx:1.27", "targetTags": [tag], "mode": "IfChanged"})
    assert (again.state, again.reason) == (State.SKIPPED, f"unchanged: {digest}; no referrers")
    same = run({"id": f"c-{uid}", "source": "nginx:1.27", "targetTags": [tag]})
    assert same.state is State.SUCCEEDED and digest in same.reason
    other = run({"id": f"d-{uid}", "source": "nginx:latest", "targetTags": [tag]})
    if stack.digest("docker.io", "library/nginx", "latest") != digest:
        assert other.state is State.FAILED and "already exists" in other.reason
    moved = run({"id": f"e-{uid}", "source": "hello-world:latest", "targetTags": [tag], "mode": "IfChanged"})
    assert moved.state is State.SUCCEEDED
    assert target_digest(f"ifc-{uid}", "a") == stack.digest("docker.io", "library/hello-world", "latest")


def test_dry_run_prints_the_plan_and_enqueues_nothing(app_env, tmp_path, uid):
    repo = f"library/dr-{uid}"
    push("docker.io", repo, "1")
    config = tmp_path / "tracked.json"
    config.write_text(json.dumps({"images": [{"source": f"docker.io/{repo}", "tags": ["1", "9"]}]}))
    done = subprocess.run([sys.executable, "-m", "cli", "refresh", "--dry-run", "--config", str(config)],
                          capture_output=True, text=True, cwd=layout.REPO_ROOT, env={**app_env, "PATH": "/usr/bin"},
                          timeout=60)
    out = done.stdout
    assert f"would import  docker.io/{repo}:1 -> myregistry.azurecr.io/dr-{uid}:1  (missing: not in the target)" in out
    assert f"error         docker.io/{repo}:9" in out and "tag not found upstream" in out
    assert "missing 1" in out and "dry run: nothing enqueued" in out and done.returncode == 1
    queue = QueueClient.from_connection_string(layout.AZURITE_CONNECTION_STRING, app_env["IMPORT_QUEUE"])
    with contextlib.suppress(ResourceNotFoundError):
        assert list(queue.peek_messages()) == []


class SlowReader:
    """Every manifest exists with one digest; each HEAD takes `delay` seconds (planning logic only)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def head_manifest(self, host, repository, reference, auth=None):
        import time

        from shared.registry.client import ManifestHead

        time.sleep(self.delay)
        return ManifestHead("sha256:" + "a" * 64, "application/vnd.oci.image.index.v1+json", 1)

    def list_tags(self, host, repository, auth=None):
        return []

    def rate_limit(self, host):
        return None

    def manifest(self, host, repository, reference, auth=None):
        return None

    def referrers(self, host, repository, digest, auth=None):
        return []


def test_tags_beyond_the_time_budget_are_skipped_for_the_next_run():
    from shared.core.settings import load_settings
    from shared.refresh.run import SKIPPED, UNCHANGED, plan_refresh
    from shared.refresh.tracked import parse_config
    from shared.registry.client import IdentityAuth

    settings = load_settings({"TARGET_REGISTRY": layout.TARGET_ACR.resource_id, "REFRESH_CONCURRENCY": "1",
                              "REFRESH_TIME_BUDGET_SECONDS": "1", "REFERRERS": "none"})
    config = parse_config(json.dumps({"images": [{"source": "nginx", "tags": ["a", "b", "c"]}]}), settings)
    plan = plan_refresh(list(config.images), SlowReader(0.6), settings, IdentityAuth(None))
    assert [c.status for c in plan.checks] == [UNCHANGED, SKIPPED, SKIPPED]
    assert "time budget" in plan.checks[1].reason and plan.imports == []


def attach_signature(host: str, repo: str, subject: str, *, name: str = "sig") -> str:
    """What `notation sign` leaves on a registry without the referrers API (OCI 1.1's tag schema): a signature
    manifest whose `subject` is the image, and an index under the tag `sha256-<hex>` listing it."""
    client = seed.admin_client(host)
    head = client.head_manifest(repo, subject)
    assert head is not None
    empty = client.put_blob(repo, b"{}")
    envelope = json.dumps({"payload": name, "signatures": []}).encode()
    layer = client.put_blob(repo, envelope)
    signature = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                 "artifactType": "application/vnd.cncf.notary.signature",
                 "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
                 "layers": [{"mediaType": "application/jose+json", "digest": layer, "size": len(envelope)}],
                 "subject": {"mediaType": head.media_type, "digest": subject, "size": head.size}}
    body = json.dumps(signature).encode()
    found = client.put_manifest(repo, "sha256:" + hashlib.sha256(body).hexdigest(), body,
                                signature["mediaType"])
    listed = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": signature["mediaType"], "digest": found, "size": len(body),
         "artifactType": signature["artifactType"]}]}
    client.put_manifest(repo, subject.replace(":", "-", 1), json.dumps(listed).encode(), listed["mediaType"])
    return found


def test_a_signature_added_upstream_to_an_unchanged_image_is_imported_by_the_next_refresh(app_env, tracked, uid):
    """Docker Hub's stand-in (docker-registry 2.8) has no referrers API: the tag schema fallback finds it."""
    repo, target_repo = f"library/rs-{uid}", f"rs{uid}/rs-{uid}"
    index = push("docker.io", repo, "1.0")
    runner = tracked({"source": f"docker.io/{repo}", "tags": ["1.0"], "targetRepository": target_repo})
    first = refresh(runner, app_env)
    assert (first["missing"], first["enqueued"]) == (1, 1), first
    assert refresh(runner, app_env)["unchanged"] == 1  # no referrers upstream yet: nothing to do

    signature = attach_signature("docker.io", repo, index)
    assert seed.admin_client(layout.TARGET_ACR.login_server).head_manifest(target_repo, signature) is None
    third = refresh(runner, app_env)

    assert (third["referrers"], third["unchanged"], third["enqueued"], third["errors"]) == (1, 0, 1, 0), third
    assert target_digest(target_repo, "1.0") == index  # the image was not imported again: only its referrer
    held = seed.admin_client(layout.TARGET_ACR.login_server).head_manifest(target_repo, signature)
    assert held is not None and held.digest == signature
    ended = sorted((r for r in records(app_env) if r.source.endswith(f"{repo}:1.0")), key=lambda r: r.id)
    assert [r.state for r in ended].count(State.SUCCEEDED) == 2, [(r.id, r.state, r.reason) for r in ended]
    fourth = refresh(runner, app_env)
    assert (fourth["unchanged"], fourth["referrers"], fourth["enqueued"]) == (1, 0, 0), fourth
