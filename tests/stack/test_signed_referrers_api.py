"""The seeded signed images through the referrers API where the stack serves it: the Docker Hub front and the
source ACR's login server list exactly the referrers dev/signed.py pushed, for each subject (the API itself
is the front's and the stand-in's; until they serve it these tests skip, saying so)."""

from __future__ import annotations

import pytest

from dev import hub_front, layout, oci, seed, signed

API_IMAGES = [spec for spec in signed.SIGNED_IMAGES if spec.registry != "registry.contoso.com"]


def api_client(registry: str) -> oci.RegistryClient:
    """Through what the app reads: the Docker Hub front, or the ACR's login server (not their storage)."""
    if registry == "docker.io":
        user, password = next(iter(layout.DOCKERHUB.users.items()))
        return oci.RegistryClient(hub_front.base_url(), oci.Auth(user, password))
    acr = layout.acr_for_login_server(registry)
    assert acr is not None
    provider = seed.acr_admin_token_provider(acr)
    return oci.RegistryClient(layout.acr_login_server_url(acr), oci.Auth(token_provider=provider))


def listed(client: oci.RegistryClient, repo: str, subject: str) -> set[tuple[str, str]] | None:
    answer = client._request("GET", f"/v2/{repo}/referrers/{subject}", oci.pull_scope(repo), "referrers",
                             quiet=(404,), headers={"Accept": oci.OCI_INDEX})
    if answer.status_code == 404:
        return None
    return {(d["digest"], d.get("artifactType")) for d in answer.json()["manifests"]}


@pytest.mark.parametrize("spec", API_IMAGES, ids=lambda s: f"{s.registry}/{s.repo}")
def test_the_referrers_api_lists_what_was_pushed(stack, spec):
    image = signed.seed_signed(spec)
    client = api_client(spec.registry)
    subjects = [image.digest, *image.platforms.values(), *(r.digest for r in image.of_type(signed.SPDX))]
    for subject in subjects:
        found = listed(client, spec.repo, subject)
        if found is None:
            pytest.skip(f"{spec.registry} does not serve the referrers API on this branch")
        assert found == {(r.digest, r.artifact_type) for r in image.referrers_of(subject)}, subject
