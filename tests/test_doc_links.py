"""Every relative link in the README and the docs leads somewhere: the file exists, and a `#anchor` names a
heading of that page (as GitHub makes anchors from headings). Content moves between the README and docs/
pages; a link left pointing at the old place is what a reader notices first. No stack needed.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

from tests.doc_examples import FENCE, ROOT, documents

LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^()\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"(`+).*?\1")
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$")


def prose_lines(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, text) of the lines outside fenced code blocks."""
    lines, found, fence = path.read_text(encoding="utf-8").splitlines(), [], None
    for number, line in enumerate(lines, 1):
        opening = FENCE.match(line)
        if fence is None and opening:
            fence = opening["fence"]
        elif fence is not None:
            if re.fullmatch(rf"\s*{re.escape(fence[0])}{{{len(fence)},}}\s*", line):
                fence = None
        else:
            found.append((number, line))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation (backticks included) dropped, spaces to `-`."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    for _, line in prose_lines(path):
        heading = HEADING.match(line)
        if heading:
            base, n = slug(heading[1]), 0
            while (candidate := base if n == 0 else f"{base}-{n}") in found:
                n += 1
            found.add(candidate)
    return found


def broken_links(paths: list[Path], root: Path) -> list[str]:
    problems = []
    for path in paths:
        for number, line in prose_lines(path):
            for match in LINK.finditer(CODE_SPAN.sub("", line)):
                target = match[1]
                if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto: ...: not ours to check
                    continue
                file_part, _, anchor = target.partition("#")
                linked = (path.parent / unquote(file_part)).resolve() if file_part else path
                where = f"{path.relative_to(root)}:{number}: {target}"
                if not linked.exists():
                    problems.append(f"{where}: no such file")
                elif anchor and linked.suffix == ".md" and unquote(anchor).lower() not in anchors(linked):
                    problems.append(f"{where}: {linked.relative_to(root)} has no heading with anchor #{anchor}")
    return problems


def test_every_relative_link_in_the_readme_and_docs_resolves():
    found = broken_links(documents(), ROOT)
    assert not found, "\n".join(found)


def test_a_broken_link_is_named_by_file_line_and_target(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other page\n\n## `make run`: the app, on the stack\n")
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n\n## Local stack\n\n"
                      "[ok](docs/other.md#make-run-the-app-on-the-stack) [ok](#local-stack) [web](https://x.test/a)\n"
                      "`[in code](missing.md)`\n```sh\n# not a heading [nor a link](gone.md)\n```\n"
                      "[moved](#what-happens-to-a-request) and [gone](docs/gone.md)\n"
                      "[old anchor](docs/other.md#local-stack)\n")
    assert anchors(tmp_path / "docs" / "other.md") == {"other-page", "make-run-the-app-on-the-stack"}
    assert broken_links([readme], tmp_path) == [
        "README.md:10: #what-happens-to-a-request: README.md has no heading with anchor #what-happens-to-a-request",
        "README.md:10: docs/gone.md: no such file",
        "README.md:11: docs/other.md#local-stack: docs/other.md has no heading with anchor #local-stack",
    ]
