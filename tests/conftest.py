"""Shared fixtures: the local stack (started once per session, in its own state folder) and the app's env.

The stack is real: docker-registry processes over TLS, the Azure stand-in (ARM, managed identity, ACR),
Azurite. Tests that need none of it (pure parsing) never touch these fixtures.
"""

from __future__ import annotations

import os
import tempfile
import uuid

import pytest

# The test session gets its own stack folder, so a developer's `make stack-up` data never leaks in.
# Set before anything imports dev.layout, which reads it once.
os.environ.setdefault("ACR_IMPORTER_STACK_DIR", tempfile.mkdtemp(prefix="acr-importer-test-stack-"))

from dev import layout


class Seeded(list):
    """What the seeding pushed, with a look-up by reference."""

    def find(self, registry: str, repo: str, tag: str):
        return next(s for s in self if (s.registry, s.repo, s.tag) == (registry, repo, tag))

    def digest(self, registry: str, repo: str, tag: str) -> str:
        return self.find(registry, repo, tag).digest


@pytest.fixture(scope="session")
def stack():
    """The whole local stack, up and seeded with the seed document's images."""
    from dev import seed
    from dev import stack as local_stack

    started = local_stack.up()
    try:
        yield Seeded(seed.seed_world())
    finally:
        if started:
            local_stack.down(started)


@pytest.fixture
def control(stack):
    from dev.azure_standin.control import StandinControl

    client = StandinControl()
    client.reset()
    yield client
    client.reset()


APP_SETTINGS = {
    "ALLOWED_SOURCE_REGISTRIES": "docker.io,mcr.microsoft.com,*.azurecr.io,registry.contoso.com",
    "SOURCE_CREDENTIALS__DOCKERHUB__USERNAME": "dockeruser",
    "SOURCE_CREDENTIALS__DOCKERHUB__PASSWORD": layout.DOCKERHUB.users["dockeruser"],
    "SOURCE_CREDENTIALS__DOCKERHUB__REGISTRIES": "docker.io",
    "SOURCE_CREDENTIALS__CONTOSO__USERNAME": "contoso",
    "SOURCE_CREDENTIALS__CONTOSO__PASSWORD": layout.PRIVATE.users["contoso"],
    "SOURCE_CREDENTIALS__CONTOSO__REGISTRIES": "registry.contoso.com",
    "SOURCE_CREDENTIALS__SP__USERNAME": layout.SERVICE_PRINCIPAL.client_id,
    "SOURCE_CREDENTIALS__SP__PASSWORD": layout.SERVICE_PRINCIPAL.secret,
    "SOURCE_CREDENTIALS__SP__REGISTRIES": layout.OTHER_SUB_ACR.login_server,
    "IMPORT_RETRY_BASE_SECONDS": "0.5",
    "IMPORT_RETRY_MAX_SECONDS": "2",
    "IMPORT_POLL_INTERVAL_SECONDS": "0.2",
}


@pytest.fixture
def app_env(stack, monkeypatch):
    """The app's settings pointed at the stack, with a fresh queue and status table per test."""
    from shared import app_context

    suffix = uuid.uuid4().hex[:10]
    values = {**layout.stack_env(), **APP_SETTINGS, "IMPORT_QUEUE": f"imports-{suffix}",
              "IMPORT_STATUS_TABLE": f"status{suffix}"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    app_context.reset()
    yield values
    app_context.reset()
