"""The whole local stack in one command: `python -m dev.stack up|down|status`.

Services run detached (their own session) so `make stack-up` can return; pid files under
`STATE_DIR/pids` remember them, with the process start time so a recycled pid is never mistaken for ours.
`up()` is idempotent: a healthy service is reused, a stale pid file is cleared, a dead service restarted.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import requests

from dev import ca, dockerhub_token, hub_front, layout, registries

PID_DIR = layout.STATE_DIR / "pids"
LOG_DIR = layout.STATE_DIR / "logs"
READY_TIMEOUT = 30.0
STOP_GRACE = 5.0


class StackError(RuntimeError):
    pass


@dataclass(frozen=True)
class Service:
    name: str
    command: Callable[[], list[str]]
    is_ready: Callable[[], bool]
    prepare: Callable[[], object] | None = None

    @property
    def pid_file(self) -> Path:
        return PID_DIR / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return LOG_DIR / f"{self.name}.log"


def _registry_service(spec: registries.RegistrySpec) -> Service:
    return Service(registries.service_name(spec), lambda: registries.command(spec),
                   lambda: registries.is_ready(spec), lambda: registries.write_config(spec))


def _standin_ready() -> bool:
    try:
        return requests.get(f"{layout.CONTROL_ENDPOINT}/health", verify=str(layout.CA_CERT),
                            timeout=1).status_code == 200
    except (requests.RequestException, OSError):
        return False


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False


def services() -> list[Service]:
    """Every service of the stack, in start order; missing optional parts are skipped with a warning."""
    found = [_registry_service(spec) for spec in registries.all_specs()]
    found.append(Service("dockerhub-token", lambda: [sys.executable, "-m", "dev.dockerhub_token"],
                         dockerhub_token.is_ready))
    found.append(Service("dockerhub-front", lambda: [sys.executable, "-m", "dev.hub_front"], hub_front.is_ready))
    if _module_exists("dev.azure_standin"):
        found.append(Service("azure-standin", lambda: [sys.executable, "-m", "dev.azure_standin"], _standin_ready))
    else:
        warnings.warn("dev.azure_standin is missing: the ARM/ACR stand-in is not started", stacklevel=2)
    if _module_exists("dev.azurite"):
        azurite = importlib.import_module("dev.azurite")
        found.append(Service("azurite", azurite.command, azurite.is_ready))
        found.append(Service("azurite-identity", azurite.identity_command, azurite.identity_is_ready))
    else:
        warnings.warn("dev.azurite is missing: Azurite is not started", stacklevel=2)
    return found


def select(names: Sequence[str] | None) -> list[Service]:
    every = services()
    if names is None:
        return every
    known = {s.name: s for s in every}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise StackError(f"unknown service(s) {unknown}; known: {sorted(known)}")
    return [known[n] for n in names]


# --- processes ---------------------------------------------------------------------------------------
def _start_time(pid: int) -> str | None:
    """The kernel's start time of a process (field 22 of /proc/PID/stat), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] == "Z" else fields[19]


def _recorded_pid(service: Service) -> int | None:
    """The pid from the service's pid file if that very process still runs; clears stale files."""
    try:
        pid_text, started = service.pid_file.read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        service.pid_file.unlink(missing_ok=True)
        return None
    if _start_time(pid) != started:
        service.pid_file.unlink(missing_ok=True)
        return None
    return pid


