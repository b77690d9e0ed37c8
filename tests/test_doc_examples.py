"""Every example in the README and docs runs as written, or says why not (issue 13).

The blocks and their markers are read by tests/doc_examples.py (the convention is in its docstring and in
docs/reliability.md). Here: every block is accounted for, and each block this module runs (unmarked shell and
Python, `<!-- run: KIND -->`) runs against the local stack with the app in the runner. Shell and Python run in a
copy of the repo whose local.settings.json is this test's (the stack's settings, this test's queue and table), so
`python -m cli ...` and `bin/acr-import ...` find their settings as a user's do after `make run`, and neither the
repo's own local.settings.json nor its files are touched.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dev import layout
from dev.run import LOCAL_TRACKED_IMAGES
from tests import doc_examples
from tests.doc_examples import Block, all_blocks, blocks_of, fill_placeholders, problems, strip_comments
from tests.imports.test_http_api import follow, post
from tests.test_quick_start import newcomer_env

RUN_HERE = [block for block in all_blocks() if block.kind in doc_examples.RUN_KINDS]
NOT_COPIED = shutil.ignore_patterns(".git", ".venv", ".venv-az", "node_modules", ".stack", "__pycache__", "*.pyc",
                                    ".pytest_cache", ".ruff_cache", "local.settings.json", "*.egg-info")


def test_every_example_is_run_or_says_why_not():
    found = problems(all_blocks())
    assert not found, "\n".join(found)


def test_an_unmarked_block_without_a_runner_is_named_by_file_and_line(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("# Doc\n\n```\nsome output\n```\n\n1. a step\n   <!-- not run: needs Azure (az login) -->\n"
                   "   ```sh\n   az login\n   ```\n\n<!-- output -->\n```\nshown\n```\n\n```kusto\nrequests\n```\n\n"
                   "<!-- not run -->\n```sh\nx\n```\n\n<!-- run: yaml -->\n```yaml\na: 1\n```\n\n```sh\nls\n```\n")
    blocks = blocks_of(doc)
    assert [(b.line, b.marker, b.kind) for b in blocks] == [
        (3, None, None), (9, "not run", None), (14, "output", None), (18, None, None), (23, "not run", None),
        (28, "run", "yaml"), (32, None, "sh")]
    assert blocks[1].text == "az login\n" and blocks[1].detail == "needs Azure (az login)"
    found = "\n".join(problems(blocks))
    assert f"{doc}:3: a ``` block with no marker" in found and f"{doc}:18: a ```kusto block" in found
    assert f"{doc}:23: <!-- not run --> without a reason" in found and f"{doc}:28: <!-- run: yaml -->" in found
    assert f"{doc}:9" not in found and f"{doc}:14" not in found and f"{doc}:32" not in found


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """The repo's files as a clone has them (its virtualenvs and Azurite linked), without local.settings.json."""
    root = tmp_path_factory.mktemp("docs") / "acr-importer"
    shutil.copytree(layout.REPO_ROOT, root, ignore=NOT_COPIED, symlinks=True)
    for linked in (".venv", ".venv-az", "dev/node_modules"):
        if (layout.REPO_ROOT / linked).exists():
            (root / linked).symlink_to((layout.REPO_ROOT / linked).resolve())
    return root


@pytest.fixture
def documented(api, app_env, checkout, stack):
    """The app running (the runner, HTTP API and all) and the copy's local.settings.json pointing at it, as after
    `make run`; plus a second allowed target, which the tracked-images example names."""
    values = {**app_env, "TRACKED_IMAGES": LOCAL_TRACKED_IMAGES,
              "ALLOWED_TARGET_REGISTRIES": f"{layout.TARGET_ACR.resource_id},{layout.SOURCE_ACR.resource_id}"}
    (checkout / "local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": values}, indent=2))
    return {"api": api, "root": checkout, "settings": values, "env": newcomer_env(), "stack": stack}


