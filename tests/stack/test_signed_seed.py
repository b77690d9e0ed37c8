"""Signed images seeded with oras-py (dev/signed.py): the image and every referrer are readable from each
registry with the subject and artifactType they were pushed with; where the registry has no referrers API the
referrers tag schema lists them; cosign's `.sig` tag is there; a broken image lacks its SBOM's layer only;
`add_signature` adds one signature and leaves the image's digests alone.

Against real docker-registry processes (the registries behind the Docker Hub front and the source ACR's login
server, and the private registry); the referrers API itself is the front's and the stand-in's, tested there."""

from __future__ import annotations

import json
import uuid

import pytest

from dev import oci, seed, signed, stack

SERVICES = ["registry-dockerhub", "registry-private", "acr-mysourceregistry", "dockerhub-token"]


@pytest.fixture(scope="module")
def seeded(stack_part):
    with stack.running(SERVICES):
        yield {spec.repo: signed.seed_signed(spec) for spec in signed.SIGNED_IMAGES}


def manifest(image: signed.SignedImage, ref: str) -> dict:
    return json.loads(seed.admin_client(image.registry).get_manifest(image.repo, ref).body)


def test_the_seeded_names_are_the_documented_ones(seeded):
    assert sorted(image.reference for image in seeded.values()) == [
        "docker.io/acme/signed-broken:1.0", "docker.io/acme/signed:1.0", "mysourceregistry.azurecr.io/signed:1.0",
        "registry.contoso.com/team/signed:1.0"]
    assert [image.tag_schema for image in seeded.values()] == [False, True, False, False]


@pytest.mark.parametrize("repo", ["acme/signed", "team/signed", "signed", "acme/signed-broken"])
def test_a_signed_image_is_a_two_platform_index_with_six_artifacts(seeded, repo):
    image = seeded[repo]
    index = manifest(image, image.tag)
    assert oci.sha256_digest(seed.admin_client(image.registry).get_manifest(image.repo, image.tag).body) \
        == image.digest
    assert {oci.platform_name(m["platform"]): m["digest"] for m in index["manifests"]} == image.platforms
    assert sorted(r.artifact_type for r in image.referrers_of(image.digest)) == [signed.SPDX, signed.NOTARY_SIGNATURE]
    sbom = image.of_type(signed.SPDX)[0]
    assert [r.artifact_type for r in image.referrers_of(sbom.digest)] == [signed.NOTARY_SIGNATURE]
    assert [r.artifact_type for r in image.referrers_of(image.platforms["linux/amd64"])] == [signed.IN_TOTO]
    assert image.referrers_of(image.platforms["linux/arm64"]) == []
    assert image.cosign_tags == [image.cosign_tag, image.cosign_tag.removesuffix(".sig") + ".att"]
    assert len(image.referrers) == 6


@pytest.mark.parametrize("repo", ["acme/signed", "team/signed", "signed"])
def test_every_referrer_is_stored_with_its_subject_and_artifact_type(seeded, repo):
    image = seeded[repo]
    client = seed.admin_client(image.registry)
    for referrer in image.referrers:
        doc = manifest(image, referrer.digest)
        if referrer.has_subject:
            assert doc["subject"]["digest"] == referrer.subject
            assert doc["artifactType"] == referrer.artifact_type
            assert doc["config"]["mediaType"] == signed.EMPTY_CONFIG
        else:
            assert "subject" not in doc
        for blob in (doc["config"], *doc["layers"]):
            assert client.blob_exists(image.repo, blob["digest"]), (referrer, blob)
    signature = manifest(image, image.of_type(signed.NOTARY_SIGNATURE)[0].digest)
    assert [layer["mediaType"] for layer in signature["layers"]] == [signed.NOTARY_ENVELOPE]
    envelope = json.loads(client.get_blob(image.repo, signature["layers"][0]["digest"]))
    assert {"payload", "protected", "signature"} <= set(envelope)


