"""The OCI 1.1 referrers API of the local stack, as clients see it: the ACR stand-in's login servers and the
Docker Hub front serve it over real docker-registry storage, the private registry and MCR do not (the
tag-schema fallback upstreams); the stand-in's import copies an artifact by digest and a cosign signature by
tag, and never brings referrers along with an image, as ACR. Artifacts are pushed with dev/oci.py and with
the `oras` package (a client we did not write); the Azure CLI's `az acr manifest list-referrers` reads the
target ACR."""

from __future__ import annotations

import json
import uuid
from urllib.parse import parse_qsl

import oras.client
import oras.oci
import pytest
import requests
from azure.identity import ManagedIdentityCredential
from azure.mgmt.containerregistry import ContainerRegistryManagementClient

from dev import artifacts, hub_front, layout, oci, referrers_index, seed, tokens
from dev.azure_standin.control import StandinControl

TARGET, SOURCE = layout.TARGET_ACR, layout.SOURCE_ACR
CA = str(layout.CA_CERT)
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"


def unique(prefix: str) -> str:
    return f"{prefix}/{uuid.uuid4().hex[:8]}"


def login_server_client(acr: layout.AcrSpec) -> oci.RegistryClient:
    """Pushes through the login server (so its answers are the ones a client sees), as the stack's admin."""
    return oci.RegistryClient(layout.acr_login_server_url(acr),
                              oci.Auth(token_provider=seed.acr_admin_token_provider(acr)))


def acr_token(acr: layout.AcrSpec, identity: layout.Identity, scope: str) -> str:
    """What a client gets from the login server's token service for `scope` (refresh token, then access)."""
    form = {"grant_type": "refresh_token", "service": acr.login_server, "scope": scope,
            "refresh_token": tokens.mint_entra_token(identity, acr.login_server)}
    answer = requests.post(f"{layout.acr_login_server_url(acr)}/oauth2/token", data=form, verify=CA, timeout=30)
    answer.raise_for_status()
    return answer.json()["access_token"]


def hub_token(repo: str, user: str | None = None, actions: str = "pull") -> str:
    auth = (user, layout.DOCKERHUB.users[user]) if user else None
    answer = requests.get(layout.DOCKERHUB_TOKEN_REALM, params={"service": layout.DOCKERHUB_SERVICE,
                                                                "scope": f"repository:{repo}:{actions}"},
                          auth=auth, verify=CA, timeout=30)
    answer.raise_for_status()
    return answer.json()["token"]


def get_referrers(base: str, repo: str, digest: str, token: str | None, method: str = "GET",
                  **params: str) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.request(method, f"{base}/v2/{repo}/referrers/{digest}", params=params, headers=headers,
                            verify=CA, timeout=30)


def pushed_image(client: oci.RegistryClient, repo: str, tag: str = "v1", version: int = 1) -> oci.ManifestInfo:
    image = seed.build_image(repo, ["linux/amd64"], version=version)
    seed.push_image(client, repo, tag, image)
    return oci.ManifestInfo(image.digest, image.media_type, len(image.manifest))


def listed(response: requests.Response) -> dict[str, dict]:
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == INDEX_TYPE
    body = response.json()
    assert (body["schemaVersion"], body["mediaType"]) == (2, INDEX_TYPE)
    return {descriptor["digest"]: descriptor for descriptor in body["manifests"]}


