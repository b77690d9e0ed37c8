"""The Azure stand-in, driven by the real Azure SDK clients (azure-identity, azure-mgmt-containerregistry)
over the real wire protocols: first end to end through the stack's real registries, then the control
plane in depth with the in-memory data plane (which borrows the stack's stand-in when it is up)."""

from __future__ import annotations

import base64
import json
import os
import time
import uuid

import jwt
import pytest
import requests
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.identity import ManagedIdentityCredential
from azure.mgmt.containerregistry import ContainerRegistryManagementClient

from dev import layout, seed, tokens
from dev.azure_standin.control import StandinControl
from tests.standin.process import standin_for_module

ARM_SCOPE = "https://management.azure.com/.default"
HELLO = "docker.io/library/hello-world:latest"
INDEX = "sha256:" + "a" * 64
CHILDREN = ["sha256:" + c * 64 for c in "bcd"]
TARGET, SOURCE, OTHER = layout.TARGET_ACR, layout.SOURCE_ACR, layout.OTHER_SUB_ACR


@pytest.fixture(scope="module")
def standin(stack_part):
    saved = dict(os.environ)
    os.environ.update(layout.stack_env())
    os.environ.pop("AZURE_CLIENT_ID", None)
    try:
        with standin_for_module("memory") as proc:
            yield StandinControl()
        assert proc is None or proc.returncode == 0, "SIGTERM should shut the stand-in down cleanly"
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def control(standin: StandinControl) -> StandinControl:
    standin.reset()
    standin.update_settings(retry_after=0, data_plane="memory")  # Retry-After 0: the SDK uses polling_interval
    standin.put_image(HELLO, INDEX, [INDEX, *CHILDREN])
    return standin


def client(subscription: str = layout.SUB_A, client_id: str | None = None) -> ContainerRegistryManagementClient:
    credential = ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
    return ContainerRegistryManagementClient(credential, subscription, base_url=layout.ARM_ENDPOINT,
                                             polling_interval=0.05)


def hello_params(**overrides) -> dict:
    body = {"source": {"registryUri": "docker.io", "sourceImage": "library/hello-world:latest"},
            "targetTags": ["hello-world:latest"], "mode": "NoForce"}
    body.update(overrides)
    return body


def import_into_target(params: dict, **kwargs) -> None:
    poller = client(client_id=kwargs.pop("client_id", None)).registries.begin_import_image(
        TARGET.resource_group, TARGET.name, params, **kwargs)
    poller.result(timeout=20)


# --- end to end through the stack's registries (first, so the memory tests below borrow this stand-in)
@pytest.fixture
def live(stack, monkeypatch):
    for name, value in layout.stack_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AZURE_CLIENT_ID", raising=False)
    control = StandinControl()
    control.reset()
    control.update_settings(retry_after=0)
    yield control
    control.reset()


def unique_tag() -> str:
    return f"standin-{uuid.uuid4().hex[:8]}"


def target_digest(repo: str, ref: str) -> str | None:
    info = seed.admin_client(TARGET).head_manifest(repo, ref)
    return info.digest if info else None


def test_e2e_multi_arch_import_copies_every_manifest(live, stack):
    tag = unique_tag()
    import_into_target(hello_params(targetTags=[f"standin/hello-world:{tag}"]))
    expected = stack.digest("docker.io", "library/hello-world", "latest")
    assert target_digest("standin/hello-world", tag) == expected
    index = json.loads(seed.admin_client(TARGET).get_manifest("standin/hello-world", expected).body)
    assert len(index["manifests"]) == 4
    for child in index["manifests"]:
        assert target_digest("standin/hello-world", child["digest"]) == child["digest"]
    [op] = live.operations()
    assert op["digest"] == expected


