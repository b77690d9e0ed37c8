"""The stack's registries, token server and process handling, against real docker-registry processes."""

from __future__ import annotations

import base64
import datetime
import subprocess
import time
import uuid

import bcrypt
import jwt
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dev import dockerhub_token, layout, oci, registries, seed, stack, tokens

SERVICES = ["registry-dockerhub", "registry-private", "acr-myregistry", "dockerhub-token"]
ACR = layout.TARGET_ACR


@pytest.fixture(scope="module")
def running_stack(stack_part):
    with stack.running(SERVICES):
        yield


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --- configuration (no processes) ------------------------------------------------------------------
def test_every_registry_gets_tls_delete_and_the_auth_its_spec_names():
    configs = {spec.name: registries.registry_config(spec) for spec in registries.all_specs()}
    for spec in registries.all_specs():
        config = configs[spec.name]
        assert config["http"]["addr"] == f"127.0.0.1:{registries.listen_port(spec)}"
        assert config["http"]["tls"]["certificate"] == str(layout.SERVER_CERT)
        assert config["storage"]["delete"]["enabled"] is True
    assert "auth" not in configs["mcr"]
    assert set(configs["private"]["auth"]) == {"htpasswd"}
    hub = configs["dockerhub"]["auth"]["token"]
    assert (hub["realm"], hub["service"]) == (layout.DOCKERHUB_TOKEN_REALM, "registry.docker.io")
    acr = configs[ACR.name]["auth"]["token"]
    assert (acr["realm"], acr["service"]) == (layout.acr_token_realm(ACR), "myregistry.azurecr.io")
    assert acr["issuer"] == tokens.REGISTRY_ISSUER


def test_htpasswd_holds_bcrypt_hashes_of_the_spec_passwords():
    user, line = registries.htpasswd_lines({"contoso": "s3cret"}).strip().split(":", 1)
    assert user == "contoso" and line.startswith("$2")
    assert bcrypt.checkpw(b"s3cret", line.encode())
    assert not bcrypt.checkpw(b"wrong", line.encode())


def test_spec_lookup_by_host_name_and_login_server():
    assert registries.spec_named("docker.io") is layout.DOCKERHUB
    assert registries.spec_named("registry.contoso.com") is layout.PRIVATE
    assert registries.spec_named("mysourceregistry.azurecr.io") is layout.SOURCE_ACR
    with pytest.raises(KeyError):
        registries.spec_named("quay.io")


# --- the Docker Hub token server's policy (pure) ----------------------------------------------------
def test_anonymous_callers_may_pull_public_namespaces_only():
    grants = dockerhub_token.granted_access(None, ["repository:library/nginx:pull,push",
                                                   "repository:myrepo/image:pull"])
    assert grants == [{"type": "repository", "name": "library/nginx", "actions": ["pull"]},
                      {"type": "repository", "name": "myrepo/image", "actions": []}]


def test_the_docker_hub_user_may_push_anywhere():
    grants = dockerhub_token.granted_access("dockeruser", ["repository:myrepo/image:pull,push"])
    assert grants[0]["actions"] == ["pull", "push"]


def test_wrong_basic_credentials_are_refused_by_the_token_policy():
    good = "Basic " + base64.b64encode(b"dockeruser:dockerhub-test-pass-7f3a").decode()
    bad = "Basic " + base64.b64encode(b"dockeruser:nope").decode()
    assert dockerhub_token.authenticated_user(good) == "dockeruser"
    assert dockerhub_token.authenticated_user(None) is None
    with pytest.raises(PermissionError):
        dockerhub_token.authenticated_user(bad)


# --- live registries -------------------------------------------------------------------------------
def test_basic_auth_registry_rejects_wrong_and_missing_credentials(running_stack):
    url = registries.base_url(layout.PRIVATE)
    image = seed.build_image("basic-check", ["linux/amd64"])
    repo = _unique("basic/check")
    seed.push_image(seed.admin_client(layout.PRIVATE), repo, "v1", image)

    wrong = oci.RegistryClient(url, oci.Auth("contoso", "not-the-password"))
    with pytest.raises(oci.RegistryError) as caught:
        wrong.get_manifest(repo, "v1")
    assert caught.value.status == 401 and caught.value.code == "UNAUTHORIZED"
    assert "not-the-password" not in str(caught.value)
    with pytest.raises(oci.RegistryError):
        oci.RegistryClient(url).head_manifest(repo, "v1")
    assert seed.admin_client(layout.PRIVATE).head_manifest(repo, "v1").digest == image.digest


def test_token_server_answers_like_docker_hub(running_stack):
    realm = layout.DOCKERHUB_TOKEN_REALM
    ca = str(layout.CA_CERT)
    answer = requests.get(realm, params={"service": "registry.docker.io",
                                         "scope": ["repository:library/nginx:pull",
                                                   "repository:myrepo/image:pull"]}, verify=ca, timeout=5)
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) >= {"token", "access_token", "expires_in", "issued_at"}
    claims = tokens.verify_registry_token(body["token"], "registry.docker.io")
    assert {a["name"]: a["actions"] for a in claims["access"]} == {"library/nginx": ["pull"], "myrepo/image": []}
    assert requests.get(realm, params={"service": "registry.docker.io"}, auth=("dockeruser", "bad"),
                        verify=ca, timeout=5).status_code == 401


