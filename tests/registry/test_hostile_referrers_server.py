"""The hostile registry's referrer kinds (dev/hostile_registry.py REFERRER_KINDS) serve what their table says.

This tests the server, not the app: the app's referrer discovery meets these kinds in its own tests. Each kind
is read the way a client would: challenged first, then with the registry token.
"""

from __future__ import annotations

import json
import socket
import ssl
from urllib.parse import urljoin, urlsplit

import pytest
import requests

from dev import hostile_registry as hostile
from dev import layout

REFERRERS = f"/v2/{hostile.REPOSITORY}/referrers/{hostile.DIGEST}"
TAG = f"/v2/{hostile.REPOSITORY}/manifests/{hostile.TAG_SCHEMA_TAG}"
AUTH = {"Authorization": f"Bearer {hostile.REGISTRY_TOKEN}"}


@pytest.fixture(scope="module")
def registry():
    with hostile.HostileRegistry() as served:
        yield served


def get(registry: hostile.HostileRegistry, kind: str, path: str, **options) -> requests.Response:
    return requests.get(f"{registry.base}/{kind}{path}", headers=AUTH, verify=str(layout.CA_CERT), timeout=30,
                        allow_redirects=False, **options)


def path_of(kind: hostile.Kind) -> str:
    return REFERRERS if kind.spoils == "referrers" else TAG


def test_the_referrer_kinds_are_apart_from_the_refresh_kinds():
    assert len(hostile.KINDS) == 103 and len(hostile.REFERRER_KINDS) >= 25
    assert {k.spoils for k in hostile.REFERRER_KINDS} == set(hostile.REFERRER_SPOILS)
    assert not {k.name for k in hostile.KINDS} & {k.name for k in hostile.REFERRER_KINDS}
    assert all(hostile.KINDS_BY_NAME[k.name] is k for k in hostile.REFERRER_KINDS)
    assert all(k.behaviour and k.expect in ("problem", "ok") for k in hostile.REFERRER_KINDS)


def test_a_well_behaved_kind_serves_one_signature_with_its_blobs(registry):
    answer = get(registry, "tags-string", REFERRERS)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == hostile.OCI_INDEX
    [descriptor] = answer.json()["manifests"]
    assert descriptor["artifactType"] == hostile.NOTARY_SIGNATURE
    signature = get(registry, "tags-string", f"/v2/{hostile.REPOSITORY}/manifests/{descriptor['digest']}")
    assert hostile._sha256(signature.content) == descriptor["digest"] == signature.headers["Docker-Content-Digest"]
    manifest = signature.json()
    assert manifest["subject"]["digest"] == hostile.DIGEST
    for blob in (manifest["config"], *manifest["layers"]):
        data = get(registry, "tags-string", f"/v2/{hostile.REPOSITORY}/blobs/{blob['digest']}").content
        assert hostile._sha256(data) == blob["digest"] and len(data) == blob["size"]
    assert get(registry, "tags-string", f"/v2/{hostile.REPOSITORY}/referrers/{hostile.SIGNATURE_DIGEST}").json()[
        "manifests"] == []
    assert get(registry, "tags-string", TAG).status_code == 404  # a registry with the API has no tag schema


@pytest.mark.parametrize("kind", hostile.REFERRER_KINDS, ids=lambda k: k.name)
def test_every_referrer_kind_challenges_first(registry, kind):
    answer = requests.get(f"{registry.base}/{kind.name}{path_of(kind)}", verify=str(layout.CA_CERT), timeout=30)
    assert answer.status_code == 401 and answer.headers["WWW-Authenticate"].startswith("Bearer realm=")


@pytest.mark.parametrize("kind", [k for k in hostile.REFERRER_KINDS if k.spoils == "referrers-tag"],
                         ids=lambda k: k.name)
def test_tag_schema_kinds_have_no_referrers_api(registry, kind):
    assert get(registry, kind.name, REFERRERS).status_code == 404


def manifests_of(answer: requests.Response):
    return answer.json()["manifests"]


CHECKS = {
    "referrers-manifests-object": lambda a: isinstance(manifests_of(a), dict),
    "referrers-manifests-string": lambda a: manifests_of(a) == hostile.SIGNATURE_DIGEST,
    "referrers-manifests-null": lambda a: manifests_of(a) is None,
    "referrers-descriptor-not-object": lambda a: [type(m).__name__ for m in manifests_of(a)] == [
        "str", "int", "NoneType", "list"],
    "referrers-digest-number": lambda a: manifests_of(a)[0]["digest"] == 12345,
    "referrers-digest-not-digest": lambda a: [m["digest"][:7] for m in manifests_of(a)] == [
        "latest", "sha256:", "md5:aaa", "sha256:", "sha256:"] and len(manifests_of(a)[-1]["digest"]) > 50_000,
    "referrers-artifact-type-number": lambda a: manifests_of(a)[0]["artifactType"] == 42,
    "referrers-size-lies": lambda a: [m["size"] for m in manifests_of(a)] == [-1, 10**30],
    "referrers-top-level-array": lambda a: a.json() == [hostile.SIGNATURE_DESCRIPTOR],
    "referrers-not-json": lambda a: a.headers["Content-Type"] == "text/html" and a.text.startswith("<html>"),
    "referrers-media-type-manifest": lambda a: a.headers["Content-Type"] == hostile.OCI_MANIFEST
    and a.json()["mediaType"] == hostile.OCI_MANIFEST and "manifests" not in a.json(),
    "referrers-media-type-html": lambda a: a.headers["Content-Type"] == "text/html"
    and manifests_of(a) == [hostile.SIGNATURE_DESCRIPTOR],
    "referrers-wrong-subject": lambda a: manifests_of(a)[0]["digest"] == hostile.ELSEWHERE_DIGEST
    and json.loads(hostile.ELSEWHERE_SIGNATURE)["subject"]["digest"] != hostile.DIGEST,
    "referrers-huge-index": lambda a: len(manifests_of(a)) == hostile.HUGE_REFERRERS
    and len({m["digest"] for m in manifests_of(a)}) == hostile.HUGE_REFERRERS,
    "referrers-self-subject": lambda a: [m["digest"] for m in manifests_of(a)] == [
        hostile.DIGEST, hostile.SIGNATURE_DIGEST],
    "referrers-redirect-other-host": lambda a: a.status_code == 307 and a.headers["Location"].startswith(
        "https://localhost:"),
    "referrers-tag-schema": lambda a: manifests_of(a) == [hostile.SIGNATURE_DESCRIPTOR],
    "referrers-tag-plain-image": lambda a: a.json()["mediaType"] == hostile.OCI_MANIFEST
    and "layers" in a.json() and "manifests" not in a.json(),
    "referrers-tag-manifests-object": lambda a: isinstance(manifests_of(a), dict),
    "referrers-tag-huge-index": lambda a: len(manifests_of(a)) == hostile.HUGE_REFERRERS,
    "referrers-tag-redirect-other-host": lambda a: a.status_code == 307 and a.headers["Location"].startswith(
        "https://localhost:"),
}