def test_e2e_noforce_conflict_then_force(live):
    params = hello_params(targetTags=[f"standin/hello-world:{unique_tag()}"])
    import_into_target(params)
    with pytest.raises(HttpResponseError) as raised:
        import_into_target(params)
    assert raised.value.error.code == "Conflict"
    assert "already exists in target registry" in raised.value.error.message
    import_into_target({**params, "mode": "Force"})


def test_e2e_resource_id_source_uses_the_callers_pull_role(live, stack):
    tag = unique_tag()
    import_into_target({"source": {"resourceId": SOURCE.resource_id, "sourceImage": "aci-helloworld:latest"},
                        "targetTags": [f"standin/aci:{tag}"]})
    assert target_digest("standin/aci", tag) == stack.digest(SOURCE.login_server, "aci-helloworld", "latest")


def test_e2e_service_principal_credentials_for_another_subscriptions_acr(live, stack):
    sp = layout.SERVICE_PRINCIPAL
    tag = unique_tag()
    source = {"registryUri": OTHER.login_server, "sourceImage": "sourcerepo/image:tag",
              "credentials": {"username": sp.client_id, "password": sp.secret}}
    import_into_target({"source": source, "targetTags": [f"standin/sp:{tag}"]})
    assert target_digest("standin/sp", tag) == stack.digest(OTHER.login_server, "sourcerepo/image", "tag")
    source["credentials"]["password"] = "wrong"
    with pytest.raises(HttpResponseError) as raised:
        import_into_target({"source": source, "targetTags": [f"standin/sp:{unique_tag()}"]})
    assert "UNAUTHORIZED" in raised.value.error.message


@pytest.mark.parametrize("source, expected", [
    ({"registryUri": "registry.contoso.com", "sourceImage": "sourcerepo/image:tag"}, "UNAUTHORIZED"),
    ({"registryUri": "docker.io", "sourceImage": "myrepo/image:tag"}, "UNAUTHORIZED"),
    ({"registryUri": "docker.io", "sourceImage": "library/hello-world:no-such-tag"}, "MANIFEST_UNKNOWN"),
    ({"registryUri": "registry.example.org", "sourceImage": "app:1"}, "no such host"),
])
def test_e2e_source_failures(live, source, expected):
    with pytest.raises(HttpResponseError) as raised:
        import_into_target({"source": source, "targetTags": [f"standin/fail:{unique_tag()}"]})
    assert expected in raised.value.error.message


@pytest.mark.parametrize("host, repo, user", [
    ("registry.contoso.com", "sourcerepo/image", "contoso"),
    ("docker.io", "myrepo/image", "dockeruser"),
])
def test_e2e_credentials_open_private_sources(live, stack, host, repo, user):
    spec = layout.PRIVATE if host == "registry.contoso.com" else layout.DOCKERHUB
    tag = unique_tag()
    import_into_target({"source": {"registryUri": host, "sourceImage": f"{repo}:tag",
                                   "credentials": {"username": user, "password": spec.users[user]}},
                        "targetTags": [f"standin/private:{tag}"]})
    assert target_digest("standin/private", tag) == stack.digest(host, repo, "tag")


# --- managed identity -------------------------------------------------------------------------
def test_system_assigned_identity_token_names_the_app_identity(control):
    token = ManagedIdentityCredential().get_token(ARM_SCOPE)
    claims = tokens.verify_entra_token(token.token, audience="https://management.azure.com")
    assert claims["oid"] == layout.APP_IDENTITY.object_id
    assert claims["tid"] == layout.TENANT_ID
    assert token.expires_on > time.time() + 3000


def test_user_assigned_identity_is_selected_by_client_id(control):
    token = ManagedIdentityCredential(client_id=layout.USER_ASSIGNED_IDENTITY.client_id).get_token(ARM_SCOPE)
    assert jwt.decode(token.token, options={"verify_signature": False})["oid"] == \
        layout.USER_ASSIGNED_IDENTITY.object_id
    sent = control.requests("identity")[-1]["query"]
    assert sent == {"api-version": "2019-08-01", "resource": "https://management.azure.com",
                    "client_id": layout.USER_ASSIGNED_IDENTITY.client_id}