def test_docker_hub_private_namespace_needs_the_user(running_stack):
    hub = registries.base_url(layout.DOCKERHUB)
    repo_public, repo_private = _unique("library/pub"), _unique("myrepo/priv")
    image = seed.build_image("hub-check", ["linux/amd64"])
    admin = seed.admin_client(layout.DOCKERHUB)
    seed.push_image(admin, repo_public, "latest", image)
    seed.push_image(admin, repo_private, "latest", image)

    before = dockerhub_token.request_counts().get("/token", 0)
    anonymous = oci.RegistryClient(hub)
    assert anonymous.head_manifest(repo_public, "latest").digest == image.digest
    with pytest.raises(oci.RegistryError) as caught:
        anonymous.get_manifest(repo_private, "latest")
    assert caught.value.code == "UNAUTHORIZED"
    with pytest.raises(oci.RegistryError):
        anonymous.put_manifest(repo_public, "pushed", image.manifest, image.media_type)
    user = oci.RegistryClient(hub, oci.Auth(*next(iter(layout.DOCKERHUB.users.items()))))
    assert user.get_manifest(repo_private, "latest").digest == image.digest
    assert dockerhub_token.request_counts()["/token"] >= before + 3


def _foreign_signed_token(access: list[dict]) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "impostor")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1)).sign(key, hashes.SHA256()))
    x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
    claims = {"iss": tokens.REGISTRY_ISSUER, "sub": "impostor", "aud": ACR.login_server,
              "iat": int(time.time()), "nbf": int(time.time()) - 5, "exp": int(time.time()) + 300,
              "jti": uuid.uuid4().hex, "access": access}
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return jwt.encode(claims, pem, algorithm="ES256", headers={"x5c": x5c})


def test_acr_registry_accepts_stack_tokens_and_rejects_others(running_stack):
    repo = _unique("tokencheck")
    image = seed.build_image("token-check", ["linux/amd64"])
    seed.push_image(seed.admin_client(ACR), repo, "v1", image)
    url = f"{registries.base_url(ACR)}/v2/{repo}/manifests/v1"
    pull = [{"type": "repository", "name": repo, "actions": ["pull"]}]

    def status_with(token: str) -> int:
        return requests.head(url, headers={"Authorization": f"Bearer {token}",
                                           "Accept": oci.MANIFEST_ACCEPT},
                             verify=str(layout.CA_CERT), timeout=5).status_code

    assert status_with(tokens.mint_registry_token(subject="t", service=ACR.login_server, access=pull)) == 200
    assert status_with(_foreign_signed_token(pull)) == 401
    assert status_with(tokens.mint_registry_token(subject="t", service="other.azurecr.io", access=pull)) == 401
    other_repo = [{"type": "repository", "name": "elsewhere", "actions": ["pull"]}]
    assert status_with(tokens.mint_registry_token(subject="t", service=ACR.login_server,
                                                  access=other_repo)) == 401
    assert status_with(tokens.mint_registry_token(subject="t", service=ACR.login_server, access=pull,
                                                  ttl=-60)) == 401


# --- process handling --------------------------------------------------------------------------------
def test_service_processes_start_detached_and_stop_without_leftovers(tmp_path, monkeypatch):
    monkeypatch.setattr(stack, "PID_DIR", tmp_path / "pids")
    monkeypatch.setattr(stack, "LOG_DIR", tmp_path / "logs")
    sleeper = stack.Service("test-sleeper", lambda: ["sh", "-c", "sleep 60 & sleep 60"], lambda: True)
    process = stack._launch(sleeper)
    stack._wait_ready(sleeper, process, timeout=5)
    assert stack._recorded_pid(sleeper) == process.pid
    deadline = time.monotonic() + 5
    while len(stack.group_members(process.pid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(stack.group_members(process.pid)) == 3  # sh and its two sleeps
    group = process.pid
    assert stack.stop_service(sleeper, grace=2)
    assert process.poll() is not None
    assert not sleeper.pid_file.exists()
    assert stack.group_members(group) == []
    assert stack.stop_service(sleeper) is False


def test_stale_pid_files_are_cleared(tmp_path, monkeypatch):
    monkeypatch.setattr(stack, "PID_DIR", tmp_path)
    ghost = stack.Service("ghost", list, lambda: False)
    finished = subprocess.Popen(["true"])
    finished.wait()
    ghost.pid_file.write_text(f"{finished.pid} 12345\n")
    assert stack._recorded_pid(ghost) is None
    assert not ghost.pid_file.exists()
    ghost.pid_file.write_text("garbage")
    assert stack.stop_service(ghost) is False


def test_a_service_that_dies_is_reported_with_its_log(tmp_path, monkeypatch):
    monkeypatch.setattr(stack, "PID_DIR", tmp_path / "pids")
    monkeypatch.setattr(stack, "LOG_DIR", tmp_path / "logs")
    broken = stack.Service("broken", lambda: ["sh", "-c", "echo port already in use >&2; exit 3"], lambda: False)
    process = stack._launch(broken)
    with pytest.raises(stack.StackError) as caught:
        stack._wait_ready(broken, process, timeout=5)
    assert "broken" in str(caught.value) and "broken.log" in str(caught.value)
    assert "port already in use" in str(caught.value)