# --- the ACR stand-in's login server ---------------------------------------------------------------
def test_the_acr_login_server_lists_what_refers_to_a_digest_with_filters(stack):
    repo, client = unique("refs"), login_server_client(TARGET)
    image = pushed_image(client, repo)
    other = pushed_image(client, repo, "other", version=2)
    signature = artifacts.build_artifact(artifacts.NOTARY_SIGNATURE, image, [("application/jose+json", b"sig")],
                                         annotations={"io.cncf.notary.x509chain.thumbprint#S256": "[]"})
    sbom = artifacts.build_artifact(artifacts.SPDX_SBOM, image, [(artifacts.SPDX_SBOM, b'{"spdxVersion":"2.3"}')])
    elsewhere = artifacts.build_artifact(artifacts.SPDX_SBOM, other, [(artifacts.SPDX_SBOM, b"{}")])
    for artifact in (signature, sbom, elsewhere):
        artifacts.push_artifact(client, repo, artifact)
    # a referrer without artifactType: its config's media type stands in (OCI distribution spec 1.1)
    cosign_like = artifacts.build_cosign_signature(image, repo)
    doc = json.loads(cosign_like.manifest) | {"subject": artifacts.descriptor_of(image)}
    body = json.dumps(doc).encode()
    untyped = artifacts.Artifact(body, oci.OCI_MANIFEST, oci.sha256_digest(body), cosign_like.blobs)
    artifacts.push_artifact(client, repo, untyped)
    base, token = layout.acr_login_server_url(TARGET), acr_token(TARGET, layout.APP_IDENTITY, f"repository:{repo}:pull")

    everything = get_referrers(base, repo, image.digest, token)
    found = listed(everything)
    assert "OCI-Filters-Applied" not in everything.headers
    assert set(found) == {signature.digest, sbom.digest, untyped.digest}
    assert found[signature.digest] == {"mediaType": oci.OCI_MANIFEST, "digest": signature.digest,
                                       "size": len(signature.manifest), "artifactType": artifacts.NOTARY_SIGNATURE,
                                       "annotations": {"io.cncf.notary.x509chain.thumbprint#S256": "[]"}}
    assert found[sbom.digest]["artifactType"] == artifacts.SPDX_SBOM and "annotations" not in found[sbom.digest]
    assert found[untyped.digest]["artifactType"] == "application/vnd.oci.image.config.v1+json"

    filtered = get_referrers(base, repo, image.digest, token, artifactType=artifacts.NOTARY_SIGNATURE)
    assert list(listed(filtered)) == [signature.digest]
    assert filtered.headers["OCI-Filters-Applied"] == "artifactType"
    assert listed(get_referrers(base, repo, image.digest, token, artifactType="application/none")) == {}
    assert list(listed(get_referrers(base, repo, other.digest, token))) == [elsewhere.digest]
    assert listed(get_referrers(base, repo, "sha256:" + "0" * 64, token)) == {}  # unknown subject: empty, not 404

    head = get_referrers(base, repo, image.digest, token, method="HEAD")
    assert head.status_code == 200 and head.headers["Content-Type"] == INDEX_TYPE and head.content == b""


def follow_links(base: str, repo: str, digest: str, token: str, **params: str) -> list[list[str]]:
    """Pages as az reads them: the same path, the `Link`'s query replayed as parameters."""
    pages: list[list[str]] = []
    while True:
        page = get_referrers(base, repo, digest, token, **params)
        pages.append(list(listed(page)))
        if "Link" not in page.headers:
            return pages
        link = page.headers["Link"]
        assert link.startswith(f"</v2/{repo}/referrers/{digest}?") and link.endswith('>; rel="next"')
        params = dict(parse_qsl(link[1:link.index(">")].split("?", 1)[1]))


@pytest.fixture
def standin_settings(stack):
    control = StandinControl()
    yield control
    control.reset()


def test_pages_when_a_page_size_is_set_follow_the_link(standin_settings):
    repo, client = unique("refs"), login_server_client(TARGET)
    image = pushed_image(client, repo)
    kinds = [artifacts.NOTARY_SIGNATURE if i % 2 else artifacts.SPDX_SBOM for i in range(5)]
    pushed = [artifacts.push_artifact(client, repo, artifacts.build_artifact(
        kind, image, [("application/octet-stream", bytes([i]))])) for i, kind in enumerate(kinds)]
    base, token = layout.acr_login_server_url(TARGET), acr_token(TARGET, layout.APP_IDENTITY, f"repository:{repo}:pull")
    [everything] = follow_links(base, repo, image.digest, token)  # one page by default
    assert sorted(everything) == sorted(pushed)

    standin_settings.update_settings(referrers_page_size=2)
    pages = follow_links(base, repo, image.digest, token)
    assert [len(page) for page in pages] == [2, 2, 1] and [d for page in pages for d in page] == everything
    signatures = follow_links(base, repo, image.digest, token, artifactType=artifacts.NOTARY_SIGNATURE)
    assert [len(page) for page in signatures] == [2] and set(signatures[0]) == {pushed[1], pushed[3]}

    front = hub_front.FrontControl()
    hub_repo = unique("library/refs")
    hub = seed.admin_client(layout.DOCKERHUB)
    hub_image = pushed_image(hub, hub_repo)
    on_hub = [artifacts.push_artifact(hub, hub_repo, artifacts.build_artifact(
        artifacts.SPDX_SBOM, hub_image, [("application/octet-stream", bytes([i]))])) for i in range(3)]
    front.referrers_page_size(1)
    try:
        hub_pages = follow_links(hub_front.base_url(), hub_repo, hub_image.digest, hub_token(hub_repo))
    finally:
        front.referrers_page_size(None)
    assert [len(page) for page in hub_pages] == [1, 1, 1] and sorted(d for [d] in hub_pages) == sorted(on_hub)


