"""Configuration that cannot work ends a request `failed` on its first delivery, with a reason naming what is
wrong and how to fix it: no retry loop, no poison queue, no traceback. Each class runs through the real
worker against the stack (azure-identity and the SDK talking to the stand-in), with one setting made wrong
the way a newcomer gets it wrong. The genuine transient case (a role assignment still propagating) stays
transient and says so."""

from __future__ import annotations

import json
import socket
import uuid

import pytest

from dev import layout
from shared.core.outcome import State
from tests.helpers import deliver, queue, status


def _closed_port() -> int:
    with socket.socket() as s:  # bound, then released: nothing listens there for the test's short life
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wrong_ca(tmp_path) -> str:
    import certifi  # public CAs only: none of them signed the stack's certificates

    return certifi.where()


MISSING_GROUP = f"/subscriptions/{layout.TARGET_ACR.resource_id.split('/')[2]}/resourceGroups/rg-does-not-exist" \
                "/providers/Microsoft.ContainerRegistry/registries/nosuchacr"

# (case id, settings to change, request fields, expected code, what the reason must say)
MISTAKES = [
    ("identity-endpoint-unreachable", lambda tmp: {"IDENTITY_ENDPOINT": f"http://127.0.0.1:{_closed_port()}/token"},
     {}, "IdentityUnavailable",
     ["the managed identity endpoint IDENTITY_ENDPOINT=http://127.0.0.1:", "did not answer",
      "configuration, not transient", "AZURE_CLIENT_ID", "IDENTITY_ENDPOINT"]),
    ("identity-unreachable-if-changed", lambda tmp: {"IDENTITY_ENDPOINT": f"http://127.0.0.1:{_closed_port()}/t"},
     {"mode": "IfChanged"}, "IdentityUnavailable", ["did not answer", "configuration, not transient"]),
    ("no-identity-if-changed", lambda tmp: {"IDENTITY_ENDPOINT": None, "IDENTITY_HEADER": None, "MSI_ENDPOINT": None,
                                            "AZURE_POD_IDENTITY_AUTHORITY_HOST": f"http://127.0.0.1:{_closed_port()}"},
     {"mode": "IfChanged"}, "IdentityUnavailable", ["no managed identity is available to the app"]),
    ("tls-wrong-ca-if-changed", lambda tmp: {"REQUESTS_CA_BUNDLE": _wrong_ca(tmp), "SSL_CERT_FILE": _wrong_ca(tmp)},
     {"mode": "IfChanged"}, "TlsVerificationFailed", ["TLS certificate verification failed ("]),
    ("msi-endpoint-unreachable", lambda tmp: {"IDENTITY_ENDPOINT": None, "IDENTITY_HEADER": None,
                                              "MSI_ENDPOINT": f"http://127.0.0.1:{_closed_port()}/msi"},
     {}, "IdentityUnavailable", ["MSI_ENDPOINT=http://127.0.0.1:", "did not answer", "AZURE_CLIENT_ID"]),
    ("no-identity-at-all", lambda tmp: {"IDENTITY_ENDPOINT": None, "IDENTITY_HEADER": None, "MSI_ENDPOINT": None,
                                        # where azure-identity looks for IMDS: nothing answers there
                                        "AZURE_POD_IDENTITY_AUTHORITY_HOST": f"http://127.0.0.1:{_closed_port()}"},
     {}, "IdentityUnavailable",
     ["no managed identity is available to the app", "configuration, not transient",
      "set AZURE_CLIENT_ID to a user-assigned identity", "system-assigned identity", "IDENTITY_HEADER"]),
    ("tls-wrong-ca-bundle", lambda tmp: {"REQUESTS_CA_BUNDLE": _wrong_ca(tmp), "SSL_CERT_FILE": _wrong_ca(tmp)},
     {}, "TlsVerificationFailed",
     ["TLS certificate verification failed (", "configuration, not transient", "REQUESTS_CA_BUNDLE",
      "SSL_CERT_FILE", "ARM_ENDPOINT"]),
    ("target-group-missing", lambda tmp: {"ALLOWED_TARGET_REGISTRIES": MISSING_GROUP}, {"target": MISSING_GROUP},
     "ResourceGroupNotFound",
     ["rg-does-not-exist", "configuration, not transient", "TARGET_REGISTRY", "az acr show --ids"]),
    ("target-registry-setting-missing", lambda tmp: {"TARGET_REGISTRY": MISSING_GROUP}, {}, "ResourceGroupNotFound",
     ["configuration, not transient", f"(the target is {MISSING_GROUP})", "TARGET_REGISTRY"]),
]


