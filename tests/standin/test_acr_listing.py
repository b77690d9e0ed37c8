"""ACR's listing API on the stand-in's login servers (`/acr/v1/<repo>/_tags`, `_manifests`) and the CONNECT proxy
that stands in for `*.azurecr.io`'s DNS, as a client sees them: tokens from the login server's own token
service, images pushed into the registry's storage, answers and refusals in ACR's shapes. The Azure CLI
itself runs them in tests/standin/test_standin_recipes.py."""

from __future__ import annotations

import json
import socket
import uuid
from urllib.parse import unquote

import requests

from dev import ca, layout, seed, tokens
from dev.azure_standin.dns_proxy import tunnel_target

ACR = layout.TARGET_ACR
BASE = layout.acr_login_server_url(ACR)
CA = str(layout.CA_CERT)


def registry_token(identity: layout.Identity, scope: str) -> str:
    """What az gets: a refresh token for the identity, then an access token for `scope` from /oauth2/token."""
    form = {"grant_type": "refresh_token", "service": ACR.login_server, "scope": scope,
            "refresh_token": tokens.mint_entra_token(identity, ACR.login_server)}
    answer = requests.post(f"{BASE}/oauth2/token", data=form, verify=CA, timeout=30)
    answer.raise_for_status()
    return answer.json()["access_token"]


def listing(repo: str, kind: str, token: str | None, **params: str) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.get(f"{BASE}/acr/v1/{repo}/_{kind}", params=params, headers=headers, verify=CA, timeout=30)


def next_page(response: requests.Response) -> dict[str, str]:
    """What az does with a `Link`: keeps its own path, takes the query's pairs, unquoted."""
    query = response.headers["Link"].split("?", 1)[1].split(">", 1)[0]
    return {name: unquote(value) for name, value in (pair.split("=", 1) for pair in query.split("&"))}


def pushed(tags: list[str]) -> tuple[str, seed.BuiltImage]:
    """A fresh repository in the target ACR with one multi-platform image under `tags`."""
    repo = f"listing/{uuid.uuid4().hex[:8]}"
    image = seed.build_image(repo, ["linux/amd64", "linux/arm64"], flavour="docker")
    client = seed.admin_client(ACR)
    for tag in tags:
        seed.push_image(client, repo, tag, image)
    return repo, image


def test_a_listing_needs_a_token_granting_metadata_read_as_acr_answers(stack):
    repo, _ = pushed(["v1"])
    scope = f"repository:{repo}:metadata_read"

    anonymous = listing(repo, "tags", None)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == (
        f'Bearer realm="{layout.acr_token_realm(ACR)}",service="{ACR.login_server}",scope="{scope}"')
    assert anonymous.json()["errors"][0]["code"] == "UNAUTHORIZED"
    assert anonymous.json()["errors"][0]["detail"] == [{"Type": "repository", "Name": repo, "Action": "metadata_read"}]

    nothing_granted = listing(repo, "tags", registry_token(layout.NO_ROLE_IDENTITY, scope))
    assert nothing_granted.status_code == 401 and 'error="insufficient_scope"' in nothing_granted.headers[
        "WWW-Authenticate"]
    pull_only = listing(repo, "manifests", registry_token(layout.APP_IDENTITY, f"repository:{repo}:pull"))
    assert pull_only.status_code == 401
    other_repo = listing(repo, "tags", registry_token(layout.APP_IDENTITY, "repository:elsewhere:metadata_read"))
    assert other_repo.status_code == 401

    allowed = listing(repo, "tags", registry_token(layout.APP_IDENTITY, scope))
    assert allowed.status_code == 200, allowed.text
    assert [tag["name"] for tag in allowed.json()["tags"]] == ["v1"]


def test_tags_and_manifests_say_what_the_registry_holds(stack):
    repo, image = pushed(["v2", "latest", "v1"])
    token = registry_token(layout.APP_IDENTITY, f"repository:{repo}:metadata_read")

    tags = listing(repo, "tags", token).json()
    assert (tags["registry"], tags["imageName"]) == (ACR.login_server, repo)
    assert [tag["name"] for tag in tags["tags"]] == ["latest", "v1", "v2"]  # by name, as ACR sorts them
    assert {tag["digest"] for tag in tags["tags"]} == {image.digest}
    assert all(tag["createdTime"].endswith("Z") and tag["changeableAttributes"]["listEnabled"]
               for tag in tags["tags"])

    manifests = {m["digest"]: m for m in listing(repo, "manifests", token).json()["manifests"]}
    index = json.loads(image.manifest)
    assert set(manifests) == {image.digest, *(child["digest"] for child in index["manifests"])}
    top = manifests[image.digest]
    assert top["tags"] == ["latest", "v1", "v2"] and top["mediaType"] == image.media_type
    assert top["imageSize"] == len(image.manifest) and "architecture" not in top
    for child in index["manifests"]:
        listed = manifests[child["digest"]]
        assert (listed["architecture"], listed["os"]) == (child["platform"]["architecture"], child["platform"]["os"])
        assert "tags" not in listed and listed["imageSize"] == child["size"]


