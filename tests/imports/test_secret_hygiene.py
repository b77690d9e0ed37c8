"""Secret hygiene: plant known secret values in credential sets and inline requests, run requests that succeed,
fail and are rejected (through the worker and the real stand-ins), then scan every log line, status row, dead
letter and poison message: zero occurrences."""

from __future__ import annotations

import json
import uuid

import pytest

from dev import layout
from shared import app_context
from shared.core.redact import redact_text
from tests.azure.test_telemetry import values_of
from tests.helpers import deliver, everything_kept
from tests.hostile.generate import MESSAGES, PLANTED_PASSWORD

SET_PASSWORD = "planted-set-pass-5c1e9a"  # a credential set the upstream refuses: the error may echo what was sent


def test_an_unterminated_password_in_broken_json_is_removed():
    assert PLANTED_PASSWORD not in redact_text('{"source": "nginx", "password": "' + PLANTED_PASSWORD)




@pytest.mark.parametrize("inline_allowed", ["false", "true"])
def test_planted_secrets_never_show(app_env, monkeypatch, every_log_line, otel, inline_allowed):
    """Every body of the hostile corpus that holds the planted password (userinfo in each reference field, a
    source equal to its own password, broken JSON, duplicate keys...) plus requests that run: with inline
    credentials refused, and allowed (then a source or tag equal to the password is imported, and recorded
    without it)."""
    monkeypatch.setenv("SOURCE_CREDENTIALS__CONTOSO__PASSWORD", SET_PASSWORD)
    monkeypatch.setenv("ALLOW_INLINE_CREDENTIALS", inline_allowed)
    monkeypatch.setenv("IMPORT_MAX_ATTEMPTS", "1")
    app_context.reset()
    tag = uuid.uuid4().hex[:6]
    bodies = [
        {"source": "registry.contoso.com/team/app:1", "credential": "contoso", "targetTags": [f"h:{tag}-set"]},
        {"source": "registry.contoso.com/team/app:1", "username": "contoso", "password": PLANTED_PASSWORD,
         "targetTags": [f"h:{tag}-inline"]},
        {"source": "docker.io/myrepo/image:tag", "username": "dockeruser", "password": PLANTED_PASSWORD,
         "targetTags": [f"h:{tag}-hub"]},
        {"source": "Bad Reference", "password": PLANTED_PASSWORD},
        '{"source": "nginx", "password": "' + PLANTED_PASSWORD,
        f'{{"source": "nginx", "password": "{SET_PASSWORD}", "x": 1}}',
        {"source": "docker.io/library/hello-world:latest", "targetTags": [f"{PLANTED_PASSWORD}:{tag}"],
         "username": "dockeruser", "password": PLANTED_PASSWORD},
        {"source": f"docker.io/library/{PLANTED_PASSWORD}:1", "username": "dockeruser", "password": PLANTED_PASSWORD},
    ]
    bodies += [json.loads(line)["text"] for line in MESSAGES.read_text().splitlines() if PLANTED_PASSWORD in line]
    for body in bodies:
        deliver(body)
    kept = everything_kept(app_env)
    assert len(kept) >= len(bodies)
    assert len(otel.import_spans()) == len(bodies)
    for secret in (PLANTED_PASSWORD, SET_PASSWORD, layout.DOCKERHUB.users["dockeruser"]):
        traced = [values_of(span) for span in otel.import_spans()]
        leaks = [text[:200] for text in [*every_log_line, *kept, *traced] if secret in text]
        assert leaks == [], f"{len(leaks)} occurrences"