def test_unknown_client_id_is_refused(control):
    with pytest.raises(ClientAuthenticationError):
        ManagedIdentityCredential(client_id="99999999-0000-4000-8000-000000000000").get_token(ARM_SCOPE)


def test_identity_endpoint_requires_the_identity_header(control):
    url = f"{layout.IDENTITY_ENDPOINT}?api-version=2019-08-01&resource={layout.ARM_RESOURCE}"
    assert requests.get(url, timeout=5).status_code == 401
    answer = requests.get(url, headers={"X-IDENTITY-HEADER": layout.IDENTITY_HEADER}, timeout=5).json()
    assert answer["client_id"] == layout.APP_IDENTITY.client_id
    assert answer["expires_on"].isdigit() and answer["token_type"] == "Bearer"


# --- ARM reads ---------------------------------------------------------------------------------
def test_get_registry_returns_the_arm_resource(control):
    registry = client().registries.get(TARGET.resource_group, TARGET.name)
    assert registry.id == TARGET.resource_id
    assert registry.login_server == "myregistry.azurecr.io"
    assert registry.provisioning_state == "Succeeded"
    assert registry.sku.name == "Premium"


def test_list_registries_shows_what_the_caller_can_see_per_subscription(control):
    assert sorted(r.name for r in client().registries.list()) == ["myregistry", "mysourceregistry"]
    assert [r.name for r in client(layout.SUB_B).registries.list()] == ["sourceregistry"]
    assert [r.name for r in client().registries.list_by_resource_group("rg-build")] == ["mysourceregistry"]


def test_missing_registry_is_403_without_access_above_it_and_404_with(control):
    with pytest.raises(HttpResponseError) as raised:
        client().registries.get(TARGET.resource_group, "nosuchregistry")
    assert raised.value.error.code == "AuthorizationFailed"
    control.add_role_assignment(layout.APP_IDENTITY.object_id, "Reader",
                                f"/subscriptions/{layout.SUB_A}/resourceGroups/{TARGET.resource_group}")
    with pytest.raises(ResourceNotFoundError) as raised:
        client().registries.get(TARGET.resource_group, "nosuchregistry")
    assert raised.value.error.code == "ResourceNotFound"


class StaticToken:
    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes, **kwargs) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3600)


def test_invalid_token_raises_client_authentication_error(control):
    bad = ContainerRegistryManagementClient(StaticToken("not-a-jwt"), layout.SUB_A, base_url=layout.ARM_ENDPOINT)
    with pytest.raises(ClientAuthenticationError) as raised:
        bad.registries.get(TARGET.resource_group, TARGET.name)
    assert raised.value.status_code == 401
    assert raised.value.response.headers["WWW-Authenticate"].startswith("Bearer authorization_uri=")


def test_arm_requires_api_version(control):
    token = ManagedIdentityCredential().get_token(ARM_SCOPE).token
    answer = requests.get(f"{layout.ARM_ENDPOINT}{TARGET.resource_id}", headers={"Authorization": f"Bearer {token}"},
                          verify=str(layout.CA_CERT), timeout=5)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "MissingApiVersionParameter"


def test_cloud_metadata_is_a_single_object(control):
    meta = requests.get(f"{layout.ARM_ENDPOINT}/metadata/endpoints?api-version=2022-09-01",
                        verify=str(layout.CA_CERT), timeout=5).json()
    assert meta["resourceManager"] == layout.ARM_ENDPOINT + "/"
    assert meta["authentication"]["audiences"] == [layout.ARM_RESOURCE]


