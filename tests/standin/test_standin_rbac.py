"""The stand-in decides ARM requests as Azure does: by action, from the roles the template deploys, with
ARM's wildcards and notActions (issue 12), and throttles each principal with ARM's token buckets.

Driven by the real SDK (azure-identity, azure-mgmt-containerregistry) against the stack's stand-in, and
the app end to end where a role changes what a user sees. The pure parts (the wildcard match, the
buckets) are checked directly, without a server and without timing."""

from __future__ import annotations

import uuid

import pytest
from azure.core.exceptions import HttpResponseError
from azure.identity import ManagedIdentityCredential
from azure.mgmt.containerregistry import ContainerRegistryManagementClient

from dev import layout
from dev.azure_standin import roles
from dev.azure_standin.throttling import DEFAULT_LIMITS, Throttle

TARGET, SOURCE, OTHER = layout.TARGET_ACR, layout.SOURCE_ACR, layout.OTHER_SUB_ACR
TESTER = layout.NO_ROLE_IDENTITY  # starts with no role; each test gives it exactly one
HELLO = "docker.io/library/hello-world:latest"
INDEX = "sha256:" + "a" * 64
READ, PULL, IMPORT = roles.READ_ACTION, roles.PULL_ACTION, roles.IMPORT_ACTION


def arm(identity: layout.Identity = TESTER, subscription: str = layout.SUB_A, **kwargs):
    credential = ManagedIdentityCredential(client_id=identity.client_id)
    return ContainerRegistryManagementClient(credential, subscription, base_url=layout.ARM_ENDPOINT,
                                             polling_interval=0.05, **kwargs)


def hello(**overrides) -> dict:
    body = {"source": {"registryUri": "docker.io", "sourceImage": "library/hello-world:latest"},
            "targetTags": [f"hello-world:{uuid.uuid4().hex[:8]}"], "mode": "NoForce"}
    return {**body, **overrides}


def import_into_target(params: dict, identity: layout.Identity = TESTER) -> None:
    arm(identity).registries.begin_import_image(TARGET.resource_group, TARGET.name, params).result(timeout=30)


@pytest.fixture
def standin(control, monkeypatch):
    for name, value in layout.stack_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AZURE_CLIENT_ID", raising=False)
    control.update_settings(retry_after=0, data_plane="memory")
    control.put_image(HELLO, INDEX)
    control.put_image(f"{SOURCE.login_server}/base:1", INDEX)
    control.define_role("ContainerRegistry reads", ["Microsoft.ContainerRegistry/*/read"])
    control.define_role("Everything but registry reads", ["*"], not_actions=[READ])
    control.define_role("Everything but import", ["*"], not_actions=["Microsoft.ContainerRegistry/registries/import*"])
    control.define_role("Registry read only", [READ])
    return control


# --- ARM's wildcard match and role evaluation, directly -----------------------------------------------

@pytest.mark.parametrize("pattern, action, matches", [
    ("*", IMPORT, True),
    ("*/read", READ, True),
    ("*/read", PULL, True),  # pull/read ends in /read: Reader can pull, as ACR's role table says
    ("*/read", IMPORT, False),
    ("Microsoft.ContainerRegistry/*", IMPORT, True),
    ("Microsoft.ContainerRegistry/*", "Microsoft.Storage/storageAccounts/read", False),
    ("Microsoft.ContainerRegistry/*/read", PULL, True),
    ("microsoft.containerregistry/REGISTRIES/read", READ, True),  # ARM compares case-insensitively
    ("Microsoft.ContainerRegistry/registries/import*", IMPORT, True),
    ("Microsoft.ContainerRegistry/registries/read", PULL, False),
    ("Microsoft.ContainerRegistry/registries/[pr]ull/read", PULL, False),  # no glob classes in ARM
    ("Microsoft.ContainerRegistry/registries/?ull/read", PULL, False),
    ("Microsoft.Authorization/*/Write", "Microsoft.Authorization/roleAssignments/write", True),
])
def test_arm_wildcards(pattern, action, matches):
    assert roles.action_matches(pattern, action) is matches


