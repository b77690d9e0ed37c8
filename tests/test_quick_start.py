"""The README's "Run it locally and import one image", command by command, as a newcomer types it.

The commands are read out of the README block marked `<!-- recipe: quick-start -->` (tests/doc_examples.py), so
a change to the README that breaks the quick start breaks this test. `make run` runs on this session's own stack
folder and ports (tests/conftest.py) and writes its settings into a temporary folder (`SETTINGS=`), where the CLI
lines run, so a developer's own stack and local.settings.json are never touched.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from dev import layout, oci, seed
from dev.app_settings import local_app_settings
from dev.run import READY, run_settings, settings_file
from tests.doc_examples import recipe

START_SECONDS = 240
# The test machine may point these at the system bundle; a newcomer's shell usually does not set them, and
# the environment would win over the stack's CA in local.settings.json (as with the Functions tools).
MACHINE_CA_SETTINGS = ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE")


def quick_start_commands() -> list[str]:
    """The commands of the block marked `<!-- recipe: quick-start -->`, comments dropped."""
    commands = []
    for line in recipe("quick-start").text.splitlines():
        command = line.split(" #", 1)[0].strip()
        if command and not command.startswith("#"):
            commands.append(command)
    return commands


def test_the_quick_start_is_five_lines_at_most_and_starts_with_make_run():
    commands = quick_start_commands()
    assert commands[0] == "make run"
    assert any(c.startswith("bin/acr-import import ") for c in commands)
    assert any(c.startswith("bin/acr-import status ") for c in commands)
    assert len(recipe("quick-start").text.strip().splitlines()) <= 5


def newcomer_env(*, keep_machine_ca: bool = False) -> dict[str, str]:
    """A shell with nothing of the app's settings in it: only local.settings.json configures the CLI. With
    `keep_machine_ca`, the machine's CA bundle variables stay (as on many machines; `make run` copes)."""
    app_names = set(local_app_settings()) | {"TRACKED_IMAGES"}
    if not keep_machine_ca:
        app_names |= set(MACHINE_CA_SETTINGS)
    return {k: v for k, v in os.environ.items() if k not in app_names and not k.startswith("AzureWebJobsStorage")}


class Foreground:
    """`make run` as a subprocess in its own process group (so Ctrl-C goes to it as from a terminal)."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, text=True, start_new_session=True)
        self.lines: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            self._new.put(line)
        self._new.put(None)

    def wait_for(self, prefix: str, timeout: float) -> str:
        while True:
            try:
                line = self._new.get(timeout=timeout)
            except queue.Empty:
                pytest.fail(f"no {prefix!r} line within {timeout}s:\n" + "\n".join(self.lines))
            if line is None:
                pytest.fail(f"exited ({self.process.wait()}) before {prefix!r}:\n" + "\n".join(self.lines))
            if line.startswith(prefix):
                return line

    def interrupt(self, timeout: float = 60) -> int:
        """Ctrl-C, as the terminal sends it: SIGINT to the foreground process group."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait()


def run_readme_line(command: str, cwd: Path, env: dict[str, str],
                    request_id: str | None) -> subprocess.CompletedProcess:
    argv = shlex.split(command.replace("<id>", request_id or "<id>"))
    if argv[0].startswith("bin/"):
        argv[0] = str(layout.REPO_ROOT / argv[0])  # the clone's bin/, from the folder with local.settings.json
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def printed_curl_commands(lines: list[str]) -> tuple[str, str]:
    """The POST (a continued line) and the GET `make run` printed, as a user would paste them."""
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("curl -s -X POST"))
    post = lines[start].strip().removesuffix("\\") + " " + lines[start + 1].strip()
    get = next(line.strip() for line in lines if line.strip().startswith("curl -s http"))
    return post, get


