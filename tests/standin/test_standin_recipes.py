"""The copy-paste recipes of dev/azure_standin/README.md run exactly as written (parsed out of the file), in a
shell from the repo root, against the local stack: `az acr import` with the real Azure CLI, then `skopeo
inspect`/`list-tags` with the credentials `python -m dev.creds skopeo` prints, then `az acr repository show-tags`
and `az acr manifest list-metadata` through the stand-in's DNS proxy."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from dev import layout, seed
from tests.doc_examples import recipe


def recipes() -> dict[str, str]:
    """The blocks marked `<!-- recipe: NAME -->` in dev/azure_standin/README.md (tests/doc_examples.py)."""
    return {name: recipe(name).text for name in ("az-import", "skopeo", "az-list")}


def run_recipe(script: str) -> subprocess.CompletedProcess:
    """As a person pastes it: bash, the repo root, their environment (here the test stack's ports)."""
    return subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=layout.REPO_ROOT,
                          env={**os.environ}, capture_output=True, text=True, timeout=300)


def test_the_readme_recipes_run_as_written_against_the_stack(stack):
    if not (layout.REPO_ROOT / ".venv-az" / "bin" / "az").exists():
        pytest.fail("the Azure CLI is not installed in .venv-az: run `make az-cli`")
    if shutil.which("skopeo") is None:
        pytest.fail("skopeo is not installed (apt-get install skopeo)")
    steps = recipes()

    imported = run_recipe(steps["az-import"])
    assert imported.returncode == 0, imported.stderr[-3000:]
    assert imported.stdout.strip().splitlines()[-1] == layout.TARGET_ACR.login_server

    looked = run_recipe(steps["skopeo"])
    assert looked.returncode == 0, looked.stderr[-3000:]
    decoder, text, documents = json.JSONDecoder(), looked.stdout, []
    position = 0
    while position < len(text.rstrip()):
        document, position = decoder.raw_decode(text, position)
        documents.append(document)
        position = len(text) - len(text[position:].lstrip())
    raw, inspected, tags = documents
    assert len(raw["manifests"]) == 4  # the multi-arch index, as imported
    assert inspected["Digest"].startswith("sha256:") and "recipe" in inspected["RepoTags"]
    assert "recipe" in tags["Tags"] and tags["Repository"].endswith("/hello-world")
    assert stack.digest("docker.io", "library/hello-world", "latest")  # the source the import copied

    listed = run_recipe(steps["az-list"])
    assert listed.returncode == 0, listed.stderr[-3000:]
    tags_text, _, metadata_text = listed.stdout.partition("[")
    target = seed.admin_client(layout.TARGET_ACR)  # what the target registry holds, read behind the stand-in
    assert tags_text.split() == sorted(target.list_tags("hello-world")) and "recipe" in tags_text.split()
    manifests = {m["digest"]: m for m in json.loads("[" + metadata_text)}
    index = target.get_manifest("hello-world", "recipe")
    assert index.digest == inspected["Digest"] and "recipe" in manifests[index.digest]["tags"]
    assert manifests[index.digest]["mediaType"] == index.media_type
    for child in json.loads(index.body)["manifests"]:  # each platform, untagged, with its architecture and os
        shown = manifests[child["digest"]]
        assert (shown["architecture"], shown["os"]) == (child["platform"]["architecture"], child["platform"]["os"])
        assert shown["mediaType"] == child["mediaType"]


def test_the_skopeo_helper_refuses_an_unknown_registry_and_names_the_known_ones():
    done = subprocess.run([str(layout.REPO_ROOT / ".venv" / "bin" / "python"), "-m", "dev.creds", "skopeo", "nope"],
                          cwd=layout.REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "myregistry" in done.stderr and "Traceback" not in done.stderr
