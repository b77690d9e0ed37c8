"""The app's referrer walk (shared/registry/referrers.py) against every hostile referrers kind
(dev/hostile_registry.py REFERRER_KINDS): wrong JSON types, huge indexes, cycles, looping or cross-origin pages,
redirects, stalls, a tag-schema tag that is no index. Whatever a kind serves, the walk ends, never raises, says
what it could not read (a kind marked `problem`: the request would end with a warning naming it) or reads it
whole (`ok`: a cycle or a self-reference ends, the well-formed control is read), and no credential reaches another
host. The server's own behaviour is tests/registry/test_hostile_referrers_server.py."""

from __future__ import annotations

import pytest

from dev import hostile_registry as hostile
from dev import layout
from shared.azure.transport import NetworkSettings
from shared.core.redact import Password
from shared.core.referrers import ReferrerChoice
from shared.registry.client import BasicAuth, RegistryClient
from shared.registry.referrers import find_referrers

PASSWORD = "hostile-referrers-password-7d2e"
# Lies the walk tolerates, and why: a listing whose entry names another subject only makes the app copy another
# manifest of the same source repository, which the allowlist already permits; checking every referrer's own
# `subject` would cost a manifest GET each (a pull, on Docker Hub).
TOLERATED = {"referrers-wrong-subject"}
CALL_SECONDS = 6.0


@pytest.fixture(scope="module")
def registry():
    with hostile.HostileRegistry() as served:
        yield served


@pytest.fixture
def client(registry):
    registry.reset()
    yield RegistryClient(endpoints=registry.endpoints(hostile.REFERRER_KINDS), timeout=CALL_SECONDS,
                         network=NetworkSettings(ca_bundle=str(layout.CA_CERT)))
    assert registry.credentials_received((PASSWORD, hostile.REGISTRY_TOKEN)) == [], \
        "a credential reached another host"


@pytest.mark.parametrize("kind", hostile.REFERRER_KINDS, ids=lambda k: k.name)
def test_the_walk_ends_and_says_what_it_could_not_read(kind, client):
    walk = find_referrers(client, kind.host, hostile.REPOSITORY, [hostile.DIGEST],
                          BasicAuth("hostile", Password(PASSWORD)), ReferrerChoice(), max_depth=4, max_count=64,
                          cosign_tags=True)
    notes = [*walk.unread, walk.cut]
    assert all(note.isprintable() and len(note) < 400 for note in notes)
    assert len(walk.found) <= 64
    if kind.name in TOLERATED:
        assert walk.complete, walk
    elif kind.expect == "problem":
        assert not walk.complete, (kind.name, walk)
    else:
        assert walk.complete, (kind.name, walk)
        assert hostile.SIGNATURE_DIGEST in {r.digest for r in walk.found}, walk