def test_a_referrer_is_listed_even_before_its_subject_is_pushed(stack):
    repo, client = unique("refs"), login_server_client(SOURCE)
    image = seed.build_image(repo, ["linux/arm64"])
    subject = oci.ManifestInfo(image.digest, image.media_type, len(image.manifest))
    early = artifacts.build_artifact(artifacts.IN_TOTO, subject, [(artifacts.IN_TOTO, b'{"_type":"x"}')])
    artifacts.push_artifact(client, repo, early)
    token = acr_token(SOURCE, layout.APP_IDENTITY, f"repository:{repo}:pull")
    found = listed(get_referrers(layout.acr_login_server_url(SOURCE), repo, image.digest, token))
    assert list(found) == [early.digest]


def test_the_acr_referrers_api_is_authorized_as_a_pull(stack):
    repo = unique("refs")
    image = pushed_image(login_server_client(TARGET), repo)
    base = layout.acr_login_server_url(TARGET)

    anonymous = get_referrers(base, repo, image.digest, None)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == (
        f'Bearer realm="{layout.acr_token_realm(TARGET)}",service="{TARGET.login_server}",'
        f'scope="repository:{repo}:pull"')
    assert anonymous.json()["errors"][0]["detail"] == [{"Type": "repository", "Name": repo, "Action": "pull"}]
    for identity, scope in ((layout.NO_ROLE_IDENTITY, f"repository:{repo}:pull"),
                            (layout.APP_IDENTITY, f"repository:{repo}:metadata_read"),
                            (layout.APP_IDENTITY, "repository:elsewhere:pull")):
        refused = get_referrers(base, repo, image.digest, acr_token(TARGET, identity, scope))
        assert refused.status_code == 401 and 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]
    assert get_referrers(base, repo, image.digest, "not-a-token").status_code == 401


@pytest.mark.parametrize("digest", ["sha256:abc", "latest", "sha256:" + "A" * 64, "md5:" + "0" * 32,
                                    "sha512:" + "0" * 64])
def test_a_malformed_digest_is_a_400(stack, digest):
    repo = unique("refs")
    pushed_image(login_server_client(TARGET), repo)
    token = acr_token(TARGET, layout.APP_IDENTITY, f"repository:{repo}:pull")
    answer = get_referrers(layout.acr_login_server_url(TARGET), repo, digest, token)
    assert answer.status_code == 400 and answer.json()["errors"][0]["code"] == "DIGEST_INVALID"


def test_an_unknown_repository_is_name_unknown(stack):
    repo = unique("never-pushed")
    token = acr_token(TARGET, layout.APP_IDENTITY, f"repository:{repo}:pull")
    answer = get_referrers(layout.acr_login_server_url(TARGET), repo, "sha256:" + "1" * 64, token)
    assert answer.status_code == 404 and answer.json()["errors"][0]["code"] == "NAME_UNKNOWN"


# --- Docker Hub front, and the upstreams without the API -----------------------------------------
def oras_client(repo: str, tmp_path, monkeypatch) -> oras.client.OrasClient:
    """oras-py keeps one token for all its requests (the first challenge's, a pull for a blob check, then
    reused for the upload): it is given a `pull,push` token from the Docker Hub token server up front."""
    monkeypatch.setenv("HOME", str(tmp_path))  # no docker config of the machine's user
    client = oras.client.OrasClient(hostname=f"{layout.HOST}:{layout.DOCKERHUB_FRONT_PORT}", tls_verify=CA)
    client.auth.set_token_auth(hub_token(repo, "dockeruser", "pull,push"))
    return client


