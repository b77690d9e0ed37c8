"""The two tiers (tests/conftest.py): stack tests are marked from their fixtures, and a test not marked stack
that starts part of the stack fails saying to mark it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import STACK_FIXTURES, _stack_command


@pytest.mark.parametrize(("argv", "expected"), [
    (["make", "run"], "make"),
    (["/usr/sbin/docker-registry", "serve", "config.yml"], "docker-registry"),
    ("skopeo inspect docker://x", "skopeo"),
    ([sys.executable, "-m", "dev.stack", "up"], "python -m dev.stack"),
    ([sys.executable, "-u", "-m", "dev.azure_standin"], "python -m dev.azure_standin"),
    ([sys.executable, "-m", "cli", "list"], None),
    ([sys.executable, "-m", "infra.check"], None),
    ([sys.executable, "-m", "dev.creds", "skopeo"], None),
])
def test_what_counts_as_starting_the_stack(argv, expected):
    assert _stack_command(argv) == expected


def test_an_unmarked_test_that_starts_the_stack_fails_saying_to_mark_it():
    with pytest.raises(RuntimeError, match=r"starting 'make' in a test not marked stack: mark it @pytest.mark.stack"):
        subprocess.run(["make", "--version"], capture_output=True)
    assert subprocess.run([sys.executable, "-c", "pass"]).returncode == 0  # other processes are fine


def test_every_test_using_a_stack_fixture_is_marked(request):
    items = request.session.items
    using = [item for item in items if STACK_FIXTURES.intersection(getattr(item, "fixturenames", ()))]
    assert all(item.get_closest_marker("stack") for item in using)
    assert request.node.get_closest_marker("stack") is None
