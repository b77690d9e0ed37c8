"""docs/settings.md against the code, so the two cannot drift: every setting the app reads has a row, every row
names a setting something reads, and each default the page states is the one read_settings uses.

What the code reads comes from two places that do not trust each other: infra/check.py's scan of the code (the
one the template and sample checks use: every env read in function_app.py and shared/, binding expressions
included) and a recording of the names read_settings actually looks up.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from fnmatch import fnmatchcase
from pathlib import Path

import pytest

from infra import check
from shared.azure.storage import settings_problem
from shared.core.settings import CREDENTIAL_PREFIX, read_settings

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "settings.md"
# Read by the Functions host or the Python worker, not by the app's code: documented, but no scan finds them.
READ_BY_THE_PLATFORM = {"PYTHON_THREADPOOL_THREAD_COUNT": "the Python worker's thread pool"}
TARGET = ("/subscriptions/11111111-1111-4111-8111-111111111111/resourceGroups/rg/providers/"
          "Microsoft.ContainerRegistry/registries/myregistry")
BASE = {"TARGET_REGISTRY": TARGET}  # the least a working app sets


def documented_rows() -> Iterator[tuple[str, str]]:
    """(name, default cell) of every table row whose first cell is one `NAME`; `<NAME>` reads as `*`."""
    for line in DOC.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and re.fullmatch(r"`[^`]+`", cells[0]):
            yield re.sub(r"<[A-Z]+>", "*", cells[0].strip("`")), cells[1]


DOCUMENTED = dict(documented_rows())


class Recording(dict):
    """An environment that remembers every name looked up in it (and that it was listed, for prefixes)."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.read: set[str] = set()
        self.listed = False

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        self.read.add(key)
        return super().__contains__(key)

    def items(self):
        self.listed = True
        return super().items()


def _covered(name: str, names) -> bool:
    return any(fnmatchcase(name, other) or fnmatchcase(other, name) for other in names)


def test_the_page_has_its_tables():
    assert len(DOCUMENTED) >= 30 and "IMPORT_QUEUE" in DOCUMENTED and "SOURCE_CREDENTIALS__*__PASSWORD" in DOCUMENTED


def test_every_setting_the_code_reads_is_documented():
    read = check.settings_read_by_code(REPO)
    missing = {name: where for name, where in read.items() if not _covered(name, DOCUMENTED)}
    assert not missing, f"read by the code but not in docs/settings.md: {missing}"


def test_every_setting_read_settings_looks_up_is_documented():
    env = Recording(dict(BASE))
    read_settings(env, check_storage=settings_problem)
    assert env.listed, "read_settings lists the environment for the credential sets"
    assert _covered(f"{CREDENTIAL_PREFIX}X__PASSWORD", DOCUMENTED)
    missing = sorted(name for name in env.read if not _covered(name, DOCUMENTED))
    assert not missing, f"read_settings reads {missing}, docs/settings.md does not list them"


def read_by_the_code() -> set[str]:
    """The scan's names and globs, what read_settings looked up, and the credential sets' prefix (listed)."""
    env = Recording(dict(BASE))
    read_settings(env, check_storage=settings_problem)
    return set(check.settings_read_by_code(REPO)) | env.read | ({f"{CREDENTIAL_PREFIX}*"} if env.listed else set())


def test_every_documented_setting_is_read():
    read = read_by_the_code()
    unread = sorted(name for name in DOCUMENTED if name not in READ_BY_THE_PLATFORM and not _covered(name, read))
    assert not unread, f"docs/settings.md lists {unread}, which nothing reads (remove the rows, or say who reads them)"


def test_every_documented_setting_is_in_the_sample_settings():
    sample = json.loads((REPO / "local.settings.sample.json").read_text())["Values"]
    missing = sorted(name for name in DOCUMENTED if not _covered(name, sample)
                     and not any(fnmatchcase(name, glob) for glob in check.NOT_IN_SAMPLE))
    assert not missing, f"in docs/settings.md, not in local.settings.sample.json: {missing}"


def _stated_defaults() -> list[tuple[str, str]]:
    """(name, value) for each row whose default is one literal in backticks (another setting's name: its value)."""
    found = []
    for name, cell in DOCUMENTED.items():
        literal = re.fullmatch(r"`([^`]*)`", cell)
        if literal and "*" not in name:
            value = literal.group(1)
            found.append((name, BASE.get(value, value) if value in DOCUMENTED else value))
    return found


DEFAULTS = _stated_defaults()


def test_the_page_states_defaults():
    assert len(DEFAULTS) >= 15, DEFAULTS


@pytest.mark.parametrize(("name", "value"), DEFAULTS, ids=[name for name, _ in DEFAULTS])
def test_a_documented_default_is_what_the_app_uses_when_the_setting_is_unset(name, value):
    """Setting it to the documented default changes nothing; and read_settings reads it, or the default would be
    vacuous."""
    env = Recording(dict(BASE))
    unset = read_settings(env)
    assert name in env.read, f"{name} has a default in docs/settings.md but read_settings does not read it"
    explicit = read_settings({**BASE, name: value})
    assert explicit.problems == (), explicit.problems
    assert explicit == unset, f"docs/settings.md says {name} defaults to {value!r}; the code's default differs"


def test_a_wrong_default_in_the_page_would_be_found():
    explicit = read_settings({**BASE, "IMPORT_MAX_ATTEMPTS": "5"})
    assert explicit != read_settings(BASE)
