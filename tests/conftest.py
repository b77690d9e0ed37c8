"""Shared fixtures: the local stack (started once per session, in its own state folder) and the app's env.

The stack is real: docker-registry processes over TLS, the Azure stand-in (ARM, managed identity, ACR),
Azurite. Tests that need none of it (pure parsing) never touch these fixtures.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid

import pytest

# The test session gets its own stack folder, so a developer's `make stack-up` data never leaks in.
# Set here, before any test module imports dev.layout, which reads it once.
_OWN_STACK_DIR = "ACR_IMPORTER_STACK_DIR" not in os.environ
os.environ.setdefault("ACR_IMPORTER_STACK_DIR", tempfile.mkdtemp(prefix="acr-importer-test-stack-"))


def pytest_sessionfinish(session, exitstatus):
    if _OWN_STACK_DIR:
        shutil.rmtree(os.environ["ACR_IMPORTER_STACK_DIR"], ignore_errors=True)


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


TEST_SETTINGS = {  # fast retries, so retry paths run in seconds
    "IMPORT_RETRY_BASE_SECONDS": "0.5",
    "IMPORT_RETRY_MAX_SECONDS": "2",
}


@pytest.fixture
def app_env(stack, monkeypatch):
    """The app's settings pointed at the stack, with a fresh queue and status table per test."""
    from dev.app_settings import local_app_settings
    from shared import app_context

    suffix = uuid.uuid4().hex[:10]
    values = {**local_app_settings(queue=f"imports-{suffix}", table=f"status{suffix}"), **TEST_SETTINGS}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    app_context.reset()
    yield values
    app_context.reset()
