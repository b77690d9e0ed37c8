"""The request contract: decoding, validation, policy and the exact import body, without any service."""

from __future__ import annotations

import base64
import json

import pytest

from shared.core.request import ImportRequest, Rejected, parse_request
from shared.core.resource_ids import parse_registry_id
from shared.core.settings import SettingsError, load_settings
from shared.imports.engine import import_parameters, resolve_source_registry

SUB_A = "11111111-1111-4111-8111-111111111111"
SUB_B = "22222222-2222-4222-8222-222222222222"
TARGET = (f"/subscriptions/{SUB_A}/resourceGroups/rg-platform/providers/Microsoft.ContainerRegistry"
          "/registries/myregistry")
OTHER_TARGET = f"/subscriptions/{SUB_A}/resourceGroups/rg-x/providers/Microsoft.ContainerRegistry/registries/otherreg"
SAME_SUB_SOURCE = (f"/subscriptions/{SUB_A}/resourceGroups/rg-build/providers/Microsoft.ContainerRegistry"
                   "/registries/mysourceregistry")
OTHER_SUB_SOURCE = (f"/subscriptions/{SUB_B}/resourceGroups/rg-other/providers/Microsoft.ContainerRegistry"
                    "/registries/sourceregistry")
DIGEST = "sha256:" + "ab" * 32

ENV = {
    "TARGET_REGISTRY": TARGET,
    "ALLOWED_SOURCE_REGISTRIES": "docker.io,mcr.microsoft.com,*.azurecr.io,registry.contoso.com",
    "SOURCE_CREDENTIALS__DOCKERHUB__USERNAME": "dockeruser",
    "SOURCE_CREDENTIALS__DOCKERHUB__PASSWORD": "hub-secret-123",
    "SOURCE_CREDENTIALS__DOCKERHUB__REGISTRIES": "docker.io",
    "SOURCE_CREDENTIALS__SP__USERNAME": "aaaaaaaa-0000-4000-8000-00000000a004",
    "SOURCE_CREDENTIALS__SP__PASSWORD": "sp-secret-456",
}


def settings(**overrides):
    return load_settings({**ENV, **overrides})


def lookup(subscription: str, login_server: str):
    """The registries ARM would list in the target's subscription."""
    known = {(SUB_A, "mysourceregistry.azurecr.io"): parse_registry_id(SAME_SUB_SOURCE)}
    return known.get((subscription, login_server))


def body_for(doc, **overrides) -> dict:
    request = parse_request(json.dumps(doc), settings(**overrides))
    assert isinstance(request, ImportRequest), request
    return import_parameters(request, resolve_source_registry(request, lookup, suffix="azurecr.io"))