def test_oras_pushes_through_the_hub_front_and_its_referrers_api_lists_them(stack, tmp_path, monkeypatch):
    repo = unique("library/refs")
    image = pushed_image(seed.admin_client(layout.DOCKERHUB), repo)
    sbom_file = tmp_path / "sbom.spdx.json"
    sbom_file.write_text('{"spdxVersion": "SPDX-2.3"}')
    client = oras_client(repo, tmp_path, monkeypatch)
    pushed = client.push(f"{layout.HOST}:{layout.DOCKERHUB_FRONT_PORT}/{repo}:sbom",
                         files=[f"{sbom_file}:{artifacts.SPDX_SBOM}"], disable_path_validation=True,
                         manifest_config=f"{tmp_path / 'none'}:application/vnd.example.sbom.config",
                         subject=oras.oci.Subject(image.media_type, image.digest, image.size),
                         manifest_annotations={"org.example.kind": "sbom"}, quiet=True)
    assert pushed.headers["OCI-Subject"] == image.digest  # so oras-go and regclient skip the tag schema
    sbom_digest = pushed.headers["Docker-Content-Digest"]

    base, token = hub_front.base_url(), hub_token(repo)  # library/ is public: an anonymous token
    found = listed(get_referrers(base, repo, image.digest, token))
    assert list(found) == [sbom_digest]
    assert found[sbom_digest]["artifactType"] == "application/vnd.example.sbom.config"
    assert found[sbom_digest]["annotations"] == {"org.example.kind": "sbom"}
    filtered = get_referrers(base, repo, image.digest, token, artifactType="application/vnd.example.sbom.config")
    assert filtered.headers["OCI-Filters-Applied"] == "artifactType" and list(listed(filtered)) == [sbom_digest]

    anonymous = get_referrers(base, repo, image.digest, None)
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"] == (
        f'Bearer realm="{layout.DOCKERHUB_TOKEN_REALM}",service="{layout.DOCKERHUB_SERVICE}",'
        f'scope="repository:{repo}:pull"')
    assert get_referrers(base, repo, "sha256:nothex", token).status_code == 400


def test_a_private_docker_hub_repository_needs_the_users_token(stack):
    repo = unique("dockeruser/refs")
    image = pushed_image(seed.admin_client(layout.DOCKERHUB), repo)
    artifacts.push_artifact(seed.admin_client(layout.DOCKERHUB), repo, artifacts.build_artifact(
        artifacts.NOTARY_SIGNATURE, image, [("application/jose+json", b"s")]))
    base = hub_front.base_url()
    refused = get_referrers(base, repo, image.digest, hub_token(repo))
    assert refused.status_code == 401 and 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]
    counted = hub_front.FrontControl().stats().get("GET referrers", 0)
    assert len(listed(get_referrers(base, repo, image.digest, hub_token(repo, "dockeruser")))) == 1
    assert hub_front.FrontControl().stats()["GET referrers"] == counted + 1


@pytest.mark.parametrize("spec", [layout.PRIVATE, layout.MCR], ids=["private", "mcr"])
def test_the_private_registry_and_mcr_have_no_referrers_api(stack, spec):
    repo = unique("refs")
    client = seed.admin_client(spec)
    image = pushed_image(client, repo)
    signature = artifacts.build_artifact(artifacts.NOTARY_SIGNATURE, image, [("application/jose+json", b"s")])
    artifacts.push_artifact(client, repo, signature)
    auth = next(iter(spec.users.items())) if spec.users else None
    answer = requests.get(f"https://{layout.HOST}:{spec.port}/v2/{repo}/referrers/{image.digest}", auth=auth,
                          verify=CA, timeout=30)
    assert answer.status_code == 404  # a client falls back to the referrers tag schema


# --- the stand-in's import: artifacts by digest, cosign tags, no referrers along with an image ------
@pytest.fixture
def arm(stack, monkeypatch):
    for name, value in layout.stack_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AZURE_CLIENT_ID", raising=False)
    control = StandinControl()
    control.reset()
    control.update_settings(retry_after=0)

    def import_image(params: dict) -> None:
        client = ContainerRegistryManagementClient(ManagedIdentityCredential(), layout.SUB_A,
                                                   base_url=layout.ARM_ENDPOINT, polling_interval=0.05)
        client.registries.begin_import_image(TARGET.resource_group, TARGET.name, params).result(timeout=30)

    yield import_image
    control.reset()