# --- importImage -------------------------------------------------------------------------------
def test_import_succeeds_and_the_request_is_recorded_as_sent(control):
    import_into_target(hello_params())
    [op] = control.operations()
    assert op["status"] == "Succeeded" and op["digest"] == INDEX
    [post] = [r for r in control.requests() if r["method"] == "POST"]
    assert post["path"].endswith("/registries/myregistry/importImage")
    assert post["query"]["api-version"] == "2025-11-01"
    assert post["body"] == hello_params()
    assert post["principal"] == layout.APP_IDENTITY.object_id


def test_import_with_user_assigned_identity(control):
    import_into_target(hello_params(), client_id=layout.USER_ASSIGNED_IDENTITY.client_id)
    assert control.requests()[-1]["principal"] == layout.USER_ASSIGNED_IDENTITY.object_id


def test_noforce_fails_when_the_tag_exists_and_force_overwrites(control):
    import_into_target(hello_params())
    with pytest.raises(HttpResponseError) as raised:
        import_into_target(hello_params())
    assert raised.value.error.code == "Conflict"
    assert raised.value.error.message == "Tag hello-world:latest already exists in target registry."
    import_into_target(hello_params(mode="Force"))


@pytest.mark.parametrize("params, field", [
    (hello_params(sourceImages="x"), "sourceImages"),
    (hello_params(source={"registryUri": "docker.io", "sourceImage": "x", "creds": {}}), "source.creds"),
    (hello_params(mode="Overwrite"), "mode"),
    (hello_params(targetTags="hello-world:latest"), "targetTags"),
    ({"targetTags": ["a:b"]}, "source"),
    (hello_params(source={"registryUri": "docker.io"}), "source.sourceImage"),
    (hello_params(source={"registryUri": "docker.io", "sourceImage": "x",
                          "credentials": {"username": "u"}}), "source.credentials.password"),
])
def test_invalid_parameters_name_the_field(control, params, field):
    with pytest.raises(HttpResponseError) as raised:
        import_into_target(params)
    assert raised.value.status_code == 400
    assert raised.value.error.code == "InvalidParameters"
    assert f"'{field}'" in raised.value.error.message
    assert control.operations() == []


def test_identity_without_role_gets_authorization_failed(control):
    no_role = layout.NO_ROLE_IDENTITY
    control.add_role_assignment(no_role.object_id, "AcrPush", TARGET.resource_id)
    with pytest.raises(HttpResponseError) as raised:
        import_into_target(hello_params(), client_id=no_role.client_id)
    assert raised.value.status_code == 403
    assert raised.value.error.code == "AuthorizationFailed"
    assert raised.value.error.message.startswith(
        f"The client '{no_role.client_id}' with object id '{no_role.object_id}' does not have authorization "
        f"to perform action 'Microsoft.ContainerRegistry/registries/importImage/action' over scope "
        f"'{TARGET.resource_id}'")


def test_custom_role_with_import_action_may_import(control):
    no_role = layout.NO_ROLE_IDENTITY
    control.define_role("Importer", ["Microsoft.ContainerRegistry/registries/importImage/action",
                                     "Microsoft.ContainerRegistry/registries/read"])
    control.add_role_assignment(no_role.object_id, "Importer", TARGET.resource_id)
    import_into_target(hello_params(), client_id=no_role.client_id)


def test_throttled_post_is_retried_by_the_sdk(control):
    control.add_faults("import", {"status": 429, "retry_after": 1})
    started = time.monotonic()
    import_into_target(hello_params())
    assert time.monotonic() - started >= 1
    assert [r["status"] for r in control.requests() if r["method"] == "POST"] == [429, 202]


def test_copy_failure_comes_out_of_the_poller(control):
    control.add_faults("operation", {"fail": "copy_blobs"})
    with pytest.raises(HttpResponseError) as raised:
        import_into_target(hello_params())
    assert (raised.value.error.code, raised.value.error.message) == ("InvalidParameters", "Error copying blobs")