# Every scenario of the seed document, and what the ACR import API must receive for it.
SEED_SCENARIOS = [
    ("same-subscription ACR by login server",
     {"source": "mysourceregistry.azurecr.io/aci-helloworld:latest", "targetTags": ["hello-world:latest"]},
     {"source": {"resourceId": SAME_SUB_SOURCE, "sourceImage": "aci-helloworld:latest"},
      "targetTags": ["hello-world:latest"], "mode": "NoForce"}),
    ("ACR in another subscription by resource id",
     {"source": "sourceregistry.azurecr.io/aci-helloworld:latest", "targetTags": ["hello-world:latest"],
      "sourceRegistry": OTHER_SUB_SOURCE},
     {"source": {"resourceId": OTHER_SUB_SOURCE, "sourceImage": "aci-helloworld:latest"},
      "targetTags": ["hello-world:latest"], "mode": "NoForce"}),
    ("Docker Hub official image",
     {"source": "docker.io/library/hello-world:latest", "targetTags": ["hello-world:latest"]},
     {"source": {"registryUri": "docker.io", "sourceImage": "library/hello-world:latest"},
      "targetTags": ["hello-world:latest"], "mode": "NoForce"}),
    ("Docker Hub namespaced image",
     {"source": "docker.io/tensorflow/tensorflow:latest-gpu", "targetTags": ["tensorflow:latest-gpu"]},
     {"source": {"registryUri": "docker.io", "sourceImage": "tensorflow/tensorflow:latest-gpu"},
      "targetTags": ["tensorflow:latest-gpu"], "mode": "NoForce"}),
    ("Microsoft Container Registry",
     {"source": "mcr.microsoft.com/windows/servercore:latest", "targetTags": ["servercore:latest"]},
     {"source": {"registryUri": "mcr.microsoft.com", "sourceImage": "windows/servercore:latest"},
      "targetTags": ["servercore:latest"], "mode": "NoForce"}),
    ("private Docker Hub repository with a credential set",
     {"source": "docker.io/myrepo/image:tag", "targetTags": ["privateimage:tag"], "credential": "dockerhub"},
     {"source": {"registryUri": "docker.io", "sourceImage": "myrepo/image:tag",
                 "credentials": {"username": "dockeruser", "password": "hub-secret-123"}},
      "targetTags": ["privateimage:tag"], "mode": "NoForce"}),
    ("ACR with a service principal's credentials",
     {"source": "sourceregistry.azurecr.io/sourcerepo/image:tag", "targetTags": ["image:tag"], "credential": "sp"},
     {"source": {"registryUri": "sourceregistry.azurecr.io", "sourceImage": "sourcerepo/image:tag",
                 "credentials": {"username": "aaaaaaaa-0000-4000-8000-00000000a004", "password": "sp-secret-456"}},
      "targetTags": ["image:tag"], "mode": "NoForce"}),
    ("short Docker Hub name, no targets",
     {"source": "nginx"},
     {"source": {"registryUri": "docker.io", "sourceImage": "library/nginx:latest"},
      "targetTags": ["nginx:latest"], "mode": "NoForce"}),
    ("digest import, no targets",
     {"source": f"mysourceregistry.azurecr.io/app@{DIGEST}"},
     {"source": {"resourceId": SAME_SUB_SOURCE, "sourceImage": f"app@{DIGEST}"},
      "untaggedTargetRepositories": ["app"], "mode": "NoForce"}),
    ("ACR login server not in the subscription goes by registryUri",
     {"source": "elsewhere.azurecr.io/tools/jq:1.7", "mode": "Force"},
     {"source": {"registryUri": "elsewhere.azurecr.io", "sourceImage": "tools/jq:1.7"},
      "targetTags": ["tools/jq:1.7"], "mode": "Force"}),
]


@pytest.mark.parametrize(("doc", "expected"), [s[1:] for s in SEED_SCENARIOS], ids=[s[0] for s in SEED_SCENARIOS])
def test_seed_scenarios_map_to_the_exact_import_body(doc, expected):
    assert body_for(doc) == expected


def test_base64_and_plain_json_bodies_are_the_same_request():
    doc = {"source": "nginx:1.27", "id": "same-1"}
    plain = parse_request(json.dumps(doc), settings())
    encoded = parse_request(base64.b64encode(json.dumps(doc).encode()), settings())
    assert plain == encoded
    assert tuple(map(str, plain.target_tags)) == ("nginx:1.27",)


def test_if_changed_is_sent_as_force_and_a_missing_id_uses_the_fallback():
    request = parse_request(json.dumps({"source": "nginx", "mode": "IfChanged"}), settings(), fallback_id="msg-1")
    assert request.id == "msg-1"
    assert import_parameters(request, None)["mode"] == "Force"


def test_source_registry_with_an_unqualified_image_name():
    assert body_for({"source": "aci-helloworld:latest", "sourceRegistry": OTHER_SUB_SOURCE})["source"] == {
        "resourceId": OTHER_SUB_SOURCE, "sourceImage": "aci-helloworld:latest"}


def rejected(doc_or_body, **overrides) -> Rejected:
    body = doc_or_body if isinstance(doc_or_body, str | bytes) else json.dumps(doc_or_body)
    result = parse_request(body, settings(**overrides))
    assert isinstance(result, Rejected), result
    return result


