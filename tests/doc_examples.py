"""The fenced code blocks of the project's Markdown and the marker above each: the one parser every test that
runs documentation examples uses (tests/test_doc_examples.py, tests/test_quick_start.py,
tests/standin/test_standin_recipes.py).

Every fenced block in README.md, docs/*.md and dev/azure_standin/README.md is run as written, or says why not
in an HTML comment on the line right above it (indented like the fence inside a list item):

- no marker, a ```sh / ```bash block: run by tests/test_doc_examples.py in bash from the root of a copy of the
  repo (its local.settings.json is the test's, pointed at the local stack with the app running); it must exit 0
  without a traceback or an `error:` line, and a CLI `import` in it must end `succeeded`;
- no marker, a ```python block: run the same way with the repo's Python;
- `<!-- run: requests -->`: JSON import requests (`//` comment lines allowed), each POSTed to the HTTP API and
  followed until it ends; each must end `succeeded`;
- `<!-- run: tracked-images -->` / `<!-- run: replication-rules -->`: a configuration file, planned with
  `acr-import refresh --dry-run --config` (no errors, no problems) / loaded with the app's rule parser;
- `<!-- recipe: NAME -->`: run by another test that asks for NAME (RECIPES says which);
- `<!-- output -->`: output shown, not a command;
- `<!-- not run: REASON -->`: cannot run here (needs Azure, is the suite itself, ...). Keep these few and honest.

Placeholders a user fills in are filled with the local stack's values (fill_placeholders): an ACR resource id
with `<sub>` names the stack's registry of that name, and `@sha256:<64 hex>` after `host/repository` is the
digest the stack serves there. Anything else in angle brackets is run as written (and fails).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from dev import layout

ROOT = layout.REPO_ROOT
DOCUMENTS = ("README.md", "docs/*.md", "dev/azure_standin/README.md")

# Blocks other tests run, by the name in their `<!-- recipe: NAME -->` marker.
RECIPES = {
    "quick-start": "tests/test_quick_start.py",
    "az-import": "tests/standin/test_standin_recipes.py",
    "skopeo": "tests/standin/test_standin_recipes.py",
    "az-list": "tests/standin/test_standin_recipes.py",
}
# What tests/test_doc_examples.py runs: by marker `<!-- run: KIND -->`, or unmarked by the block's language.
RUN_KINDS = ("sh", "python", "requests", "tracked-images", "replication-rules")
DEFAULT_KIND = {"sh": "sh", "bash": "sh", "shell": "sh", "python": "python", "py": "python"}

MARKER = re.compile(r"^\s*<!--\s*(output|not run|recipe|run)\s*(?::\s*(.*?))?\s*-->\s*$", re.S)
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<lang>[^`\s]*)")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int            # 1-based line of the opening fence
    lang: str
    text: str            # the content, the fence's indentation removed
    marker: str | None   # "output", "not run", "recipe", "run" or None
    detail: str          # the reason, recipe name or run kind ("" when none)

    @property
    def where(self) -> str:
        path = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path
        return f"{path}:{self.line}"

    @property
    def kind(self) -> str | None:
        """What tests/test_doc_examples.py runs it as (None: not run there)."""
        if self.marker == "run":
            return self.detail
        if self.marker is None:
            return DEFAULT_KIND.get(self.lang)
        return None


def documents() -> list[Path]:
    found: list[Path] = []
    for pattern in DOCUMENTS:
        found += sorted(ROOT.glob(pattern))
    return found


def blocks_of(path: Path) -> list[Block]:
    lines = path.read_text().splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        closing = re.compile(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        end = next((j for j in range(index + 1, len(lines)) if closing.match(lines[j])), len(lines))
        text = "\n".join(line[min(indent, len(line) - len(line.lstrip())):]
                         for line in lines[index + 1:end]) + "\n"
        previous = next((lines[j] for j in range(index - 1, -1, -1) if lines[j].strip()), "")
        marked = MARKER.match(previous)
        found.append(Block(path, index + 1, opening["lang"].lower(), text,
                           marked[1] if marked else None, (marked[2] or "") if marked else ""))
        index = end + 1
    return found


def all_blocks() -> list[Block]:
    return [block for path in documents() for block in blocks_of(path)]


def problems(blocks: list[Block]) -> list[str]:
    """Every block neither run nor excused, and every marker that does not say what it must."""
    found = []
    named: dict[str, list[str]] = {}
    for block in blocks:
        if block.marker is None and block.kind is None:
            found.append(f"{block.where}: a ```{block.lang} block with no marker and no runner: run it "
                         "(see tests/doc_examples.py), or mark it <!-- output --> or <!-- not run: REASON -->")
        elif block.marker == "not run" and not block.detail:
            found.append(f"{block.where}: <!-- not run --> without a reason")
        elif block.marker == "run" and block.detail not in RUN_KINDS:
            found.append(f"{block.where}: <!-- run: {block.detail} --> is none of {', '.join(RUN_KINDS)}")
        elif block.marker == "recipe":
            if block.detail not in RECIPES:
                found.append(f"{block.where}: recipe {block.detail!r} is run by no test (RECIPES)")
            named.setdefault(block.detail, []).append(block.where)
    for name, test in RECIPES.items():
        if len(named.get(name, [])) != 1:
            found.append(f"recipe {name!r} ({test}) should mark one block, marks {named.get(name, [])}")
    return found


def recipe(name: str) -> Block:
    """The one block marked `<!-- recipe: NAME -->`."""
    assert name in RECIPES, f"{name!r} is not in tests/doc_examples.py RECIPES"
    marked = [b for b in all_blocks() if b.marker == "recipe" and b.detail == name]
    assert len(marked) == 1, f"recipe {name!r} marks {[b.where for b in marked]}, not one block"
    return marked[0]


RESOURCE_ID = re.compile(r"/subscriptions/<sub>/resourceGroups/[^/\s\"]+/providers/Microsoft\.ContainerRegistry/"
                         r"registries/([A-Za-z0-9]+)")
DIGEST = re.compile(r"(?P<registry>[\w.-]+(?::\d+)?)/(?P<repo>[\w./-]+)@sha256:<64 hex>")


def fill_placeholders(text: str, seeded) -> str:
    """A user's placeholders, filled with what the local stack has (`seeded`: conftest's Seeded)."""
    acrs = {acr.name: acr for acr in layout.ACRS}

    def resource_id(match: re.Match) -> str:
        assert match[1] in acrs, f"{match[0]}: the stack has no registry {match[1]!r} (it has {sorted(acrs)})"
        return acrs[match[1]].resource_id

    def digest(match: re.Match) -> str:
        digests = {s.digest for s in seeded if (s.registry, s.repo) == (match["registry"], match["repo"])}
        assert len(digests) == 1, f"{match[0]}: the stack serves {len(digests)} images there"
        return f"{match['registry']}/{match['repo']}@{digests.pop()}"

    return DIGEST.sub(digest, RESOURCE_ID.sub(resource_id, text))


def strip_comments(text: str) -> str:
    """JSON of a ```jsonc block: its `//` comment lines dropped."""
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))