def test_import_copies_an_artifact_by_digest_and_a_cosign_tag_but_no_referrers_with_the_image(arm):
    repo = unique("library/signed")
    hub = seed.admin_client(layout.DOCKERHUB)
    image = pushed_image(hub, repo)
    signature = artifacts.build_artifact(artifacts.NOTARY_SIGNATURE, image, [("application/jose+json", b"sig")],
                                         annotations={"org.opencontainers.image.created": "2026-01-01T00:00:00Z"})
    artifacts.push_artifact(hub, repo, signature)
    cosign = artifacts.build_cosign_signature(image, repo)
    cosign_tag = artifacts.cosign_signature_tag(image.digest)
    artifacts.push_artifact(hub, repo, cosign, cosign_tag)
    target_repo = repo.removeprefix("library/")
    base = layout.acr_login_server_url(TARGET)
    token = acr_token(TARGET, layout.APP_IDENTITY, f"repository:{target_repo}:pull")

    arm({"source": {"registryUri": "docker.io", "sourceImage": f"{repo}:v1"}, "targetTags": [f"{target_repo}:v1"]})
    assert listed(get_referrers(base, target_repo, image.digest, token)) == {}  # ACR's import: the image alone
    target = seed.admin_client(TARGET)
    assert target.head_manifest(target_repo, signature.digest) is None
    assert target.head_manifest(target_repo, cosign_tag) is None

    arm({"source": {"registryUri": "docker.io", "sourceImage": f"{repo}@{signature.digest}"},
         "untaggedTargetRepositories": [target_repo]})
    found = listed(get_referrers(base, target_repo, image.digest, token))
    assert list(found) == [signature.digest] and found[signature.digest]["artifactType"] == artifacts.NOTARY_SIGNATURE
    assert target.get_manifest(target_repo, signature.digest).body == signature.manifest  # byte for byte
    assert target.list_tags(target_repo) == ["v1"]

    arm({"source": {"registryUri": "docker.io", "sourceImage": f"{repo}:{cosign_tag}"},
         "targetTags": [f"{target_repo}:{cosign_tag}"]})
    assert target.get_manifest(target_repo, cosign_tag).body == cosign.manifest
    assert list(listed(get_referrers(base, target_repo, image.digest, token))) == [signature.digest]


def test_the_copy_plan_reads_no_artifact_config():
    """An artifact's config is the empty `{}` or any media type a tool chose (not always JSON): the copy
    reads a config only for an image's platform."""
    image = oci.ManifestInfo("sha256:" + "1" * 64, oci.OCI_MANIFEST, 10)
    artifact = artifacts.build_artifact(artifacts.SPDX_SBOM, image, [(artifacts.SPDX_SBOM, b"x")])
    doc = json.loads(artifact.manifest)
    assert doc["config"] == {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2, "data": "e30=",
                             "digest": oci.sha256_digest(b"{}")}

    class Source:
        def get_blob(self, repo: str, digest: str) -> bytes:
            raise AssertionError(f"read config {digest}")

        def get_manifest(self, repo: str, digest: str) -> oci.Manifest:
            raise AssertionError("an artifact manifest has no children")

    plan = oci._plan_copy(Source(), "r", oci.Manifest(artifact.manifest, oci.OCI_MANIFEST, artifact.digest), None)
    assert plan.platforms == [] and set(plan.blobs) == set(artifact.blobs)


def test_referrer_descriptors_follow_the_spec():
    index = json.dumps({"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": [],
                        "subject": {"digest": "sha256:" + "2" * 64}}).encode()
    assert referrers_index.referrer_descriptor(index, "sha256:x") == {"mediaType": INDEX_TYPE, "digest": "sha256:x",
                                                                      "size": len(index)}  # no artifactType
    bare = json.dumps({"config": {"mediaType": "application/vnd.x"}, "layers": []}).encode()
    assert referrers_index.referrer_descriptor(bare, "sha256:y")["mediaType"] == oci.OCI_MANIFEST
    assert referrers_index.referrer_descriptor(bare, "sha256:y")["artifactType"] == "application/vnd.x"
    assert referrers_index.valid_digest("sha512:" + "a" * 128)
    assert not referrers_index.valid_digest("sha256:" + "a" * 63)