def test_pages_follow_the_link_header_as_az_does(stack):
    repo, _ = pushed(["a", "b", "c"])
    token = registry_token(layout.APP_IDENTITY, f"repository:{repo}:metadata_read")

    first = listing(repo, "tags", token, n="2")
    assert [tag["name"] for tag in first.json()["tags"]] == ["a", "b"]
    assert first.headers["Link"] == f'</acr/v1/{repo}/_tags?last=b&n=2&orderby=>; rel="next"'
    rest = listing(repo, "tags", token, **next_page(first))
    assert [tag["name"] for tag in rest.json()["tags"]] == ["c"] and "Link" not in rest.headers

    seen, params = [], {"n": "1"}
    for _ in range(5):  # three manifests: three pages, the last without a Link
        page = listing(repo, "manifests", token, **params)
        seen += [m["digest"] for m in page.json()["manifests"]]
        if "Link" not in page.headers:
            break
        params = next_page(page)
    assert seen == sorted(seen) and len(seen) == 3

    oldest_first = [t["name"] for t in listing(repo, "tags", token, orderby="timeasc").json()["tags"]]
    newest_first = [t["name"] for t in listing(repo, "tags", token, orderby="timedesc").json()["tags"]]
    assert newest_first == oldest_first[::-1] and sorted(newest_first) == ["a", "b", "c"]


def test_bad_requests_are_named(stack):
    repo, _ = pushed(["v1"])
    token = registry_token(layout.APP_IDENTITY, f"repository:{repo}:metadata_read")
    for params, field in (({"n": "0"}, "n must be"), ({"n": "ten"}, "n must be"), ({"orderby": "name"}, "orderby")):
        answer = listing(repo, "tags", token, **params)
        assert answer.status_code == 400 and field in answer.json()["errors"][0]["message"]

    missing = "listing/never-pushed"
    unknown = listing(missing, "tags", registry_token(layout.APP_IDENTITY, f"repository:{missing}:metadata_read"))
    assert unknown.status_code == 404
    assert unknown.json()["errors"][0] == {"code": "NAME_UNKNOWN", "message": "repository name not known to registry",
                                           "detail": {"name": missing}}
    other = requests.get(f"{BASE}/acr/v1/_catalog", verify=CA, timeout=30)
    assert other.status_code == 404 and "_tags" in other.json()["errors"][0]["message"]


def test_the_dns_proxy_tunnels_only_the_stacks_acrs(stack):
    proxies = {"https": layout.ACR_DNS_PROXY}
    # TLS end to end: the login server's certificate is checked against myregistry.azurecr.io
    challenge = requests.get(f"https://{ACR.login_server}/v2/", proxies=proxies, verify=CA, timeout=30)
    assert challenge.status_code == 401 and f'service="{ACR.login_server}"' in challenge.headers["WWW-Authenticate"]

    for authority, reason in (("login.microsoftonline.com:443", "not an ACR of the local stack"),
                              (f"{ACR.login_server}:5000", "port 443 only"),
                              ("notmine.azurecr.io:443", "not an ACR of the local stack")):
        with socket.create_connection((layout.HOST, layout.ACR_DNS_PROXY_PORT), timeout=30) as raw:
            raw.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
            answer = raw.makefile("rb").read().decode()
        assert answer.startswith("HTTP/1.1 403") and reason in answer, answer

    plain = requests.get(f"{layout.ACR_DNS_PROXY}/", timeout=30)
    assert plain.status_code == 405


def test_tunnel_targets_are_an_allowlist():
    assert tunnel_target("MyRegistry.azurecr.io:443")[0] == ACR
    assert tunnel_target("myregistry.azurecr.io")[0] is None
    assert tunnel_target("127.0.0.1:443")[0] is None


def test_a_cached_server_certificate_without_the_acr_names_is_reissued_by_the_same_ca(tmp_path, monkeypatch):
    for name in ("CA_CERT", "CA_KEY", "SERVER_CERT", "SERVER_KEY", "TOKEN_SIGNING_CERT", "TOKEN_SIGNING_KEY"):
        monkeypatch.setattr(layout, name, tmp_path / getattr(layout, name).name)
    ca.ensure_ca()
    authority = layout.CA_CERT.read_bytes()
    import trustme

    old = trustme.CA.from_pem(authority, layout.CA_KEY.read_bytes()).issue_cert("localhost", "127.0.0.1")
    layout.SERVER_CERT.write_bytes(b"".join(blob.bytes() for blob in old.cert_chain_pems))
    assert ACR.login_server in ca._missing_names()
    ca.ensure_ca()
    assert ca._missing_names() == set() and layout.CA_CERT.read_bytes() == authority