@pytest.mark.parametrize(("setting", "request_fields", "code", "says"),
                         [pytest.param(s, r, c, m, id=i) for i, s, r, c, m in MISTAKES])
def test_configuration_that_cannot_work_fails_at_once_with_the_fix(app_env, control, monkeypatch, tmp_path,
                                                                   every_log_line, setting, request_fields,
                                                                   code, says):
    from shared import app_context

    for name, value in setting(tmp_path).items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    app_context.reset()
    request_id = f"mistake-{uuid.uuid4().hex[:8]}"
    deliver({"id": request_id, "source": "nginx:1.27", "targetTags": [f"nginx:{request_id}"], **request_fields})
    record = status(request_id)
    assert (record.state, record.code, record.kind, record.attempts) == (State.FAILED, code, "permanent", 1), \
        record.reason
    for words in says:
        assert words in record.reason
    assert "gave up after" not in record.reason
    assert list(queue(app_env, app_env["IMPORT_QUEUE"]).peek_messages(max_messages=1)) == [], "a retry was queued"
    # the app's own lines (azure-identity adds its traceback only when its DEBUG logging is on)
    assert not any("Traceback" in line for line in every_log_line if line.startswith("acr_importer"))


def test_no_identity_endpoint_is_named_once_at_start(app_env, monkeypatch, every_log_line):
    from shared import app_context

    monkeypatch.delenv("IDENTITY_ENDPOINT")
    monkeypatch.delenv("MSI_ENDPOINT", raising=False)
    app_context.reset()
    app_context.worker()
    app_context.worker()
    lines = [line for line in every_log_line if '"setting": "IDENTITY_ENDPOINT"' in line]
    assert len(lines) == 1 and "AZURE_CLIENT_ID" in lines[0] and "IMDS" in lines[0]


def test_identity_endpoint_configured_logs_nothing_about_it(app_env, every_log_line):
    from shared import app_context

    app_context.reset()
    app_context.worker()
    assert not [line for line in every_log_line if '"setting": "IDENTITY_ENDPOINT"' in line]


def test_role_still_propagating_stays_transient_and_says_so(app_env, control):
    control.authorization_outage(seconds=30)
    request_id = deliver({"source": "nginx:1.27", "targetTags": [f"nginx:authz-{uuid.uuid4().hex[:8]}"]})
    record = status(request_id)
    assert record.state is State.RETRYING and record.kind == "transient"
    assert "likely transient: a new role assignment can take minutes to apply" in record.reason
    assert "AUTHORIZATION_GRACE_SECONDS=" in record.reason


@pytest.mark.parametrize(("broken", "says"), [
    pytest.param(lambda tmp: {"IDENTITY_ENDPOINT": f"http://127.0.0.1:{_closed_port()}/token"},
                 "IdentityUnavailable: the managed identity endpoint IDENTITY_ENDPOINT=", id="identity"),
    pytest.param(lambda tmp: {"IDENTITY_ENDPOINT": None, "IDENTITY_HEADER": None,
                              "AZURE_POD_IDENTITY_AUTHORITY_HOST": f"http://127.0.0.1:{_closed_port()}"},
                 "IdentityUnavailable: no managed identity is available to the app", id="no-identity"),
    # the registries' own TLS is the registry client's (a RegistryError naming the host), no traceback either
    pytest.param(lambda tmp: {"REQUESTS_CA_BUNDLE": _wrong_ca(tmp), "SSL_CERT_FILE": _wrong_ca(tmp)},
                 "TLS failed (SSLError)", id="tls"),
])
def test_a_refresh_says_the_fix_for_each_tag_and_logs_no_traceback(app_env, tmp_path, broken, says):
    """The refresh reads the target with the app's identity: the same mistakes end each tag's check with the
    reason and the fix, not `unexpected CredentialUnavailableError` and a traceback per tag."""
    import subprocess
    import sys

    config = tmp_path / "tracked.json"
    config.write_text(json.dumps({"images": [{"source": "docker.io/library/nginx", "tags": ["1.27"]}]}))
    env = {**app_env, "PATH": "/usr/bin", **broken(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "cli", "refresh", "--dry-run", "--config", str(config)],
                          capture_output=True, text=True, cwd=layout.REPO_ROOT, timeout=120,
                          env={k: v for k, v in env.items() if v is not None})
    output = done.stdout + done.stderr
    assert says in output, output
    assert "Traceback" not in output and "unexpected" not in output, output