# --- the Azure CLI --------------------------------------------------------------------------------


def test_az_acr_manifest_list_referrers_shows_what_the_target_holds(az):
    repo, client = unique("refs"), login_server_client(TARGET)
    image = pushed_image(client, repo)
    signature = artifacts.build_artifact(artifacts.NOTARY_SIGNATURE, image, [("application/jose+json", b"sig")])
    sbom = artifacts.build_artifact(artifacts.SPDX_SBOM, image, [(artifacts.SPDX_SBOM, b"{}")])
    on_sbom = artifacts.build_artifact(artifacts.NOTARY_SIGNATURE, oci.ManifestInfo(
        sbom.digest, sbom.media_type, len(sbom.manifest)), [("application/jose+json", b"sbom-sig")])
    for artifact in (signature, sbom, on_sbom):
        artifacts.push_artifact(client, repo, artifact)
    spec = f"{repo}@{image.digest}"

    shown = json.loads(az("acr", "manifest", "list-referrers", "-r", TARGET.name, "-n", spec, "--output", "json",
                          proxied=True).stdout)
    assert {m["digest"]: m["artifactType"] for m in shown["manifests"]} == {
        signature.digest: artifacts.NOTARY_SIGNATURE, sbom.digest: artifacts.SPDX_SBOM}
    signatures = json.loads(az("acr", "manifest", "list-referrers", "-r", TARGET.name, "-n", spec,
                               "--artifact-type", artifacts.NOTARY_SIGNATURE, "--output", "json", proxied=True).stdout)
    assert [m["digest"] for m in signatures["manifests"]] == [signature.digest]
    recursive = json.loads(az("acr", "manifest", "list-referrers", "-r", TARGET.name, "-n", spec, "--recursive",
                              "--output", "json", proxied=True).stdout)
    assert {m["digest"] for m in recursive["manifests"]} == {signature.digest, sbom.digest, on_sbom.digest}

    control = StandinControl()
    control.update_settings(referrers_page_size=1)  # az follows the Link
    try:
        paged = json.loads(az("acr", "manifest", "list-referrers", "-r", TARGET.name, "-n", spec, "--output",
                              "json", proxied=True).stdout)
    finally:
        control.reset()
    assert [m["digest"] for m in paged["manifests"]] == [m["digest"] for m in shown["manifests"]]


def _store(root, repo: str, body: bytes) -> str:
    """A manifest as docker-registry's filesystem driver keeps it: the blob, and the repository's link."""
    digest = oci.sha256_digest(body)
    hexdigest = digest.partition(":")[2]
    blob = root / "blobs" / "sha256" / hexdigest[:2] / hexdigest / "data"
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(body)
    link = root / "repositories" / repo / "_manifests" / "revisions" / "sha256" / hexdigest / "link"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.write_text(digest)
    return digest


def test_the_index_reads_hundreds_of_manifests_and_forgets_deleted_ones(tmp_path):
    subject = oci.ManifestInfo("sha256:" + "3" * 64, oci.OCI_MANIFEST, 100)
    mine = [_store(tmp_path, "app", artifacts.build_artifact(artifacts.SPDX_SBOM, subject, [
        (artifacts.SPDX_SBOM, str(i).encode())]).manifest) for i in range(150)]
    for i in range(150):  # images and other subjects' referrers beside them
        _store(tmp_path, "app", seed.build_image(f"img{i}", ["linux/amd64"]).manifest)
    _store(tmp_path, "other", artifacts.build_artifact(artifacts.SPDX_SBOM, subject, [
        (artifacts.SPDX_SBOM, b"elsewhere")]).manifest)

    found = referrers_index.referrers(tmp_path, "app", subject.digest)
    assert {d["digest"] for d in found} == set(mine)
    assert referrers_index.referrers(tmp_path, "app", subject.digest, artifacts.NOTARY_SIGNATURE) == []

    deleted = mine[0].partition(":")[2]
    (tmp_path / "repositories" / "app" / "_manifests" / "revisions" / "sha256" / deleted / "link").unlink()
    assert len(referrers_index.referrers(tmp_path, "app", subject.digest)) == 149
    assert referrers_index.answer(tmp_path, "nope", subject.digest, None).status == 404
    assert referrers_index.answer(tmp_path, "App", subject.digest, None).status == 400