@pytest.mark.parametrize("role, action, permitted", [
    ("Contributor", IMPORT, True),
    ("Contributor", "Microsoft.Authorization/roleAssignments/write", False),  # a notAction
    ("Owner", "Microsoft.Authorization/roleAssignments/write", True),
    ("Reader", READ, True),
    ("Reader", IMPORT, False),
    ("AcrPull", PULL, True),
    ("AcrPull", READ, False),
    ("AcrPush", IMPORT, False),
    (layout.IMPORT_ROLE, IMPORT, True),
    (layout.IMPORT_ROLE, roles.PUSH_ACTION, False),
    (layout.SOURCE_ROLE, READ, True),
    (layout.SOURCE_ROLE, IMPORT, False),
])
def test_role_definitions_permit_exactly_their_actions(role, action, permitted):
    assert roles.RoleCatalog.initial().resolve(role).permits(action) is permitted


def test_the_template_roles_are_served_as_deployed():
    from infra.check import custom_roles

    deployed = custom_roles(roles.ROLES_TEMPLATE.read_text(encoding="utf-8"))
    served = {r.name: r for r in roles.template_roles()}
    assert set(served) == {layout.IMPORT_ROLE, layout.SOURCE_ROLE}
    assert served[layout.IMPORT_ROLE].actions == tuple(deployed["importRole"]["actions"])
    assert served[layout.SOURCE_ROLE].actions == tuple(deployed["sourceRole"]["actions"])
    catalog = roles.RoleCatalog.initial()
    assert all(catalog.resolve(role) is not None for _, role, _ in layout.INITIAL_ROLE_ASSIGNMENTS)


# --- reads: by registries/read, lists filtered to it ----------------------------------------------------

@pytest.mark.parametrize("role, readable", [
    ("AcrPull", False),          # pull only: Azure does not list or show the registry
    ("AcrPush", False),
    ("AcrDelete", False),
    ("Reader", True),
    ("Contributor", True),
    (layout.SOURCE_ROLE, True),
    (layout.IMPORT_ROLE, True),
    ("ContainerRegistry reads", True),
    ("Everything but registry reads", False),
])
def test_a_registry_is_listed_and_shown_only_with_registries_read(standin, role, readable):
    standin.add_role_assignment(TESTER.object_id, role, SOURCE.resource_id)
    client = arm()
    assert [r.name for r in client.registries.list()] == (["mysourceregistry"] if readable else [])
    assert [r.name for r in client.registries.list_by_resource_group(SOURCE.resource_group)] == (
        ["mysourceregistry"] if readable else [])
    if readable:
        assert client.registries.get(SOURCE.resource_group, SOURCE.name).login_server == SOURCE.login_server
        return
    with pytest.raises(HttpResponseError) as raised:
        client.registries.get(SOURCE.resource_group, SOURCE.name)
    assert raised.value.status_code == 403 and raised.value.error.code == "AuthorizationFailed"
    assert raised.value.error.message == (
        f"The client '{TESTER.client_id}' with object id '{TESTER.object_id}' does not have authorization to "
        f"perform action '{READ}' over scope '{SOURCE.resource_id}' or the scope is invalid. If access was "
        "recently granted, please refresh your credentials.")


def test_a_role_at_the_resource_group_covers_its_registries_only(standin):
    standin.add_role_assignment(TESTER.object_id, "Reader",
                                f"/subscriptions/{layout.SUB_A}/resourceGroups/{SOURCE.resource_group}")
    assert [r.name for r in arm().registries.list()] == ["mysourceregistry"]


def test_a_role_is_found_by_its_well_known_id(standin):
    standin.add_role_assignment(TESTER.object_id, "acdd72a7-3385-48ef-bd42-f606fba81ae7", SOURCE.resource_id)
    assert [a["role"] for a in standin.role_assignments() if a["principalId"] == TESTER.object_id] == ["Reader"]
    ids = {d["roleName"]: d["name"] for d in standin.role_definitions()}
    assert ids["AcrPull"] == "7f951dda-4ed3-4680-a7ca-43fe172d538d"
    assert ids["Contributor"] == "b24988ac-6180-42a0-ab88-20f7382dd24c"


# --- importImage: the action on the target, the source role on a resource-id source -------------------