@pytest.mark.parametrize("async_header", [False, True])
def test_both_polling_styles_report_success_and_failure(control, async_header):
    control.update_settings(azure_async_operation=async_header)
    import_into_target(hello_params())
    with pytest.raises(HttpResponseError) as raised:
        import_into_target(hello_params())
    assert raised.value.error.code == "Conflict"
    polled = {r["path"].split("/")[-2] for r in control.requests() if r["method"] == "GET"}
    assert polled == ({"operationStatuses", "operationResults"} if async_header else {"operationResults"})


def test_running_operation_answers_202_with_pending_manifests(control):
    control.update_settings(retry_after=1)
    control.add_faults("operation", {"delay": 2})
    poller = client().registries.begin_import_image(TARGET.resource_group, TARGET.name, hello_params(),
                                                    polling=False)
    initial = poller.polling_method()._initial_response.http_response
    assert initial.status_code == 202 and initial.headers["Retry-After"] == "1"
    token = ManagedIdentityCredential().get_token(ARM_SCOPE).token
    time.sleep(0.3)
    running = requests.get(initial.headers["Location"], headers={"Authorization": f"Bearer {token}"},
                           verify=str(layout.CA_CERT), timeout=5)
    assert running.status_code == 202
    assert running.json() == {"status": "Accepted", **{d: "Pending" for d in [INDEX, *CHILDREN]}}


def test_polling_resumes_from_a_continuation_token(control):
    control.add_faults("operation", {"delay": 0.5})
    first = client().registries.begin_import_image(TARGET.resource_group, TARGET.name, hello_params())
    token = first.continuation_token()
    resumed = client().registries.begin_import_image(TARGET.resource_group, TARGET.name, None,
                                                     continuation_token=token)
    resumed.result(timeout=10)
    assert control.operations()[0]["status"] == "Succeeded"


def test_no_polling_poller_cannot_give_a_continuation_token(control):
    """azure-core 1.41: NoPolling cannot serialise its initial response; resume needs polling=True."""
    poller = client().registries.begin_import_image(TARGET.resource_group, TARGET.name, hello_params(),
                                                    polling=False)
    with pytest.raises(TypeError):
        poller.continuation_token()


def test_operation_that_never_finishes_keeps_polling(control):
    control.add_faults("operation", {"hang": True})
    poller = client().registries.begin_import_image(TARGET.resource_group, TARGET.name, hello_params())
    poller.wait(timeout=1)
    assert not poller.done()
    assert control.operations()[0]["status"] == "InProgress"


def test_more_than_fifty_manifests_fails(control):
    many = ["sha256:" + f"{i:064x}" for i in range(51)]
    control.put_image("docker.io/library/big:1", many[0], many)
    params = hello_params(source={"registryUri": "docker.io", "sourceImage": "library/big:1"}, targetTags=["big:1"])
    with pytest.raises(HttpResponseError) as raised:
        import_into_target(params)
    assert "51 manifests" in raised.value.error.message


@pytest.mark.parametrize("source, expected", [
    ({"registryUri": "docker.io", "sourceImage": "library/nope:1"}, "MANIFEST_UNKNOWN"),
    ({"registryUri": "registry.example.org", "sourceImage": "app:1"}, "no such host"),
    ({"registryUri": "registry.contoso.com", "sourceImage": "app:1"}, "UNAUTHORIZED"),
    ({"registryUri": "registry.contoso.com", "sourceImage": "app:1",
      "credentials": {"username": "contoso", "password": "wrong"}}, "UNAUTHORIZED"),
    ({"registryUri": "docker.io", "sourceImage": "someorg/private:1"}, "UNAUTHORIZED"),
])
def test_source_failures_carry_the_registry_error(control, source, expected):
    with pytest.raises(HttpResponseError) as raised:
        import_into_target(hello_params(source=source, targetTags=["x:1"]))
    assert expected in raised.value.error.message