REJECTIONS = [
    ("not JSON", "{nope", "(message)", "not valid JSON"),
    ("neither JSON nor base64", "hello world", "(message)", "neither JSON nor base64"),
    ("base64 of garbage", base64.b64encode(b"\x00\x01").decode(), "(message)", ""),
    ("an array", "[1, 2]", "(message)", "must be a JSON object"),
    ("empty body", "   ", "(message)", "empty"),
    ("oversized", json.dumps({"source": "nginx", "id": "x" * 70000}), "(message)", "64 KiB"),
    ("missing source", {"targetTags": ["a:b"]}, "source", "is required"),
    ("source of wrong type", {"source": 5}, "source", "must be a string"),
    ("unknown field", {"source": "nginx", "tags": ["x"]}, "tags", "unknown field"),
    ("bad mode", {"source": "nginx", "mode": "force"}, "mode", "must be one of NoForce, Force, IfChanged"),
    ("uppercase repository", {"source": "docker.io/Library/Nginx"}, "source", "lowercase"),
    ("bad digest", {"source": "nginx@sha256:abc"}, "source", "64"),
    ("bad target tag", {"source": "nginx", "targetTags": ["nginx"]}, "targetTags[0]", ""),
    ("target tag with a registry", {"source": "nginx", "targetTags": ["ok:1", "myregistry.azurecr.io/x:1"]},
     "targetTags[1]", ""),
    ("bad untagged repository", {"source": "nginx", "untaggedTargetRepositories": ["UP"]},
     "untaggedTargetRepositories[0]", ""),
    ("bad target id", {"source": "nginx", "target": "myregistry"}, "target", "resource id"),
    ("target not allowed", {"source": "nginx", "target": OTHER_TARGET}, "target", "ALLOWED_TARGET_REGISTRIES"),
    ("source not allowed", {"source": "ghcr.io/org/app:1"}, "source", "ALLOWED_SOURCE_REGISTRIES"),
    ("unknown credential set", {"source": "docker.io/myrepo/image:tag", "credential": "nope"}, "credential",
     "no credential set named 'nope'"),
    ("credential set bound to another registry", {"source": "mcr.microsoft.com/a/b:1", "credential": "dockerhub"},
     "credential", "may only be sent to docker.io"),
    ("inline credentials", {"source": "docker.io/myrepo/image:tag", "username": "u", "password": "inline-pw-1"},
     "password", "inline credentials are refused"),
    ("credential with sourceRegistry", {"source": "a:1", "sourceRegistry": OTHER_SUB_SOURCE, "credential": "sp"},
     "credential", "never with credentials"),
    ("source host differs from sourceRegistry", {"source": "docker.io/library/nginx", "sourceRegistry":
     OTHER_SUB_SOURCE}, "source", "sourceRegistry"),
    ("bad id", {"source": "nginx", "id": "has space"}, "id", "letters, digits"),
    ("bad version", {"source": "nginx", "version": 2}, "version", "must be 1"),
    ("empty targets", {"source": "nginx", "targetTags": []}, "targetTags", "name at least one target"),
]


@pytest.mark.parametrize(("body", "field", "rule"), [r[1:] for r in REJECTIONS], ids=[r[0] for r in REJECTIONS])
def test_bad_requests_are_rejected_naming_the_field_and_rule(body, field, rule):
    result = rejected(body)
    assert any(p.field == field and rule in p.rule for p in result.problems), result.problems


def test_every_problem_is_reported_at_once():
    result = rejected({"source": "UPPER", "mode": "x", "extra": 1, "targetTags": "a"})
    assert {p.field for p in result.problems} >= {"source", "mode", "extra", "targetTags"}


def test_rejections_never_echo_a_password():
    result = rejected({"source": "nginx", "password": ["not-a-string-secret"], "username": 7})
    assert "not-a-string-secret" not in result.reason


def test_inline_credentials_when_allowed():
    doc = {"source": "registry.contoso.com/sourcerepo/image:tag", "username": "contoso", "password": "pw-inline"}
    request = parse_request(json.dumps(doc), settings(ALLOW_INLINE_CREDENTIALS="true"))
    assert import_parameters(request, None)["source"]["credentials"] == {"username": "contoso",
                                                                          "password": "pw-inline"}
    assert "pw-inline" not in repr(request.credentials)


