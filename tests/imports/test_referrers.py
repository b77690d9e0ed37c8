"""Referrers travel with the image, end to end: a signed multi-arch image (dev/signed.py, pushed with oras-py: a
Notary signature and an SBOM on the index, a signature on the SBOM, an in-toto attestation on amd64, cosign's
`.sig` and `.att` tags) imported by the real `import_image` through the ARM stand-in, whose import copies the
image and, like ACR's, none of its referrers. What is checked is what the user's admission policy would see: the
target registry's own storage, read back, and the status row.

Sources: the Docker Hub stand-in and the source ACR serve the OCI referrers API; the private registry
(docker-registry 2.8) does not, so the app reads the referrers tag schema there."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest

from dev import layout, seed, signed
from shared.core.outcome import State
from shared.core.referrers import COSIGN_TAG_TYPES
from tests.helpers import deliver, next_retry, status

SOURCES = {  # id: (spec, credential set)
    "private-tag-schema": (signed.SignedSpec("registry.contoso.com", "team/signed"), "contoso"),
    "hub-api": (signed.SignedSpec("docker.io", "acme/signed"), "dockerhub"),
    "source-acr-api": (signed.SignedSpec(layout.SOURCE_ACR.login_server, "signed"), None),
}
BROKEN = signed.SignedSpec("docker.io", "acme/signed-broken", broken=True)


def expected_type(referrer: signed.Referrer) -> str:
    """The artifact type the app files a referrer under: cosign's tags by their suffix."""
    return COSIGN_TAG_TYPES[referrer.tag.rsplit(".", 1)[1]] if referrer.tag else referrer.artifact_type


def counts(referrers) -> str:
    found = Counter(expected_type(r) for r in referrers)
    return ", ".join(f"{kind}={found[kind]}" for kind in sorted(found))


def request_for(image: signed.SignedImage, credential: str | None, repository: str, **fields) -> dict:
    return {"source": image.reference, "targetTags": [f"{repository}:{image.tag}"],
            **({"credential": credential} if credential else {}), **fields}


def in_target(repository: str, reference: str) -> str | None:
    head = seed.admin_client(layout.TARGET_ACR).head_manifest(repository, reference)
    return head.digest if head else None


def run_to_end(app_env, document: dict):
    """Deliver a request, and each retry it schedules, until it ends."""
    request_id = deliver(document)
    for _ in range(10):
        record = status(request_id)
        if record.state.terminal:
            return record
        deliver(next_retry(app_env))
    raise AssertionError(f"still {status(request_id).state} after 10 deliveries")


def imported_referrers(control) -> list[dict]:
    return [r["body"] for r in control.requests() if r["method"] == "POST" and r["path"].endswith("/importImage")
            and "@" in r["body"]["source"]["sourceImage"]]


@pytest.mark.parametrize("source", SOURCES, ids=list(SOURCES))
def test_a_signed_multi_arch_image_arrives_with_every_referrer(source, app_env, control):
    spec, credential = SOURCES[source]
    image = signed.seed_signed(spec)
    repository = f"signed-{uuid.uuid4().hex[:8]}"
    record = status(deliver(request_for(image, credential, repository)))
    assert record.state is State.SUCCEEDED, record.reason
    assert record.digest == image.digest and in_target(repository, image.tag) == image.digest
    for referrer in image.referrers:  # each one, by digest; cosign's under its own tag too
        assert in_target(repository, referrer.digest) == referrer.digest, (referrer, record.reason)
        if referrer.tag:
            assert in_target(repository, referrer.tag) == referrer.digest, referrer
    assert record.referrers == counts(image.referrers), record.reason
    assert set(record.referrer_digests.split(",")) == {r.digest for r in image.referrers}, record.reason
    assert f"{len(image.referrers)} referrers ({len(image.referrers)} imported now)" in record.reason
    assert "warning" not in record.reason, record.reason
    bodies = imported_referrers(control)
    assert len(bodies) == len(image.referrers)
    for body in bodies:  # by digest, from the same source, into the request's repository
        assert body["source"]["sourceImage"].startswith(f"{image.repo}@sha256:")
        tagged = body.get("targetTags", [])
        assert tagged or body["untaggedTargetRepositories"] == [repository]
        assert all(t.startswith(f"{repository}:sha256-") for t in tagged)


def test_az_acr_manifest_list_referrers_lists_what_the_app_brought(app_env, az):
    """A client we did not write reads the target: `az acr manifest list-referrers`, plain and recursive."""
    import json

    spec, credential = SOURCES["hub-api"]
    image = signed.seed_signed(spec)
    repository = f"signed-{uuid.uuid4().hex[:8]}"
    assert status(deliver(request_for(image, credential, repository))).state is State.SUCCEEDED

    def listed(reference: str, *extra: str) -> dict[str, str]:
        shown = json.loads(az("acr", "manifest", "list-referrers", "-r", layout.TARGET_ACR.name, "-n",
                              f"{repository}@{reference}", *extra, "--output", "json", proxied=True).stdout)
        return {m["digest"]: m.get("artifactType", "") for m in shown["manifests"]}

    with_subject = [r for r in image.referrers if r.has_subject]  # cosign's tags have no subject field
    on_index = {r.digest: r.artifact_type for r in with_subject if r.subject == image.digest}
    assert listed(image.digest) == on_index
    assert set(listed(image.digest, "--recursive")) >= {r.digest for r in with_subject
                                                       if r.subject not in image.platforms.values()}
    amd64 = image.platforms["linux/amd64"]
    assert listed(amd64) == {r.digest: r.artifact_type for r in with_subject if r.subject == amd64}