def test_private_registry_with_credentials_imports(control):
    control.put_image("registry.contoso.com/app:1", INDEX)
    user, password = next(iter(layout.PRIVATE.users.items()))
    import_into_target(hello_params(source={"registryUri": "registry.contoso.com", "sourceImage": "app:1",
                                            "credentials": {"username": user, "password": password}},
                                    targetTags=["app:1"]))


def test_resource_id_source_needs_pull_on_the_source(control):
    control.put_image(f"{SOURCE.login_server}/base:1", INDEX)
    params = hello_params(source={"resourceId": SOURCE.resource_id, "sourceImage": "base:1"}, targetTags=["base:1"])
    import_into_target(params)
    control.remove_role_assignment(layout.APP_IDENTITY.object_id, layout.SOURCE_ROLE, SOURCE.resource_id)
    with pytest.raises(HttpResponseError) as raised:
        import_into_target(hello_params(mode="Force", **{k: v for k, v in params.items() if k != "mode"}))
    assert raised.value.error.code == "LinkedAuthorizationFailed"
    assert f"on the linked scope(s) '{SOURCE.resource_id}'" in raised.value.error.message


def test_service_principal_credentials_reach_another_subscriptions_acr(control):
    control.put_image(f"{OTHER.login_server}/tools:2", INDEX)
    sp = layout.SERVICE_PRINCIPAL
    source = {"registryUri": OTHER.login_server, "sourceImage": "tools:2",
              "credentials": {"username": sp.client_id, "password": sp.secret}}
    import_into_target(hello_params(source=source, targetTags=["tools:2"]))
    with pytest.raises(HttpResponseError) as raised:
        source["credentials"]["password"] = "wrong"
        import_into_target(hello_params(source=source, targetTags=["tools:2"], mode="Force"))
    assert "UNAUTHORIZED" in raised.value.error.message


def test_authorization_outage_fails_then_clears(control):
    control.authorization_outage(1.0)
    with pytest.raises(HttpResponseError) as raised:
        import_into_target(hello_params())
    assert raised.value.error.code == "AuthorizationFailed"
    time.sleep(1.1)
    import_into_target(hello_params())


def test_reset_restores_roles_and_forgets_operations(control):
    control.remove_role_assignment(layout.APP_IDENTITY.object_id)
    import_into_target_fails = pytest.raises(HttpResponseError)
    with import_into_target_fails:
        import_into_target(hello_params())
    control.reset()
    assert len(control.role_assignments()) == len(layout.INITIAL_ROLE_ASSIGNMENTS)
    assert control.operations() == [] and control.requests() == []


# --- ACR data-plane tokens ---------------------------------------------------------------------
def acr_token(acr: layout.AcrSpec, scope: str, **kwargs) -> requests.Response:
    return requests.request(kwargs.pop("method", "GET"), layout.acr_token_realm(acr), verify=str(layout.CA_CERT),
                            timeout=5, **kwargs)


def granted(response: requests.Response, acr: layout.AcrSpec) -> list[dict]:
    return tokens.verify_registry_token(response.json()["access_token"], acr.login_server)["access"]


def test_entra_token_exchange_grants_what_roles_allow(control):
    entra = ManagedIdentityCredential().get_token(ARM_SCOPE).token
    exchanged = requests.post(layout.acr_exchange_url(TARGET), verify=str(layout.CA_CERT), timeout=5, data={
        "grant_type": "access_token", "service": TARGET.login_server, "tenant": layout.TENANT_ID,
        "access_token": entra})
    refresh = exchanged.json()["refresh_token"]
    form = {"grant_type": "refresh_token", "service": TARGET.login_server, "refresh_token": refresh,
            "scope": "repository:app:pull,push"}
    # The template's import role holds pull/read but no push/write: the token grants pull only.
    assert granted(acr_token(TARGET, "", method="POST", data=form), TARGET) == [
        {"type": "repository", "name": "app", "actions": ["pull"]}]
    control.add_role_assignment(layout.APP_IDENTITY.object_id, "AcrPush", TARGET.resource_id)
    assert granted(acr_token(TARGET, "", method="POST", data=form), TARGET) == [
        {"type": "repository", "name": "app", "actions": ["pull", "push"]}]
    source_form = {**form, "service": SOURCE.login_server}
    assert acr_token(SOURCE, "", method="POST", data=source_form).status_code == 401  # refresh is per registry