@pytest.mark.parametrize("role, scope, allowed", [
    (layout.IMPORT_ROLE, TARGET.resource_id, True),
    ("Contributor", TARGET.resource_id, True),
    ("Owner", TARGET.resource_id, True),
    ("Container Registry Data Importer and Data Reader", TARGET.resource_id, True),
    ("Contributor", f"/subscriptions/{layout.SUB_A}/resourceGroups/{TARGET.resource_group}", True),
    ("Contributor", f"/subscriptions/{layout.SUB_A}", True),
    ("Reader", TARGET.resource_id, False),
    ("AcrPush", TARGET.resource_id, False),
    ("AcrPull", TARGET.resource_id, False),
    (layout.SOURCE_ROLE, TARGET.resource_id, False),
    ("Everything but import", TARGET.resource_id, False),
    (layout.IMPORT_ROLE, SOURCE.resource_id, False),   # on another registry
    ("Contributor", f"/subscriptions/{layout.SUB_B}", False),  # in another subscription
])
def test_import_needs_import_image_action_on_the_target(standin, role, scope, allowed):
    standin.add_role_assignment(TESTER.object_id, role, scope)
    if allowed:
        import_into_target(hello())
        return
    with pytest.raises(HttpResponseError) as raised:
        import_into_target(hello())
    assert raised.value.status_code == 403 and raised.value.error.code == "AuthorizationFailed"
    assert f"to perform action '{IMPORT}' over scope '{TARGET.resource_id}'" in raised.value.error.message
    assert standin.operations() == []


@pytest.mark.parametrize("source_role, missing", [
    (layout.SOURCE_ROLE, None),
    ("Reader", None),              # what the ACR import docs ask for on the source
    ("Contributor", None),
    (layout.IMPORT_ROLE, None),
    ("AcrPull", READ),             # pull alone is not enough: the source is a linked scope ARM reads
    ("AcrPush", READ),
    ("Registry read only", PULL),
    (None, READ),
])
def test_resource_id_source_needs_read_and_pull_on_the_source(standin, source_role, missing):
    standin.add_role_assignment(TESTER.object_id, layout.IMPORT_ROLE, TARGET.resource_id)
    if source_role:
        standin.add_role_assignment(TESTER.object_id, source_role, SOURCE.resource_id)
    params = hello(source={"resourceId": SOURCE.resource_id, "sourceImage": "base:1"})
    if missing is None:
        import_into_target(params)
        return
    with pytest.raises(HttpResponseError) as raised:
        import_into_target(params)
    assert raised.value.status_code == 403 and raised.value.error.code == "LinkedAuthorizationFailed"
    assert raised.value.error.message == (
        f"The client '{TESTER.client_id}' with object id '{TESTER.object_id}' has permission to perform action "
        f"'{IMPORT}' on scope '{TARGET.resource_id}'; however, it does not have permission to perform action "
        f"'{missing}' on the linked scope(s) '{SOURCE.resource_id}' or the linked scope(s) are invalid.")
    assert standin.operations() == []


def test_the_apps_identity_holds_the_templates_roles(standin):
    app = layout.APP_IDENTITY
    mine = {(a["role"], a["scope"]) for a in standin.role_assignments() if a["principalId"] == app.object_id}
    assert mine == {(layout.IMPORT_ROLE, TARGET.resource_id), (layout.SOURCE_ROLE, SOURCE.resource_id),
                    (layout.SOURCE_ROLE, OTHER.resource_id)}
    import_into_target(hello(source={"resourceId": SOURCE.resource_id, "sourceImage": "base:1"}), identity=app)


# --- the app, when its identity holds only AcrPull on a source ACR --------------------------------------