def run_in(where: dict, argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=where["root"], env=where["env"], capture_output=True, text=True, timeout=300)


def assert_clean(block: Block, done: subprocess.CompletedProcess) -> str:
    output = done.stdout + done.stderr
    said = f"{block.where} exited {done.returncode}:\n{block.text}\n--- output:\n{output[-4000:]}"
    assert done.returncode == 0, said
    assert "Traceback" not in output and not re.search(r"^error:", output, re.M), said
    return output


def run_sh(block: Block, where: dict) -> None:
    script = fill_placeholders(block.text, where["stack"])
    done = run_in(where, ["bash", "-e", "-o", "pipefail", "-c", script])
    output = assert_clean(block, done)
    waited = [line for line in script.splitlines()
              if re.search(r"(acr-import|-m cli)\b.* import ", line) and "--no-wait" not in line]
    if waited:  # the CLI followed an import to its end: it must have succeeded (exit 0 also says so)
        assert re.search(r"^state:\s+succeeded$", done.stdout, re.M), f"{block.where}:\n{output[-4000:]}"


def run_python(block: Block, where: dict) -> None:
    script = fill_placeholders(block.text, where["stack"])
    assert_clean(block, run_in(where, [str(where["root"] / ".venv" / "bin" / "python"), "-c", script]))


def json_documents(text: str) -> list:
    decoder, documents, position = json.JSONDecoder(), [], 0
    text = text.strip()
    while position < len(text):
        document, position = decoder.raw_decode(text, position)
        documents.append(document)
        position = len(text) - len(text[position:].lstrip())
    return documents


def run_requests(block: Block, where: dict) -> None:
    requests_ = json_documents(strip_comments(fill_placeholders(block.text, where["stack"])))
    assert requests_, f"{block.where}: no request in the block"
    accepted = []
    for request in requests_:
        answer = post(where["api"], request)
        assert answer.status_code == 202, f"{block.where}: {json.dumps(request)} -> {answer.status_code} {answer.text}"
        accepted.append((request, answer.json()["statusUrl"]))
    for request, url in accepted:
        final = follow(url, timeout=120)
        assert final["state"] == "succeeded", f"{block.where}: {json.dumps(request)} ended {final['state']}: " \
                                              f"{final.get('reason')}"


def run_tracked_images(block: Block, where: dict) -> None:
    config = where["root"] / "doc-tracked-images.json"
    config.write_text(strip_comments(fill_placeholders(block.text, where["stack"])))
    done = run_in(where, [str(where["root"] / ".venv" / "bin" / "python"), "-m", "cli", "refresh", "--dry-run",
                          "--config", config.name])
    output = assert_clean(block, done)
    # a bad entry would be a `problem` line naming it (and left out); an unreadable source or target an error
    assert re.search(r"\berrors 0\b", done.stdout) and "problem" not in done.stdout, f"{block.where}:\n{output}"


def run_replication_rules(block: Block, where: dict) -> None:
    from shared.core.settings import load_settings
    from shared.replication.replicate import parse_rules

    text = fill_placeholders(block.text, where["stack"])
    rules = parse_rules(text, load_settings(where["settings"]))  # raises naming every problem
    assert len(rules.rules) == len(json.loads(text)["rules"]), block.where


RUNNERS = {"sh": run_sh, "python": run_python, "requests": run_requests, "tracked-images": run_tracked_images,
           "replication-rules": run_replication_rules}
assert set(RUNNERS) == set(doc_examples.RUN_KINDS)


@pytest.mark.parametrize("block", RUN_HERE, ids=[block.where for block in RUN_HERE])
def test_the_example_runs_as_written(block, documented):
    RUNNERS[block.kind](block, documented)


def test_the_copy_leaves_the_repo_alone(checkout):
    assert checkout != layout.REPO_ROOT and not (checkout / ".git").exists()
    assert os.path.realpath(checkout / "README.md") != os.path.realpath(layout.REPO_ROOT / "README.md")