def _launch(service: Service) -> subprocess.Popen:
    if service.prepare is not None:
        service.prepare()
    PID_DIR.mkdir(parents=True, exist_ok=True)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **layout.stack_env(), "PYTHONPATH": str(layout.REPO_ROOT), "PYTHONUNBUFFERED": "1"}
    with open(service.log_file, "ab") as log:
        process = subprocess.Popen(service.command(), cwd=layout.REPO_ROOT, env=env, stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    service.pid_file.write_text(f"{process.pid} {_start_time(process.pid)}\n")
    return process


def _log_tail(service: Service, lines: int = 15) -> str:
    try:
        return "\n".join(service.log_file.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_ready(service: Service, process: subprocess.Popen | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.is_ready():
            return
        if process is not None and process.poll() is not None:
            service.pid_file.unlink(missing_ok=True)
            raise StackError(f"{service.name} exited with status {process.returncode} before it was ready; "
                             f"see {service.log_file}:\n{_log_tail(service)}")
        time.sleep(0.1)
    raise StackError(f"{service.name} was not ready within {timeout:.0f}s; see {service.log_file}:\n"
                     f"{_log_tail(service)}")


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    members = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = stat_file.read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(stat_file.parent.name))
    return members


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)  # its own session: the group is the service and its children


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # if it was our child, so it leaves no zombie


def stop_service(service: Service, grace: float = STOP_GRACE) -> bool:
    """SIGTERM the service's process group, SIGKILL what is left after `grace`; True when it was running."""
    pid = _recorded_pid(service)
    if pid is None:
        return False
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while group_members(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.05)
    if group_members(pid):
        _signal_group(pid, signal.SIGKILL)
        while group_members(pid) and time.monotonic() < deadline + grace:
            time.sleep(0.05)
    _reap(pid)
    service.pid_file.unlink(missing_ok=True)
    return True


# --- the stack ---------------------------------------------------------------------------------------
def up(names: Sequence[str] | None = None, *, timeout: float = READY_TIMEOUT) -> list[str]:
    """Start what is not already running and healthy; returns the names of the services it started."""
    ca.ensure_ca()
    chosen = select(names)
    launched: list[tuple[Service, subprocess.Popen | None]] = []
    for service in chosen:
        pid = _recorded_pid(service)
        if pid is None and service.is_ready():
            print(f"{service.name}: already served by a process this stack did not start; reusing it",
                  file=sys.stderr)
            continue
        if pid is not None:
            launched.append((service, None))  # ours and running: just wait until it is ready
            continue
        launched.append((service, _launch(service)))
    started = []
    try:
        for service, process in launched:
            _wait_ready(service, process, timeout)
            if process is not None:
                started.append(service.name)
    except StackError:
        for service, process in launched:
            if process is not None:
                stop_service(service)
        raise
    return started


def down(names: Sequence[str] | None = None) -> list[str]:
    """Stop the stack's services (those with live pid files); returns the names stopped."""
    chosen = select(names) if names is not None else _all_known()
    return [service.name for service in reversed(chosen) if stop_service(service)]


def _all_known() -> list[Service]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        known = services()
    names = {s.name for s in known}
    # pid files of services whose module vanished since they were started still get stopped
    leftovers = [Service(p.stem, list, lambda: False) for p in sorted(PID_DIR.glob("*.pid")) if p.stem not in names]
    return known + leftovers


def status() -> dict[str, str]:
    """Service name -> `running (pid N)`, `ready (not started by the stack)`, or `stopped`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        chosen = services()
    report = {}
    for service in chosen:
        pid = _recorded_pid(service)
        ready = service.is_ready()
        if pid is not None:
            report[service.name] = f"running (pid {pid}){'' if ready else ', not ready'}"
        else:
            report[service.name] = "ready (not started by the stack)" if ready else "stopped"
    return report


@contextlib.contextmanager
def running(names: Sequence[str] | None = None, *, timeout: float = READY_TIMEOUT) -> Iterator[list[str]]:
    """The stack (or some services) for the duration of a block; stops only what it started itself."""
    started = up(names, timeout=timeout)
    try:
        yield started
    finally:
        down(started)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ("up", "down", "status"):
        print("usage: python -m dev.stack up|down|status [service ...]", file=sys.stderr)
        return 2
    names = args[1:] or None
    try:
        if args[0] == "up":
            started = up(names)
            print(f"stack up ({len(started)} started); trust {layout.CA_CERT}; logs in {LOG_DIR}")
        elif args[0] == "down":
            print(f"stopped: {', '.join(down(names)) or 'nothing was running'}")
        else:
            for name, state in status().items():
                print(f"{name:24} {state}")
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