def test_app_with_only_acrpull_on_a_source_acr_fails_as_in_azure(app_env, standin):
    from shared.core.outcome import State
    from tests.helpers import deliver, status

    app = layout.APP_IDENTITY
    standin.update_settings(data_plane="registry")
    standin.remove_role_assignment(app.object_id, layout.SOURCE_ROLE, SOURCE.resource_id)
    standin.add_role_assignment(app.object_id, "AcrPull", SOURCE.resource_id)
    tag = f"acrpull-{uuid.uuid4().hex[:8]}"
    request_id = deliver({"source": f"{SOURCE.login_server}/aci-helloworld:latest", "targetTags": [f"x:{tag}"]})
    record = status(request_id)
    # The registry is invisible to a pull-only identity, so its login server is an ordinary registry URI
    # (as `az acr import` treats it), and ACR's anonymous pull is refused.
    assert record.state is State.FAILED
    assert "UNAUTHORIZED" in record.reason
    [post] = [r for r in standin.requests() if r["method"] == "POST"]
    assert post["body"]["source"] == {"registryUri": SOURCE.login_server, "sourceImage": "aci-helloworld:latest"}


# --- ARM throttling: per principal token buckets -----------------------------------------------------------

def test_answers_carry_the_remaining_reads_and_writes(standin):
    standin.add_role_assignment(TESTER.object_id, layout.IMPORT_ROLE, TARGET.resource_id)
    seen = []
    client = arm(raw_response_hook=lambda r: seen.append(dict(r.http_response.headers)))
    client.registries.get(TARGET.resource_group, TARGET.name)
    client.registries.get(TARGET.resource_group, TARGET.name)
    reads = [int(h["x-ms-ratelimit-remaining-subscription-reads"]) for h in seen]
    assert all(0 <= r < 250 for r in reads), "each read spends a token of the caller's bucket of 250"
    assert int(seen[0]["x-ms-ratelimit-remaining-subscription-global-reads"]) < 250 * 15
    seen.clear()
    client.registries.begin_import_image(TARGET.resource_group, TARGET.name, hello()).result(timeout=30)
    assert 0 <= int(seen[0]["x-ms-ratelimit-remaining-subscription-writes"]) < 200


def test_an_empty_bucket_answers_429_with_retry_after_for_that_principal_only(standin):
    standin.throttling(reads=(3, 0.01))
    standin.add_role_assignment(TESTER.object_id, "Reader", TARGET.resource_id)
    client = arm(retry_total=0)
    for _ in range(3):
        client.registries.get(TARGET.resource_group, TARGET.name)
    with pytest.raises(HttpResponseError) as raised:
        client.registries.get(TARGET.resource_group, TARGET.name)
    assert raised.value.status_code == 429 and raised.value.error.code == "SubscriptionRequestsThrottled"
    assert int(raised.value.response.headers["Retry-After"]) >= 1
    assert raised.value.response.headers["x-ms-ratelimit-remaining-subscription-reads"] == "0"
    assert f"actor '{TESTER.object_id}'" in raised.value.error.message
    arm(layout.APP_IDENTITY, retry_total=0).registries.get(TARGET.resource_group, TARGET.name)  # own bucket
    throttled = [r for r in standin.requests() if r["status"] == 429]
    assert len(throttled) == 1 and throttled[0]["principal"] == TESTER.object_id


def test_the_request_record_says_what_each_request_counted_as_and_what_was_left(standin):
    """Benchmarks count 429s by kind and read the budget left from the stand-in's record."""
    standin.throttling(reads=(2, 0.01))
    standin.add_role_assignment(TESTER.object_id, layout.IMPORT_ROLE, TARGET.resource_id)
    standin.clear_requests()
    client = arm(retry_total=0)
    for _ in range(2):
        client.registries.get(TARGET.resource_group, TARGET.name)
    with pytest.raises(HttpResponseError):
        client.registries.get(TARGET.resource_group, TARGET.name)
    # polling=False: the SDK's poller would look at the operation from a thread of its own, racing the read below
    client.registries.begin_import_image(TARGET.resource_group, TARGET.name, hello(), polling=False)
    recorded = standin.requests()
    assert [(r["method"], r["rate_kind"], r["status"]) for r in recorded] == [
        ("GET", "reads", 200), ("GET", "reads", 200), ("GET", "reads", 429), ("POST", "writes", 202)]
    assert [r["remaining"]["x-ms-ratelimit-remaining-subscription-reads"] for r in recorded[:3]] == [1, 0, 0]
    assert int(recorded[2]["retry_after"]) >= 1
    assert recorded[3]["remaining"]["x-ms-ratelimit-remaining-subscription-writes"] == 199