def test_importing_again_brings_nothing_twice(app_env, control):
    spec, credential = SOURCES["private-tag-schema"]
    image = signed.seed_signed(spec)
    repository = f"signed-{uuid.uuid4().hex[:8]}"
    assert status(deliver(request_for(image, credential, repository))).state is State.SUCCEEDED
    control.clear_requests()
    record = status(deliver(request_for(image, credential, repository, mode="Force")))
    assert record.state is State.SUCCEEDED and imported_referrers(control) == []
    assert f"{len(image.referrers)} referrers (0 imported now)" in record.reason


def test_an_artifact_type_filter_brings_only_signatures(app_env, control):
    spec, credential = SOURCES["hub-api"]
    image = signed.seed_signed(spec)
    repository = f"signed-{uuid.uuid4().hex[:8]}"
    record = status(deliver(request_for(image, credential, repository,
                                        referrers={"artifactTypes": [signed.NOTARY_SIGNATURE]})))
    assert record.state is State.SUCCEEDED, record.reason
    index_signature = [r for r in image.of_type(signed.NOTARY_SIGNATURE) if r.subject == image.digest]
    assert record.referrers == f"{signed.NOTARY_SIGNATURE}=1"
    assert in_target(repository, index_signature[0].digest) == index_signature[0].digest
    # the SBOM is not admitted, so neither is the walk through it: its own signature stays behind too
    for referrer in image.referrers:
        if referrer not in index_signature:
            assert in_target(repository, referrer.digest) is None, referrer


def test_none_imports_the_image_alone(app_env, control):
    spec, credential = SOURCES["source-acr-api"]
    image = signed.seed_signed(spec)
    repository = f"signed-{uuid.uuid4().hex[:8]}"
    record = status(deliver(request_for(image, credential, repository, referrers="none")))
    assert record.state is State.SUCCEEDED and record.referrers == "" and imported_referrers(control) == []
    assert all(in_target(repository, r.digest) is None for r in image.referrers)


def test_a_referrer_that_cannot_be_imported_warns_by_default(app_env, control):
    image = signed.seed_signed(BROKEN)
    repository = f"signed-{uuid.uuid4().hex[:8]}"
    record = status(deliver(request_for(image, "dockerhub", repository)))
    [sbom] = image.of_type(signed.SPDX)
    assert record.state is State.SUCCEEDED, record.reason
    assert "warning: referrers missing in the target" in record.reason and sbom.digest in record.reason
    assert in_target(repository, image.tag) == image.digest and in_target(repository, sbom.digest) is None
    assert sbom.digest not in record.referrer_digests  # the row lists what is there


def test_a_referrer_that_cannot_be_imported_fails_a_request_that_requires_them(app_env, control, monkeypatch):
    from shared import app_context

    monkeypatch.setenv("IMPORT_MAX_ATTEMPTS", "2")
    app_context.reset()
    image = signed.seed_signed(BROKEN)
    repository = f"signed-{uuid.uuid4().hex[:8]}"
    record = run_to_end(app_env, request_for(image, "dockerhub", repository, referrers="required"))
    [sbom] = image.of_type(signed.SPDX)
    assert record.state is State.FAILED and record.code == "ReferrersMissing", record.reason
    assert sbom.digest in record.reason and "referrers: required" in record.reason
    assert in_target(repository, image.tag) == image.digest  # the image itself stays imported


def test_if_changed_imports_a_new_signature_on_an_unchanged_image(app_env, control):
    _, credential = SOURCES["private-tag-schema"]  # an image of its own: the seeded ones are shared by every test
    image = signed.seed_signed(signed.SignedSpec("registry.contoso.com", f"team/resigned-{uuid.uuid4().hex[:8]}"))
    repository = f"signed-{uuid.uuid4().hex[:8]}"
    assert status(deliver(request_for(image, credential, repository))).state is State.SUCCEEDED
    again = status(deliver(request_for(image, credential, repository, mode="IfChanged")))
    assert again.state is State.SKIPPED and again.reason.startswith(f"unchanged: {image.digest}"), again.reason
    resigned = signed.add_signature(image, serial=int(uuid.uuid4().int % 10**6) + 10)
    [new] = [r for r in resigned.referrers if r not in image.referrers]
    control.clear_requests()
    record = status(deliver(request_for(image, credential, repository, mode="IfChanged")))
    assert record.state is State.SUCCEEDED, record.reason
    assert record.reason.startswith(f"image unchanged ({image.digest}); new referrers imported")
    assert in_target(repository, new.digest) == new.digest
    [body] = imported_referrers(control)  # the referrer alone: the image was not imported again
    assert body["source"]["sourceImage"] == f"{image.repo}@{new.digest}"
    assert len([r for r in control.requests() if r["method"] == "POST"]) == 1


def test_referrers_left_when_the_invocation_runs_out_of_time_are_missing_never_a_timeout(app_env, control,
                                                                                         monkeypatch):
    """The worst case of an invocation leaves referrers no time (shared/azure/deadlines.py): what was not done is
    named missing, the image is in, and no referrer's import is started that could outlive the invocation."""
    import time

    from shared.imports import worker

    monkeypatch.setattr(worker, "referrers_deadline", lambda started: time.monotonic())
    spec, credential = SOURCES["hub-api"]
    image = signed.seed_signed(spec)
    repository = f"signed-{uuid.uuid4().hex[:8]}"
    record = status(deliver(request_for(image, credential, repository)))
    assert record.state is State.SUCCEEDED and in_target(repository, image.tag) == image.digest
    assert "warning: referrers missing in the target" in record.reason, record.reason
    assert imported_referrers(control) == []
