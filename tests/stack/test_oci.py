"""The OCI client, image building and copying, checked against real registries and against skopeo."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid

import pytest

from dev import layout, oci, registries, seed, stack

SERVICES = ["registry-dockerhub", "registry-mcr", "acr-myregistry", "acr-mysourceregistry", "dockerhub-token"]
MULTI = ["linux/amd64", "linux/arm64/v8", seed.WINDOWS_2022]


@pytest.fixture(scope="module")
def running_stack(stack_part):
    with stack.running(SERVICES):
        yield


@pytest.fixture
def repo() -> str:
    return f"test/{uuid.uuid4().hex[:10]}"


def mcr() -> oci.RegistryClient:
    return seed.admin_client(layout.MCR)


# --- building images (pure) ----------------------------------------------------------------------
def test_images_are_reproducible_and_versioned():
    first = seed.build_image("app", MULTI)
    assert seed.build_image("app", MULTI).digest == first.digest
    assert seed.build_image("app", MULTI, version=2).digest != first.digest
    assert seed.build_image("other", MULTI).digest != first.digest


@pytest.mark.parametrize(("flavour", "index_type", "child_type"), [
    ("oci", oci.OCI_INDEX, oci.OCI_MANIFEST), ("docker", oci.DOCKER_LIST, oci.DOCKER_MANIFEST)])
def test_multi_platform_images_are_indexes_of_real_manifests(flavour, index_type, child_type):
    image = seed.build_image("app", MULTI, flavour=flavour)
    index = json.loads(image.manifest)
    assert image.media_type == index["mediaType"] == index_type
    assert [oci.platform_name(m["platform"]) for m in index["manifests"]] == \
        ["linux/amd64", "linux/arm64/v8", "windows/amd64:10.0.20348.2700"]
    for entry, child in zip(index["manifests"], image.children, strict=True):
        assert entry["mediaType"] == child.media_type == child_type
        manifest = json.loads(child.body)
        config = json.loads(image.blobs[manifest["config"]["digest"]])
        assert {config["os"], config["architecture"]} <= {"linux", "windows", "amd64", "arm64"}
        assert config["rootfs"]["diff_ids"][0].startswith("sha256:")
        assert all(oci.sha256_digest(image.blobs[layer["digest"]]) == layer["digest"]
                   for layer in manifest["layers"])
    windows = json.loads(image.blobs[json.loads(image.children[2].body)["config"]["digest"]])
    assert windows["os.version"] == "10.0.20348.2700"


def test_single_platform_images_are_plain_manifests():
    image = seed.build_image("app", ["linux/amd64"], flavour="docker")
    assert image.media_type == oci.DOCKER_MANIFEST and image.children == []
    assert seed.build_image("app", ["linux/amd64"], index=True).media_type == oci.OCI_INDEX
    with pytest.raises(ValueError):
        seed.build_image("app", ["linux"])


# --- the client against real registries -----------------------------------------------------------
@pytest.mark.parametrize("flavour", ["oci", "docker"])
def test_pushed_multi_arch_image_reads_back_with_digests_preserved(running_stack, repo, flavour):
    image = seed.build_image(repo, MULTI, flavour=flavour)
    client = mcr()
    assert seed.push_image(client, repo, "v1", image) == image.digest

    info = client.head_manifest(repo, "v1")
    assert (info.digest, info.media_type, info.size) == (image.digest, image.media_type, len(image.manifest))
    body, media_type, digest = client.get_manifest(repo, "v1")
    assert (body, media_type, digest) == (image.manifest, image.media_type, image.digest)
    for child in image.children:
        assert client.get_manifest(repo, child.digest) == child
    for blob_digest, data in image.blobs.items():
        assert client.get_blob(repo, blob_digest) == data


def test_unknown_manifests_surface_the_registry_error_code(running_stack, repo):
    client = mcr()
    assert client.head_manifest(repo, "nope") is None
    with pytest.raises(oci.RegistryError) as caught:
        client.get_manifest(repo, "nope")
    assert caught.value.status == 404 and caught.value.code in ("MANIFEST_UNKNOWN", "NAME_UNKNOWN")
    assert client.blob_exists(repo, "sha256:" + "0" * 64) is False


def test_tags_are_listed_across_pages_and_deleted_manifests_vanish(running_stack, repo):
    client = mcr()
    tags = [f"t{i}" for i in range(5)]
    for version, tag in enumerate(tags, start=1):
        seed.push_image(client, repo, tag, seed.build_image(repo, ["linux/amd64"], version=version))
    assert sorted(client.list_tags(repo, page_size=2)) == tags
    digest = client.head_manifest(repo, "t0").digest
    client.delete_manifest(repo, digest)
    assert client.head_manifest(repo, "t0") is None
    assert client.head_manifest(repo, digest) is None


def test_streamed_blob_upload_is_checked_by_digest(running_stack, repo):
    client = mcr()
    data = b"streamed content " * 1000
    digest = oci.sha256_digest(data)
    assert client.put_blob(repo, iter([data[:7000], data[7000:]]), digest=digest) == digest
    assert client.get_blob(repo, digest) == data
    with pytest.raises(oci.RegistryError) as caught:
        client.put_blob(repo, iter([b"other bytes"]), digest=digest.replace("sha256:", "sha256:0")[:71])
    assert caught.value.code in ("DIGEST_INVALID", "BLOB_UPLOAD_INVALID")


# --- copying -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("flavour", ["oci", "docker"])
def test_copy_between_registries_keeps_every_platform_byte_for_byte(running_stack, repo, flavour):
    image = seed.build_image(repo, MULTI, flavour=flavour)
    src = seed.admin_client(layout.DOCKERHUB)
    seed.push_image(src, repo, "latest", image)
    dst = seed.admin_client(layout.TARGET_ACR)

    result = oci.copy_image(src, repo, "latest", dst, f"mirror/{repo}", tags=["latest", "stable"])
    assert (result.digest, result.media_type, result.manifests) == (image.digest, image.media_type, 4)
    assert result.platforms == ["linux/amd64", "linux/arm64/v8", "windows/amd64:10.0.20348.2700"]
    assert result.blobs_copied == len(image.blobs) and result.blobs_mounted == 0
    for tag in ("latest", "stable"):
        assert dst.get_manifest(f"mirror/{repo}", tag).body == image.manifest
    for child in image.children:
        assert dst.head_manifest(f"mirror/{repo}", child.digest).digest == child.digest
    assert all(dst.get_blob(f"mirror/{repo}", d) == data for d, data in image.blobs.items())

    again = oci.copy_image(src, repo, "latest", dst, f"mirror/{repo}", tags=["latest"])
    assert again.blobs_copied == 0 and again.blobs_skipped == len(image.blobs)


def test_copy_within_one_registry_mounts_blobs(running_stack, repo):
    image = seed.build_image(repo, MULTI)
    acr = seed.admin_client(layout.SOURCE_ACR)
    seed.push_image(acr, repo, "v1", image)
    result = oci.copy_image(acr, repo, "v1", seed.admin_client(layout.SOURCE_ACR), f"{repo}-copy", tags=["v1"])
    assert result.blobs_mounted == len(image.blobs) and result.blobs_copied == 0
    assert acr.head_manifest(f"{repo}-copy", "v1").digest == image.digest


def test_copy_of_a_single_manifest_by_digest_without_tags(running_stack, repo):
    image = seed.build_image(repo, [seed.WINDOWS_2022], flavour="docker")
    src, dst = mcr(), seed.admin_client(layout.TARGET_ACR)
    seed.push_image(src, repo, "ltsc2022", image)
    result = oci.copy_image(src, repo, image.digest, dst, repo, tags=[])
    assert result.platforms == ["windows/amd64:10.0.20348.2700"] and result.manifests == 1
    assert dst.head_manifest(repo, image.digest).digest == image.digest
    assert dst.head_manifest(repo, "ltsc2022") is None
    try:
        assert dst.list_tags(repo) == []
    except oci.RegistryError as exc:  # distribution knows no repository that has no tags
        assert exc.code == "NAME_UNKNOWN"


def test_copy_refuses_images_over_the_manifest_limit_before_writing(running_stack, repo):
    image = seed.build_image(repo, MULTI)
    src, dst = mcr(), seed.admin_client(layout.TARGET_ACR)
    seed.push_image(src, repo, "big", image)
    with pytest.raises(oci.RegistryError) as caught:
        oci.copy_image(src, repo, "big", dst, repo, tags=["big"], max_manifests=3)
    assert caught.value.code == "TOO_MANY_MANIFESTS"
    assert dst.head_manifest(repo, "big") is None
    assert not any(dst.blob_exists(repo, d) for d in image.blobs)


# --- skopeo, a client we did not write --------------------------------------------------------------
@pytest.fixture
def cert_dir(tmp_path):
    shutil.copy(layout.CA_CERT, tmp_path / "ca.crt")
    return tmp_path


def _skopeo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["skopeo", *args], capture_output=True, timeout=60, check=True)


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")
def test_skopeo_sees_what_the_registry_serves(running_stack, repo, cert_dir):
    image = seed.build_image(repo, MULTI, flavour="docker")
    hub = f"127.0.0.1:{layout.DOCKERHUB.port}"
    seed.push_image(seed.admin_client(layout.DOCKERHUB), f"library/{repo}", "latest", image)
    raw = _skopeo("inspect", "--raw", "--cert-dir", str(cert_dir), f"docker://{hub}/library/{repo}:latest")
    assert raw.stdout == image.manifest

    dst_repo = f"skopeo/{repo}"
    creds = "{}:{}".format(*next(iter(layout.DOCKERHUB.users.items())))
    _skopeo("copy", "--all", "--src-cert-dir", str(cert_dir), "--dest-cert-dir", str(cert_dir),
            "--dest-creds", creds, f"docker://{hub}/library/{repo}:latest", f"docker://{hub}/{dst_repo}:copied")
    user = oci.RegistryClient(registries.base_url(layout.DOCKERHUB), oci.Auth(*creds.split(":", 1)))
    assert user.head_manifest(dst_repo, "copied").digest == image.digest
    for child in image.children:
        assert user.get_manifest(dst_repo, child.digest).body == child.body


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")
def test_skopeo_copy_of_our_copy_matches_the_source(running_stack, repo, cert_dir):
    image = seed.build_image(repo, MULTI)
    src, dst = mcr(), seed.admin_client(layout.TARGET_ACR)
    seed.push_image(src, repo, "v1", image)
    oci.copy_image(src, repo, "v1", dst, repo, tags=["v1"])
    mcr_host = f"127.0.0.1:{layout.MCR.port}"
    raw = _skopeo("inspect", "--raw", "--cert-dir", str(cert_dir), f"docker://{mcr_host}/{repo}:v1")
    assert raw.stdout == dst.get_manifest(repo, "v1").body