def test_writes_have_their_own_bucket(standin):
    standin.throttling(writes=(1, 0.01))
    standin.add_role_assignment(TESTER.object_id, layout.IMPORT_ROLE, TARGET.resource_id)
    import_into_target(hello())
    with pytest.raises(HttpResponseError) as raised:
        arm(retry_total=0).registries.begin_import_image(TARGET.resource_group, TARGET.name, hello())
    assert raised.value.status_code == 429
    assert "'write' requests" in raised.value.error.message
    arm(retry_total=0).registries.get(TARGET.resource_group, TARGET.name)  # reads still flow


def test_throttling_can_be_switched_off_and_reset_restores_it(standin):
    standin.throttling(False)
    standin.add_role_assignment(TESTER.object_id, "Reader", TARGET.resource_id)
    seen = []
    client = arm(retry_total=0, raw_response_hook=lambda r: seen.append(dict(r.http_response.headers)))
    client.registries.get(TARGET.resource_group, TARGET.name)
    assert not any(h.startswith("x-ms-ratelimit") for h in seen[0])
    standin.reset()
    assert standin.settings()["throttling"] is True
    assert {k: tuple(v) for k, v in standin.settings()["throttle_limits"].items()} == DEFAULT_LIMITS


@pytest.mark.parametrize("limits", [{"reads": [0, 1]}, {"reads": [10]}, {"writes": "fast"}, {"lists": [1, 1]}, []])
def test_bad_throttle_limits_are_refused(standin, limits):
    with pytest.raises(RuntimeError, match="400"):
        standin.update_settings(throttle_limits=limits)


# the buckets themselves (no server; refill so slow that no time passes for them during a test)
SLOW = {"reads": (2, 1e-6), "writes": (1, 1e-6), "deletes": (1, 1e-6)}


def test_buckets_are_per_principal_per_subscription_per_kind():
    throttle = Throttle(SLOW)
    assert [throttle.take("a", "s1", "GET").error is None for _ in range(3)] == [True, True, False]
    assert throttle.take("b", "s1", "GET").error is None          # another principal
    assert throttle.take("a", "s2", "GET").error is None          # another subscription
    assert throttle.take("a", "s1", "POST").error is None         # writes
    assert throttle.take("a", "s1", "DELETE").error is None       # deletes
    assert throttle.take("a", "s1", "PUT").error is not None      # the write bucket is spent
    assert throttle.take("a", None, "GET").headers == {"x-ms-ratelimit-remaining-tenant-reads": "1"}


def test_the_global_subscription_bucket_is_fifteen_principals_deep():
    throttle = Throttle({**SLOW, "reads": (1, 1e-6)})
    verdicts = [throttle.take(f"principal-{i}", "s1", "GET") for i in range(16)]
    assert [v.error is None for v in verdicts] == [True] * 15 + [False]
    assert verdicts[14].headers["x-ms-ratelimit-remaining-subscription-global-reads"] == "0"
    assert int(verdicts[15].error.headers["Retry-After"]) > 1000  # the shared bucket, not its own


def test_app_waits_out_the_retry_after_of_a_throttled_operation_look(app_env, standin):
    from shared.core.outcome import State
    from tests.helpers import deliver, status

    standin.update_settings(data_plane="registry")
    standin.add_faults("operation", {"delay": 6})
    standin.throttling(reads=(3, 0.25))  # three looks, then one token every 4 s: Retry-After 4
    request_id = deliver({"source": HELLO, "targetTags": [f"hello-world:throttled-{uuid.uuid4().hex[:8]}"]})
    assert status(request_id).state in (State.SUCCEEDED, State.RUNNING)
    looks = [r for r in standin.requests() if r["method"] == "GET" and "/operationResults/" in r["path"]]
    throttled = [r for r in looks if r["status"] == 429]
    # The app paces its looks by the remaining reads ARM reports (shared/azure/arm_budget.py), so this bucket
    # need not answer 429 at all; a 429 it does answer is waited out (tests/imports/test_arm_throttling.py).
    assert len(throttled) <= 3, f"{len(throttled)} looks answered 429: Retry-After was not waited out"
