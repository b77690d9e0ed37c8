"""The app's registry client against the stack's real registries: digests by HEAD with every manifest type,
tag pages, Docker Hub tokens (anonymous and with credentials), Basic auth, ACR's Entra exchange, token reuse
per scope, rate-limit headers and 429s from the Docker Hub front."""

from __future__ import annotations

import uuid

import pytest

from dev import dockerhub_token, layout, seed
from shared.core.redact import Password
from shared.core.settings import parse_endpoints
from shared.registry.client import (
    BasicAuth,
    IdentityAuth,
    RateLimited,
    RegistryClient,
    RegistryError,
    endpoint_for,
    exchange_url,
    parse_rate_limit,
    source_auth,
)


def test_docker_hub_means_its_api_host_and_endpoints_can_be_overridden():
    assert endpoint_for("docker.io") == "https://registry-1.docker.io"
    assert endpoint_for("mcr.microsoft.com") == "https://mcr.microsoft.com"
    assert endpoint_for("docker.io", {"docker.io": "https://10.0.0.4"}) == "https://10.0.0.4"
    assert parse_endpoints("Docker.io=https://a:1/, mcr.microsoft.com=https://b") == {
        "docker.io": "https://a:1", "mcr.microsoft.com": "https://b"}
    with pytest.raises(ValueError, match="host=https://endpoint"):
        parse_endpoints("docker.io")


def test_acr_exchange_endpoint_sits_beside_the_token_endpoint():
    assert exchange_url("https://x.azurecr.io/oauth2/token") == "https://x.azurecr.io/oauth2/exchange"
    assert exchange_url(layout.acr_token_realm(layout.TARGET_ACR)) == layout.acr_exchange_url(layout.TARGET_ACR)
    with pytest.raises(ValueError):
        exchange_url("https://auth.docker.io/token")