def test_the_readme_quick_start_imports_one_image(stack, tmp_path):
    commands = quick_start_commands()
    ours = layout.REPO_ROOT / "local.settings.json"
    had_settings = ours.exists()
    env = newcomer_env(keep_machine_ca=True)
    env.setdefault("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")  # a system bundle, as many set
    make = shlex.split(commands[0])
    assert make == ["make", "run"]
    # `-o`: the test environment is installed already; the recipe itself runs as `make run` runs it.
    app = Foreground(["make", "-C", str(layout.REPO_ROOT), "-o", "venv", "-o", "system-deps", "-o", "node-deps", "run",
                      f"SETTINGS={tmp_path / 'local.settings.json'}"], tmp_path, env)
    try:
        ready = app.wait_for(READY, START_SECONDS)
        assert f"http://{layout.HOST}:{layout.RUNNER_PORT}/api" in ready  # this session's ports, not 7071
        assert json.loads((tmp_path / "local.settings.json").read_text())["Values"]["TRACKED_IMAGES"] == \
            "dev/tracked-images.local.json"
        request_id = None
        for command in commands[1:]:
            if command.startswith("make "):
                assert command in ("make stack-down", "make stack-reset")  # the session's stack stops by itself
                continue
            done = run_readme_line(command, tmp_path, env, request_id)
            output = done.stdout + done.stderr
            assert done.returncode == 0, f"{command}\n{output}"
            assert "settings: local.settings.json" in done.stderr  # says which settings it used
            if " import " in f" {command} ":
                found = re.search(r"\bqueued (\S+):", output)
                assert found, output
                request_id = found.group(1)
                tag = shlex.split(command)[shlex.split(command).index("-t") + 1]
            if " status " in f" {command} ":
                assert re.search(r"^state:\s+succeeded$", done.stdout, re.M), output
        assert request_id is not None
        repo, _, reference = tag.partition(":")
        landed = oci.inspect_image(seed.admin_client(layout.TARGET_ACR.login_server), repo, reference)
        assert landed.digest == stack.digest("docker.io", "library/hello-world", "latest")

        # The curl lines `make run` printed work as printed (the function key read from the stack folder).
        post, get = printed_curl_commands(app.lines)
        posted = subprocess.run(["bash", "-c", post], cwd=layout.REPO_ROOT, env=env, capture_output=True, text=True,
                                timeout=60)
        answer = json.loads(posted.stdout)
        assert answer["state"] == "received", posted.stdout + posted.stderr
        looked_up = subprocess.run(["bash", "-c", get.replace("<id>", answer["id"])], cwd=layout.REPO_ROOT, env=env,
                                   capture_output=True, text=True, timeout=60)
        assert json.loads(looked_up.stdout)["id"] == answer["id"], looked_up.stdout + looked_up.stderr

        # The local tracked-images example plans cleanly against the stack.
        refresh = run_readme_line("bin/acr-import refresh --dry-run", tmp_path, newcomer_env(), None)
        assert refresh.returncode == 0, refresh.stdout + refresh.stderr
        assert "errors 0" in refresh.stdout and "problem" not in refresh.stdout, refresh.stdout
    finally:
        code = app.interrupt()
    # make itself reports the Ctrl-C ("make: *** [run] Interrupt"), as it does at a terminal; the app stopped
    # cleanly before that, finishing what was in flight.
    assert code in (0, -signal.SIGINT, 130), "\n".join(app.lines)
    assert any(line.startswith("note: REQUESTS_CA_BUNDLE") for line in app.lines), "\n".join(app.lines)
    assert "Stopped." in app.lines and not any("Traceback" in line for line in app.lines), "\n".join(app.lines)
    assert ours.exists() == had_settings  # the repo's own local.settings.json was left alone


def test_make_run_keeps_an_existing_settings_file_unless_forced(tmp_path):
    path = tmp_path / "local.settings.json"
    values, said = settings_file(path, force=False)
    assert values == run_settings() and "wrote" in said and json.loads(path.read_text())["Values"] == values
    path.write_text(json.dumps({"IsEncrypted": False, "Values": {"IMPORT_QUEUE": "mine"}}))
    values, said = settings_file(path, force=False)
    assert values == {"IMPORT_QUEUE": "mine"} and "existing" in said and "FORCE_SETTINGS=1" in said
    assert json.loads(path.read_text())["Values"] == {"IMPORT_QUEUE": "mine"}
    values, said = settings_file(path, force=True)
    assert values == run_settings() and "replacing" in said
    assert json.loads(path.read_text())["Values"] == run_settings()


@pytest.mark.parametrize("with_file", [False, True])
def test_the_cli_reads_local_settings_json_from_the_current_folder_and_says_so(tmp_path, with_file):
    env = newcomer_env()
    env["PYTHONPATH"] = str(layout.REPO_ROOT)
    if with_file:  # a queue name only: enough to see the file was read, no storage needed to fail on
        (tmp_path / "local.settings.json").write_text(json.dumps({"Values": {"IMPORT_QUEUE": "from-the-file"}}))
    done = subprocess.run([sys.executable, "-m", "cli", "list"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    first = done.stderr.splitlines()[0]
    if with_file:
        assert first.startswith("settings: local.settings.json")
    else:
        assert first == "settings: the environment (no ./local.settings.json)"
    assert done.returncode == 2 and "AzureWebJobsStorage" in done.stderr  # no storage either way


def test_an_explicit_settings_file_wins_over_the_one_in_the_folder(tmp_path):
    env = newcomer_env()
    env["PYTHONPATH"] = str(layout.REPO_ROOT)
    (tmp_path / "local.settings.json").write_text(json.dumps({"Values": {}}))
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"Values": {}}))
    done = subprocess.run([sys.executable, "-m", "cli", "--settings", str(other), "list"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.stderr.splitlines()[0].startswith(f"settings: {other}")