def test_a_password_is_shown_nowhere_but_in_the_import_body():
    """One type carries every password (shared/core/redact.py `Password`): a credential set's and an inline one alike.
    Printing them, or anything holding them (a traceback shows reprs, a log line str), shows `***`; only the
    import body ACR receives holds the password itself."""
    configured = settings(ALLOW_INLINE_CREDENTIALS="true")
    named = parse_request(json.dumps({"source": "docker.io/myrepo/image:tag", "credential": "dockerhub"}), configured)
    inline = parse_request(json.dumps({"source": "registry.contoso.com/sourcerepo/image:tag", "username": "contoso",
                                       "password": "pw-inline"}), configured)
    assert isinstance(named, ImportRequest) and isinstance(inline, ImportRequest)
    credential_set = configured.credential_set("dockerhub")
    shown = [repr(configured), str(configured), repr(credential_set), str(credential_set), repr(named), str(named),
             repr(inline), str(inline), f"{named.credentials}", f"{inline.credentials.password}"]
    assert not any("hub-secret-123" in text or "pw-inline" in text for text in shown), shown
    assert "***" in repr(credential_set) and "***" in f"{inline.credentials}"
    assert import_parameters(named, None)["source"]["credentials"]["password"] == "hub-secret-123"
    assert import_parameters(inline, None)["source"]["credentials"]["password"] == "pw-inline"
    assert configured.secret_values() == ("hub-secret-123", "sp-secret-456")


def test_without_target_registry_setting_a_target_is_required():
    result = parse_request(json.dumps({"source": "nginx"}), load_settings({}))
    assert isinstance(result, Rejected) and result.problems[0].field == "target"


def test_default_allowed_sources_are_docker_hub_and_mcr_only():
    defaults = load_settings({"TARGET_REGISTRY": TARGET})
    assert isinstance(parse_request('{"source": "nginx"}', defaults), ImportRequest)
    assert isinstance(parse_request('{"source": "mcr.microsoft.com/a/b"}', defaults), ImportRequest)
    assert isinstance(parse_request('{"source": "x.azurecr.io/a"}', defaults), Rejected)


@pytest.mark.parametrize(("env", "needle"), [
    ({"SOURCE_CREDENTIALS__HUB__USERNAME": "u"}, "SOURCE_CREDENTIALS__HUB__PASSWORD"),
    ({"SOURCE_CREDENTIALS__HUB__TOKEN": "x"}, "__USERNAME, __PASSWORD or __REGISTRIES"),
    ({"IMPORT_MAX_ATTEMPTS": "many"}, "IMPORT_MAX_ATTEMPTS"),
    ({"ALLOW_INLINE_CREDENTIALS": "maybe"}, "ALLOW_INLINE_CREDENTIALS"),
])
def test_bad_settings_name_the_setting(env, needle):
    with pytest.raises(SettingsError, match=needle):
        load_settings(env)


@pytest.mark.parametrize("pattern", ["*.io", "a.*.io", "bad host"])
def test_malformed_source_allowlist_is_a_settings_error(pattern):
    with pytest.raises(SettingsError, match="ALLOWED_SOURCE_REGISTRIES"):
        load_settings({"ALLOWED_SOURCE_REGISTRIES": pattern})


def test_star_allows_any_source_registry():
    assert isinstance(parse_request('{"source": "ghcr.io/org/app:1"}', settings(ALLOWED_SOURCE_REGISTRIES="*")),
                      ImportRequest)


@pytest.mark.parametrize(("doc", "overrides", "field"), [
    ({"source": "docker.io/myrepo/image:tag", "credential": "tokenonly"},
     {"SOURCE_CREDENTIALS__TOKENONLY__PASSWORD": "dckr_pat_x"}, "credential"),
    ({"source": "docker.io/myrepo/image:tag", "credential": "tokenonly"},
     {"SOURCE_CREDENTIALS__TOKENONLY__PASSWORD": "dckr_pat_x", "SOURCE_CREDENTIALS__TOKENONLY__USERNAME": "  "},
     "credential"),
    ({"source": "sourceregistry.azurecr.io/sourcerepo/image:tag", "password": "acr-token-password"},
     {"ALLOW_INLINE_CREDENTIALS": "true"}, "username"),
    ({"source": "registry.contoso.com/app:1", "username": "", "password": "p"},
     {"ALLOW_INLINE_CREDENTIALS": "true"}, "username"),
])
def test_a_password_without_a_username_is_refused_naming_the_rule(doc, overrides, field):
    """Docker Hub PATs, ACR tokens and service principals all come with a user; a password alone is refused
    before anything is sent (the README used to call it a token)."""
    rejected = parse_request(json.dumps(doc), settings(**overrides))
    assert isinstance(rejected, Rejected), rejected
    [problem] = [p for p in rejected.problems if p.field == field]
    assert "username" in str(problem) and "a password alone is not a token" in problem.rule
    assert "dckr_pat_x" not in problem.rule and "acr-token-password" not in problem.rule