def test_rate_limit_headers_as_docker_hub_sends_them():
    limit = parse_rate_limit({"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "76;w=21600"})
    assert (limit.limit, limit.remaining) == (100, 76)
    assert parse_rate_limit({}) is None


def test_a_credential_set_wins_an_acr_gets_the_identity_else_anonymous():
    identity = IdentityAuth(object())
    assert source_auth("docker.io", "u", Password("p"), identity, "azurecr.io") == BasicAuth("u", Password("p"))
    assert source_auth("x.azurecr.io", None, None, identity, "azurecr.io") is identity
    assert source_auth("docker.io", None, None, identity, "azurecr.io") is None
    assert "secret-xyz" not in repr(BasicAuth("u", Password("secret-xyz")))


@pytest.fixture
def client(app_env):
    return RegistryClient(endpoints=layout.registry_endpoints())



def _identity():
    from azure.identity import ManagedIdentityCredential

    return IdentityAuth(ManagedIdentityCredential())


def test_head_returns_the_digest_of_every_manifest_type(stack, client):
    cases = [("docker.io", "library/hello-world", "latest"), ("docker.io", "library/nginx", "1.27"),
             ("docker.io", "tensorflow/tensorflow", "latest-gpu"),
             ("mcr.microsoft.com", "windows/servercore", "ltsc2022")]
    for host, repo, tag in cases:
        seeded = stack.find(host, repo, tag)
        head = client.head_manifest(host, repo, tag)
        assert (head.digest, head.media_type) == (seeded.digest, seeded.media_type), (host, repo, tag)
    assert client.head_manifest("docker.io", "library/nginx", "no-such-tag") is None
    sent = client.requests_sent
    assert sent[("docker.io", "GET", "manifest")] == 0 and sent[("docker.io", "HEAD", "manifest")] == 4


def test_tag_lists_follow_link_pages(stack, client):
    repo = f"library/paged-{uuid.uuid4().hex[:8]}"
    image = seed.build_image(repo, ["linux/amd64"])
    admin = seed.admin_client("docker.io")
    tags = [f"1.{i}" for i in range(7)]
    for tag in tags:
        seed.push_image(admin, repo, tag, image)
    assert sorted(client.list_tags("docker.io", repo, page_size=3)) == sorted(tags)
    assert client.requests_sent[("docker.io", "GET", "tags")] == 3
    assert client.list_tags("docker.io", "library/never-pushed") == []


def test_docker_hub_tokens_are_fetched_once_per_scope(stack, client):
    before = dockerhub_token.request_counts().get("/token", 0)
    for _ in range(3):
        client.head_manifest("docker.io", "library/nginx", "1.27")
        client.head_manifest("docker.io", "library/nginx", "latest")
    client.head_manifest("docker.io", "bitnami/redis", "7")
    assert dockerhub_token.request_counts()["/token"] - before == 2


def test_private_docker_hub_repository_needs_the_credential_set(stack, client):
    digest = stack.digest("docker.io", "myrepo/image", "tag")
    with pytest.raises(RegistryError) as denied:
        client.head_manifest("docker.io", "myrepo/image", "tag")
    assert denied.value.status == 401
    auth = BasicAuth("dockeruser", Password(layout.DOCKERHUB.users["dockeruser"]))
    assert client.head_manifest("docker.io", "myrepo/image", "tag", auth).digest == digest


def test_wrong_password_is_refused_without_echoing_it(stack, client):
    with pytest.raises(RegistryError) as refused:
        client.head_manifest("registry.contoso.com", "sourcerepo/image", "tag",
                             BasicAuth("contoso", Password("wrong-pw-123")))
    assert refused.value.status == 401 and "wrong-pw-123" not in str(refused.value)


def test_basic_auth_registry(stack, client):
    auth = BasicAuth("contoso", Password(layout.PRIVATE.users["contoso"]))
    head = client.head_manifest("registry.contoso.com", "sourcerepo/image", "tag", auth)
    assert head.digest == stack.digest("registry.contoso.com", "sourcerepo/image", "tag")


def test_acr_reads_with_the_managed_identity_exchange_once_then_a_token_per_scope(stack, client, control,
                                                                                app_env):
    control.clear_requests()
    identity = _identity()
    login = layout.SOURCE_ACR.login_server
    expected = stack.digest(login, "aci-helloworld", "latest")
    for _ in range(3):
        assert client.head_manifest(login, "aci-helloworld", "latest", identity).digest == expected
    assert client.head_manifest(layout.TARGET_ACR.login_server, "never-imported", "x", identity) is None
    acr = control.requests("acr")
    assert [r["path"].rsplit("/", 1)[-1] for r in acr].count("exchange") == 2  # one per registry
    assert [r["path"].rsplit("/", 1)[-1] for r in acr].count("token") == 2  # one per registry and scope


def test_docker_hub_front_reports_the_remaining_pulls_and_429(stack, client, front):
    client.head_manifest("docker.io", "library/nginx", "1.27")
    remaining = client.rate_limit("docker.io").remaining
    assert remaining is not None and remaining > 0
    front.fail(429, retry_after=7, count=1)
    with pytest.raises(RateLimited) as limited:
        client.head_manifest("docker.io", "library/nginx", "latest")
    assert limited.value.retry_after == 7
    assert client.head_manifest("docker.io", "library/nginx", "latest") is not None


# --- the Entra token goes to the registry's own origin only; no credential without a username -------
ACR_ENDPOINT = "https://127.0.0.1:5011"


@pytest.mark.parametrize(("realm", "allowed"), [
    (f"{ACR_ENDPOINT}/oauth2/token", True),                         # ACR: the login server itself
    ("https://127.0.0.1:9443/acr/myregistry/oauth2/token", False),  # same host, other port (the old stand-in's)
    ("https://127.0.0.1/oauth2/token", False),                      # same host, default port
    ("https://localhost:5011/oauth2/token", False),                 # same port, another host name
    ("http://127.0.0.1:5011/oauth2/token", False),                  # same address, plain http
])
def test_the_entra_token_realm_must_be_the_registrys_own_origin(realm, allowed):
    from shared.registry.client import IdentityAuth, RegistryClient, RegistryError, _Challenge

    client = RegistryClient(endpoints={"x.azurecr.io": ACR_ENDPOINT}, session=object())
    challenge = _Challenge("bearer", realm, "x.azurecr.io")
    if allowed:
        assert client._checked_realm("x.azurecr.io", challenge, IdentityAuth(object())) == realm
    else:
        with pytest.raises(RegistryError) as caught:
            client._checked_realm("x.azurecr.io", challenge, IdentityAuth(object()))
        assert caught.value.code == "TOKEN_REALM"


@pytest.mark.parametrize("scheme", ["basic", "bearer"])
@pytest.mark.parametrize("username", [None, ""])
def test_a_credential_without_a_username_is_never_sent(scheme, username):
    """No registry takes a bare password as a bearer token (the old client sent `Bearer <password>`)."""
    from shared.registry.client import BasicAuth, RegistryClient, RegistryError, _Challenge

    client = RegistryClient(endpoints={"r.example": "https://127.0.0.1:1"}, session=object())
    challenge = _Challenge(scheme, "https://127.0.0.1:1/token", "r.example")
    with pytest.raises(RegistryError) as caught:
        client._authorization("r.example", challenge, "repo", BasicAuth(username, Password("s3cret-token")),
                              renew=False)
    assert caught.value.code == "NO_USERNAME" and "username" in caught.value.message
    assert "s3cret-token" not in str(caught.value)


def test_describe_reads_digest_and_platforms_in_one_get(stack, client):
    """What the worker records of a landed image (digest, platforms) costs one GET, and says what HEAD says."""
    cases = [("docker.io", "library/hello-world", "latest"), ("docker.io", "library/nginx", "1.27")]
    for host, repo, tag in cases:
        before = client.requests_sent.copy()
        head, platforms = client.describe(host, repo, tag)
        sent = client.requests_sent - before
        assert (sent[(host, "GET", "manifest")], sent[(host, "HEAD", "manifest")]) == (1, 0)
        assert head == client.head_manifest(host, repo, tag)
        seeded = stack.find(host, repo, tag)
        assert head.digest == seeded.digest
        if "index" in seeded.media_type or "list" in seeded.media_type:
            assert len(platforms) >= 2 and all("/" in p for p in platforms)
        else:
            assert platforms == []
    assert client.describe("docker.io", "library/nginx", "no-such-tag") is None
