"""Every CLI command, run as a person would with each kind of mistake in its input or environment: one line
saying what is wrong and what to do (`error: ...`), the documented exit code, never a Python traceback
(`--debug` shows it). Plus what a script relies on: `import --no-wait` prints only the id, `list` fits the
terminal, and a request that never reached the queue leaves no status row.

The mistakes need no stack (storage is a closed port); the scriptable-output tests use the local stack.
The mistakes run the CLI's `main` in this process (`run`), with the environment, folder, streams and logging a
fresh `python -m cli` would have, because a process per case made this file half of `make test-fast`'s time;
`test_debug_shows_the_traceback`, the wrapper and the `-S` cases run real processes, so the entry point itself
(`sys.exit(main())`, the interpreter's traceback) stays covered.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import traceback
import uuid
from pathlib import Path

import pytest

from dev import layout

ACR_IMPORT = layout.REPO_ROOT / "bin" / "acr-import"
TARGET = ("/subscriptions/11111111-1111-4111-8111-111111111111/resourceGroups/rg/providers/"
          "Microsoft.ContainerRegistry/registries/myregistry")
BASE_SETTINGS = {"IMPORT_QUEUE": "imports", "IMPORT_STATUS_TABLE": "importstatus", "TARGET_REGISTRY": TARGET,
                 "ALLOWED_SOURCE_REGISTRIES": "docker.io", "TRACKED_IMAGES": "tracked.json"}
TRACKED = {"images": [{"source": "docker.io/library/nginx", "tags": ["1.27"], "target": "myregistry"}]}

# each subcommand as a person types it; each must reach storage (or its file) to do its work
COMMANDS = {
    "import": ["import", "-n", "myregistry", "--source", "nginx:1.27", "--no-wait"],
    "status": ["status", "some-request"],
    "list": ["list"],
    "prune": ["prune"],
    "redrive": ["redrive"],
    "refresh": ["refresh"],
}


def closed_port() -> int:
    """A loopback port nothing listens on (as Azurite's, when the stack is not running)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def unreachable_storage() -> str:
    port = closed_port()
    key = layout.AZURITE_CONNECTION_STRING.split("AccountKey=")[1].split(";")[0] \
        if "AccountKey=" in layout.AZURITE_CONNECTION_STRING else "a2V5"
    return (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={key};"
            f"QueueEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
            f"TableEndpoint=http://127.0.0.1:{port}/devstoreaccount1")


def clean_env(env: dict[str, str], cwd: Path) -> dict[str, str]:
    """Nothing from the developer's shell: a path, a home, the repo on PYTHONPATH, and `env`."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd), "PYTHONPATH": str(layout.REPO_ROOT),
            **env}


def run(argv: list[str], env: dict[str, str], cwd: Path, *, wrapper: Path | None = None,
        process: bool = False) -> subprocess.CompletedProcess:
    """The CLI in a clean environment, in a folder of its own: as a process (`process`, or a `wrapper` script),
    else in this process as `python -m cli` runs it (see run_here)."""
    if not (process or wrapper):
        return run_here(argv, clean_env(env, cwd), cwd)
    command = [str(wrapper), *argv] if wrapper else [sys.executable, "-m", "cli", *argv]
    return subprocess.run(command, cwd=cwd, env=clean_env(env, cwd), capture_output=True, text=True, timeout=120)


def run_here(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """`sys.exit(main(argv))` in this process, seeing what a fresh process would: only `env` in os.environ,
    `cwd` as the current folder, no logging handlers (so the app's warnings reach stderr through logging's
    last resort, as in a process), SystemExit's code as the exit status, and an uncaught exception's traceback
    on stderr. Everything is put back afterwards (the CLI fills os.environ from a settings file)."""
    from cli.__main__ import main

    saved_env, saved_cwd, root = dict(os.environ), os.getcwd(), logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    stdout, stderr = io.StringIO(), io.StringIO()
    os.environ.clear()
    os.environ.update({**env, **{k: v for k, v in saved_env.items() if k == "PYTEST_CURRENT_TEST"}})
    os.chdir(cwd)
    root.handlers, root.level = [], logging.WARNING
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = main(argv)
            except SystemExit as exited:  # argparse's usage errors and --help
                code = exited.code if isinstance(exited.code, int) else 0 if exited.code is None else 1
                if not isinstance(exited.code, int | None):
                    print(exited.code, file=sys.stderr)
            except BaseException:  # as the interpreter ends a process on an uncaught exception
                traceback.print_exc()
                code = 1
    finally:
        root.handlers, root.level = saved_handlers, saved_level
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess(["python", "-m", "cli", *argv], code, stdout.getvalue(), stderr.getvalue())


def app_event(line: str) -> bool:
    """A structured log line of the app's own (`refresh` logs its summary event as the timer does)."""
    try:
        return isinstance(json.loads(line), dict) and "event" in json.loads(line)
    except ValueError:
        return False


def one_line_error(done: subprocess.CompletedProcess) -> str:
    """The single `error: ...` line, after checking there is nothing else (no traceback, no second line)."""
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert not any(app_event(line) for line in lines), done.stderr  # the app's log lines: only with --debug
    if lines and lines[0].startswith("settings: "):  # which settings file the CLI read, said first (docs/cli.md)
        lines = lines[1:]
    if lines and lines[0].startswith("checking the tracked tags"):  # what `refresh` is about to do
        lines = lines[1:]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def mistake_environments(tmp: Path) -> dict[str, tuple[list[str], dict[str, str], int, str]]:
    """Each kind of mistake: extra global flags, environment, expected exit code, a phrase the line must hold."""
    (tmp / "tracked.json").write_text(json.dumps(TRACKED))
    settings = {**BASE_SETTINGS, "TRACKED_IMAGES": str(tmp / "tracked.json")}
    (tmp / "broken.json").write_text('{"Values": {"IMPORT_QUEUE": "x",}')
    (tmp / "latin1.json").write_bytes(b'{"Values": {"A": "\xe9"}}')
    (tmp / "folder.json").mkdir(exist_ok=True)
    reachable_nowhere = {**settings, "AzureWebJobsStorage": unreachable_storage()}
    return {
        "storage unreachable": ([], reachable_nowhere, 2, "make stack-up"),
        "no storage setting": ([], settings, 2, "AzureWebJobsStorage"),
        "missing --settings file": (["--settings", str(tmp / "nope.json")], reachable_nowhere, 2, "nope.json"),
        "--settings is a folder": (["--settings", str(tmp / "folder.json")], reachable_nowhere, 2, "folder.json"),
        "--settings not JSON": (["--settings", str(tmp / "broken.json")], reachable_nowhere, 2, "not JSON"),
        "--settings not UTF-8": (["--settings", str(tmp / "latin1.json")], reachable_nowhere, 2, "UTF-8"),
        "malformed number": ([], {**reachable_nowhere, "IMPORT_MAX_ATTEMPTS": "six"}, 2, "IMPORT_MAX_ATTEMPTS"),
        "target not an id": ([], {**reachable_nowhere, "TARGET_REGISTRY": "myregistry.azurecr.io"}, 2,
                             "TARGET_REGISTRY"),
    }


MISTAKES = ["storage unreachable", "no storage setting", "missing --settings file", "--settings is a folder",
            "--settings not JSON", "--settings not UTF-8", "malformed number", "target not an id"]


@pytest.mark.parametrize("mistake", MISTAKES)
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_says_what_is_wrong_in_one_line(command, mistake, tmp_path):
    flags, env, code, phrase = mistake_environments(tmp_path)[mistake]
    done = run([*flags, *COMMANDS[command]], env, tmp_path)
    line = one_line_error(done)
    assert done.returncode == code, (done.returncode, line)
    assert phrase in line, line
    assert not done.stdout.strip(), done.stdout


@pytest.mark.parametrize("argv, phrase", [
    (["refresh", "--config", "missing.json"], "--config missing.json: No such file"),
    (["refresh", "--config", "."], "--config .: Is a directory"),
    (["refresh", "--dry-run", "--config", "missing.json"], "--config missing.json"),
    (["status", "a/b"], "is not a request id"),
    (["status", "x" * 300], "is not a request id"),
    (["status", "https://app.example/api/imports/a%2Fb?code=k"], "is not a request id"),
    (["import", "-n", "nosuchregistry", "--source", "nginx"], "no registry of that name"),
    (["import", "-n", "myregistry", "--source", "nginx", "--id", "refresh-x"], "only the app's own"),
    (["import", "-n", "myregistry", "--source", "nginx", "-p", "hunter2"], "--credential NAME"),
])
def test_bad_arguments_are_one_line_before_any_lookup(argv, phrase, tmp_path):
    """Storage is unreachable: a message about storage would mean the argument was not checked first."""
    (tmp_path / "tracked.json").write_text(json.dumps(TRACKED))
    done = run(argv, {**BASE_SETTINGS, "AzureWebJobsStorage": unreachable_storage()}, tmp_path)
    line = one_line_error(done)
    assert done.returncode == 2 and phrase in line and "connect" not in line, line


@pytest.mark.parametrize("argv", [["redrive", "--id", "a b"], ["list", "--since", "yesterday-ish"],
                                  ["list", "--state", "done"]])
def test_bad_flag_values_are_usage_errors_naming_the_flag(argv, tmp_path):
    done = run(argv, {**BASE_SETTINGS, "AzureWebJobsStorage": unreachable_storage()}, tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"argument {argv[1]}" in done.stderr.strip().splitlines()[-1], done.stderr


def test_debug_shows_the_traceback(tmp_path):
    env = {**BASE_SETTINGS, "AzureWebJobsStorage": unreachable_storage()}
    quiet = run(["list"], env, tmp_path, process=True)
    loud = run(["--debug", "list"], env, tmp_path, process=True)
    assert quiet.returncode == 2 and "make stack-up" in one_line_error(quiet)  # as the matrix found it in-process
    assert "Traceback" in loud.stderr and loud.returncode != 0


def test_the_wrapper_without_a_virtual_environment_says_make_venv(tmp_path):
    (tmp_path / "bin").mkdir()
    wrapper = tmp_path / "bin" / "acr-import"
    shutil.copy(ACR_IMPORT, wrapper)
    for argv in (["list"], ["status", "x"], ["--help"]):
        done = run(argv, {}, tmp_path, wrapper=wrapper)
        line = one_line_error(done)
        assert done.returncode == 2 and "make venv" in line and str(tmp_path) in line, line



@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_python_m_cli_without_the_virtual_environment_says_which_python_to_use(command, tmp_path):
    """`python -m cli` with a Python that has none of the app's packages (the .venv not active; `-S` stands for
    it): one line naming bin/acr-import and the .venv's Python, not two tracebacks."""
    env = {**BASE_SETTINGS, "AzureWebJobsStorage": unreachable_storage()}
    done = subprocess.run([sys.executable, "-S", "-m", "cli", *COMMANDS[command]], cwd=tmp_path,
                          env=clean_env(env, tmp_path), capture_output=True, text=True, timeout=120)
    line = one_line_error(done)
    assert done.returncode == 2 and "has no module" in line, line
    assert f"{layout.REPO_ROOT}/bin/acr-import" in line and ".venv/bin/python -m cli" in line, line

# --- what scripts rely on, against the local stack -----------------------------------------------------------
def cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=layout.REPO_ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)


def test_no_wait_prints_only_the_request_id_on_stdout(app_env):
    done = cli("import", "-n", "myregistry", "--source", "nginx:1.27", "-t", "web:script", "--no-wait")
    assert done.returncode == 0, done.stderr
    request_id = done.stdout.strip()
    assert done.stdout == request_id + "\n" and request_id.startswith("cli-")
    assert f"queued {request_id}" in done.stderr and f"status {request_id} --wait" in done.stderr
    shown = json.loads(cli("status", request_id, "--json").stdout)
    assert shown["id"] == request_id and shown["targetTags"] == ["web:script"]


def test_a_request_that_never_reached_the_queue_leaves_no_row_and_its_id_stays_free(app_env):
    from shared.azure.status import StatusStore

    request_id = f"never-sent-{uuid.uuid4().hex[:8]}"
    missing_queue = cli("import", "-n", "myregistry", "--source", "nginx:1.27", "--id", request_id, "--no-wait",
                        IMPORT_QUEUE=f"nosuchqueue{uuid.uuid4().hex[:8]}")
    line = one_line_error(missing_queue)
    assert missing_queue.returncode == 2 and "does not exist" in line and "Nothing was queued" in line
    assert StatusStore(app_env["IMPORT_STATUS_TABLE"]).get(request_id) is None
    assert cli("status", request_id).returncode == 1
    retried = cli("import", "-n", "myregistry", "--source", "nginx:1.27", "--id", request_id, "--no-wait")
    assert retried.returncode == 0 and retried.stdout.strip() == request_id, retried.stderr


@pytest.mark.parametrize("columns", [60, 80, 120, 200])
def test_list_fits_the_terminal_and_json_keeps_every_value(app_env, columns):
    from shared.azure.status import StatusStore
    from shared.core.outcome import State

    store = StatusStore(app_env["IMPORT_STATUS_TABLE"])
    long_id = "wide-" + "i" * 100
    long_reason = "the source registry answered UNAUTHORIZED for a very long reason " * 5
    store.transition(long_id, State.FAILED, reason=long_reason, source="docker.io/library/" + "n" * 80 + ":1.27",
                     target_tags=["t" * 90 + ":1"])
    store.transition("short", State.SUCCEEDED, reason="imported", source="nginx:1.27", target_tags=["web:1"])
    listed = cli("list", COLUMNS=str(columns))
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 3 and all(len(line) <= columns for line in lines), lines
    assert "…" in lines[1] and "short" in lines[2]
    rows = json.loads(cli("list", "--json", COLUMNS=str(columns)).stdout)
    wide = next(r for r in rows if r["id"] == long_id)
    assert wide["reason"] == long_reason


def test_list_shows_every_value_whole_when_the_terminal_is_wide_enough(app_env):
    from shared.azure.status import StatusStore
    from shared.core.outcome import State

    StatusStore(app_env["IMPORT_STATUS_TABLE"]).transition("roomy", State.FAILED, reason="a reason of modest size")
    line = cli("list", COLUMNS="300").stdout.splitlines()[1]
    assert line.endswith("a reason of modest size") and "…" not in line


@pytest.mark.parametrize("argv", [["list"], ["status", "nothing-here"], ["prune"], ["redrive"],
                                  ["redrive", "--dry-run"], ["import", "-n", "myregistry", "--source", "nginx"]])
def test_storage_the_app_has_not_set_up_yet_is_one_line_or_an_empty_answer(app_env, argv):
    """A first run before the app created its queues and table (a new name in IMPORT_QUEUE/IMPORT_STATUS_TABLE)."""
    fresh = uuid.uuid4().hex[:8]
    done = cli(*argv, IMPORT_QUEUE=f"fresh{fresh}", IMPORT_STATUS_TABLE=f"fresh{fresh}")
    if argv[0] in ("list", "prune"):  # nothing to show or delete
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        return
    line = one_line_error(done)
    if argv[0] == "status":
        assert done.returncode == 1 and "no request 'nothing-here'" in line
    elif argv[0] == "redrive":
        assert done.returncode == 2 and "QueueNotFound: check IMPORT_QUEUE" in line
    else:
        assert done.returncode == 2 and "does not exist" in line and "Nothing was queued" in line