@pytest.mark.parametrize("repo", ["acme/signed", "team/signed", "signed"])
def test_cosign_finds_its_signature_by_tag(seeded, repo):
    image = seeded[repo]
    assert image.cosign_tag == f"sha256-{image.digest.removeprefix('sha256:')}.sig"
    assert image.cosign_tag in seed.admin_client(image.registry).list_tags(image.repo)
    doc = manifest(image, image.cosign_tag)
    [layer] = doc["layers"]
    assert layer["mediaType"] == signed.COSIGN_SIMPLESIGNING
    assert signed.COSIGN_SIGNATURE_ANNOTATION in layer["annotations"]
    payload = json.loads(seed.admin_client(image.registry).get_blob(image.repo, layer["digest"]))
    assert payload["critical"]["image"]["docker-manifest-digest"] == image.digest
    [attestation] = manifest(image, image.cosign_tags[1])["layers"]
    assert attestation["mediaType"] == signed.COSIGN_ATTESTATION and "predicateType" in attestation["annotations"]


def test_the_private_registry_lists_referrers_in_the_tag_schema(seeded):
    image = seeded["team/signed"]
    client = seed.admin_client(image.registry)
    subjects = {r.subject for r in image.referrers if r.has_subject}
    assert len(subjects) == 3  # the index, the SBOM, the amd64 manifest
    for subject in subjects:
        listed = signed.read_tag_schema(client, image.repo, subject)
        expected = {(r.digest, r.artifact_type, r.size) for r in image.referrers_of(subject)}
        assert {(d["digest"], d["artifactType"], d["size"]) for d in listed} == expected
        assert client.get_manifest(image.repo, signed.tag_schema_tag(subject)).media_type == oci.OCI_INDEX


@pytest.mark.parametrize("repo", ["acme/signed", "signed"])
def test_registries_with_the_referrers_api_get_no_tag_schema(seeded, repo):
    image = seeded[repo]
    tags = seed.admin_client(image.registry).list_tags(image.repo)
    assert sorted(tags) == sorted([image.tag, *image.cosign_tags])


def test_the_broken_image_lacks_its_sbom_layer_only(seeded):
    image = seeded["acme/signed-broken"]
    client = seed.admin_client(image.registry)
    sbom = image.of_type(signed.SPDX)[0]
    layer = manifest(image, sbom.digest)["layers"][0]["digest"]
    assert not client.blob_exists(image.repo, layer)
    with pytest.raises(oci.RegistryError) as refused:
        client.get_blob(image.repo, layer)
    assert refused.value.status == 404
    for other in (r for r in image.referrers if r is not sbom):
        assert all(client.blob_exists(image.repo, b["digest"]) for b in manifest(image, other.digest)["layers"])


def test_seeding_again_changes_nothing(seeded):
    for spec in signed.SIGNED_IMAGES:
        before = sorted(seed.admin_client(spec.registry).list_tags(spec.repo))
        assert signed.seed_signed(spec) == seeded[spec.repo]
        assert sorted(seed.admin_client(spec.registry).list_tags(spec.repo)) == before
    private = seeded["team/signed"]
    assert len(signed.read_tag_schema(seed.admin_client(private.registry), private.repo, private.digest)) == 2


@pytest.mark.parametrize("registry", ["registry.contoso.com", "docker.io", "mysourceregistry.azurecr.io"])
def test_add_signature_adds_one_on_an_unchanged_digest(seeded, registry):
    spec = signed.SignedSpec(registry, f"{'acme/' if registry == 'docker.io' else ''}add-{uuid.uuid4().hex[:8]}")
    image = signed.seed_signed(spec)
    client = seed.admin_client(registry)
    tags_before = sorted(client.list_tags(spec.repo))
    more = signed.add_signature(image)
    [new] = [r for r in more.referrers if r not in image.referrers]
    assert (new.subject, new.artifact_type) == (image.digest, signed.NOTARY_SIGNATURE)
    assert client.head_manifest(spec.repo, spec.tag).digest == image.digest
    assert manifest(image, new.digest)["subject"]["digest"] == image.digest
    assert len(more.referrers_of(image.digest)) == 3
    assert signed.add_signature(more) == more  # the same serial twice: nothing new
    if image.tag_schema:
        listed = signed.read_tag_schema(client, spec.repo, image.digest)
        assert [d["digest"] for d in listed] == [r.digest for r in more.referrers_of(image.digest)]
        assert sorted(client.list_tags(spec.repo)) == tags_before
    else:
        assert sorted(client.list_tags(spec.repo)) == tags_before
    sbom = more.of_type(signed.SPDX)[0]
    on_sbom = signed.add_signature(more, subject=sbom.digest, serial=3)
    assert [r.subject for r in on_sbom.referrers if r not in more.referrers] == [sbom.digest]
    if image.tag_schema:
        assert len(signed.read_tag_schema(client, spec.repo, sbom.digest)) == 2