def test_service_principal_basic_auth_gets_pull_only(control):
    sp = layout.SERVICE_PRINCIPAL
    params = {"service": OTHER.login_server, "scope": "repository:tools:pull,push"}
    answer = acr_token(OTHER, "", params=params, auth=(sp.client_id, sp.secret))
    assert granted(answer, OTHER) == [{"type": "repository", "name": "tools", "actions": ["pull"]}]
    assert acr_token(OTHER, "", params=params, auth=(sp.client_id, "wrong")).status_code == 401
    assert acr_token(OTHER, "", params=params).status_code == 401
    basic = base64.b64encode(f"{sp.client_id}:{sp.secret}".encode()).decode()
    elsewhere = acr_token(TARGET, "", params={**params, "service": TARGET.login_server},
                          headers={"Authorization": f"Basic {basic}"})
    assert granted(elsewhere, TARGET) == []


# --- ACR login servers: the token service is on the registry's own origin -------------------------
@pytest.mark.parametrize("acr", layout.ACRS, ids=lambda a: a.name)
def test_acr_challenge_names_the_token_service_on_the_login_server(live, acr):
    """ACR answers `Bearer realm="https://<login server>/oauth2/token",service="<login server>"`: the realm is on
    the origin the client connected to, never on the ARM host."""
    answer = requests.get(f"{layout.acr_login_server_url(acr)}/v2/", verify=str(layout.CA_CERT), timeout=5)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == (f'Bearer realm="{layout.acr_login_server_url(acr)}/oauth2/token",'
                                                  f'service="{acr.login_server}"')
    arm_side = requests.post(f"{layout.ARM_ENDPOINT}/acr/{acr.name}/oauth2/exchange", verify=str(layout.CA_CERT),
                             timeout=5, data={"grant_type": "access_token", "access_token": "x"})
    assert arm_side.status_code != 200 and "refresh_token" not in arm_side.text


def test_a_registry_client_pulls_through_the_login_server_with_its_challenge(live, stack):
    """A client that follows the challenge (dev.oci, as docker and skopeo do) gets a token from the login
    server and reads the image through it; the service principal's AcrPull allows pull only."""
    sp = layout.SERVICE_PRINCIPAL
    from dev import oci

    client = oci.RegistryClient(layout.acr_login_server_url(OTHER), oci.Auth(sp.client_id, sp.secret))
    assert client.head_manifest("sourcerepo/image", "tag").digest == stack.digest(OTHER.login_server,
                                                                                  "sourcerepo/image", "tag")
    acr_calls = live.requests("acr")
    assert acr_calls and all((r["path"], r["registry"]) == ("/oauth2/token", OTHER.name) for r in acr_calls)


def test_e2e_a_password_alone_is_not_a_bearer_token(live, stack):
    """ImportSourceCredentials with a password and no username: the stand-in, like a registry client, offers
    Basic `:password` to the source's challenge, and the registry refuses it, even when the password is a
    registry token that would be valid as a bearer token (the old stand-in sent it as one and succeeded)."""
    pull = [{"type": "repository", "name": "sourcerepo/image", "actions": ["pull"]}]
    token = tokens.mint_registry_token(subject="someone", service=OTHER.login_server, access=pull)
    source = {"registryUri": OTHER.login_server, "sourceImage": "sourcerepo/image:tag",
              "credentials": {"password": token}}
    with pytest.raises(HttpResponseError) as raised:
        import_into_target({"source": source, "targetTags": [f"standin/token-only:{unique_tag()}"]})
    assert "UNAUTHORIZED" in raised.value.error.message