ELSEWHERE_TESTED = {"referrers-cycle", "referrers-link-loop", "referrers-link-cycle", "referrers-endless-pages",
                    "referrers-link-other-host", "referrers-stall-mid-body", "referrers-tag-stall-mid-body",
                    "referrers-drip-body"}


def test_every_referrer_kind_is_checked_here():
    assert set(CHECKS) | ELSEWHERE_TESTED == {k.name for k in hostile.REFERRER_KINDS}


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_a_kind_answers_as_its_table_says(registry, name):
    kind = hostile.KINDS_BY_NAME[name]
    assert CHECKS[name](get(registry, name, path_of(kind))), kind.behaviour


def test_the_cycle_leads_back_to_the_image(registry):
    first = manifests_of(get(registry, "referrers-cycle", REFERRERS))
    assert [m["digest"] for m in first] == [hostile.SIGNATURE_DIGEST]
    back = manifests_of(get(registry, "referrers-cycle", f"/v2/{hostile.REPOSITORY}/referrers/{first[0]['digest']}"))
    assert [m["digest"] for m in back] == [hostile.DIGEST]


def next_page(answer: requests.Response) -> str:
    link = answer.headers["Link"]
    return urljoin(answer.url, link[link.index("<") + 1:link.index(">")])


def test_link_pages_loop_cycle_never_end_or_leave(registry):
    loop = get(registry, "referrers-link-loop", REFERRERS)
    assert next_page(loop) == loop.url
    a = get(registry, "referrers-link-cycle", REFERRERS)
    b = requests.get(next_page(a), headers=AUTH, verify=str(layout.CA_CERT), timeout=30)
    assert next_page(b).endswith("?page=a") and next_page(a).endswith("?page=b")
    seen, page = set(), get(registry, "referrers-endless-pages", REFERRERS)
    for _ in range(5):
        seen.add(page.url)
        page = requests.get(next_page(page), headers=AUTH, verify=str(layout.CA_CERT), timeout=30)
    assert len(seen) == 5
    away = get(registry, "referrers-link-other-host", REFERRERS)
    elsewhere = urlsplit(next_page(away)).netloc
    assert elsewhere == urlsplit(registry.recorder_https).netloc != urlsplit(registry.base).netloc


def raw_get(registry: hostile.HostileRegistry, kind: str, path: str, want: int) -> bytes:
    """The first `want` bytes of the raw answer (headers and all), read with a plain TLS socket."""
    host, port = urlsplit(registry.base).hostname, urlsplit(registry.base).port
    context = ssl.create_default_context(cafile=str(layout.CA_CERT))
    with socket.create_connection((host, port), timeout=30) as plain, \
            context.wrap_socket(plain, server_hostname=host) as conn:
        conn.sendall(f"GET /{kind}{path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {AUTH['Authorization']}\r\n\r\n"
                     .encode())
        data = b""
        while len(data) < want:
            chunk = conn.recv(want - len(data))
            if not chunk:
                break
            data += chunk
    return data


@pytest.mark.parametrize("name,path", [("referrers-stall-mid-body", REFERRERS),
                                       ("referrers-tag-stall-mid-body", TAG)])
def test_a_stall_mid_body_sends_half_the_index(registry, name, path):
    full = hostile.referrers_index([hostile.SIGNATURE_DESCRIPTOR])
    head = f"HTTP/1.1 200 OK\r\nContent-Type: {hostile.OCI_INDEX}\r\nContent-Length: {len(full)}\r\n\r\n".encode()
    assert raw_get(registry, name, path, len(head) + len(full) // 2) == head + full[: len(full) // 2]


def test_the_drip_sends_a_byte_at_a_time(registry):
    head = f"HTTP/1.1 200 OK\r\nContent-Type: {hostile.OCI_INDEX}\r\nContent-Length: 1000000\r\n\r\n".encode()
    start = b'{"manifests": ['
    assert raw_get(registry, "referrers-drip-body", REFERRERS, len(head) + len(start) + 2) == head + start + b"  "
