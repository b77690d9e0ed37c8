"""Start and stop `python -m dev.azure_standin` for a test module, or borrow one already serving (the
session stack's): ports are fixed by layout, so there is one stand-in per machine at a time."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import requests

from dev import layout
from dev.ca import ensure_ca


def _ports_free() -> bool:
    for port in (layout.AZURE_STANDIN_PORT, layout.IDENTITY_PORT, *(acr.port for acr in layout.ACRS)):
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((layout.HOST, port))
            except OSError:
                return False
    return True


def wait_for_free_ports(timeout: float) -> None:
    """The ports are fixed by layout, so another suite's stand-in must finish before ours starts."""
    deadline = time.monotonic() + timeout
    while not _ports_free():
        if time.monotonic() > deadline:
            raise RuntimeError(f"ports {layout.AZURE_STANDIN_PORT}/{layout.IDENTITY_PORT} (or an ACR login "
                               "server's) stayed busy")
        time.sleep(0.5)


def is_healthy() -> bool:
    try:
        return requests.get(f"{layout.CONTROL_ENDPOINT}/health", verify=str(layout.CA_CERT),
                            timeout=1).status_code == 200
    except (requests.RequestException, OSError):
        return False


@contextmanager
def standin_for_module(data_plane: str = "memory") -> Iterator[subprocess.Popen | None]:
    """A stand-in using `data_plane`: the one already serving if any (its setting is switched and reset
    afterwards), else a process of our own (yielded, so the caller can check how it exited)."""
    ensure_ca()
    if is_healthy():
        from dev.azure_standin.control import StandinControl

        control = StandinControl()
        control.reset()
        control.update_settings(data_plane=data_plane)
        try:
            yield None
        finally:
            control.reset()
        return
    with running_standin(data_plane) as proc:
        yield proc


@contextmanager
def running_standin(data_plane: str = "memory", timeout: float = 15,
                    port_wait: float = 120) -> Iterator[subprocess.Popen]:
    ensure_ca()
    wait_for_free_ports(port_wait)
    proc = subprocess.Popen([sys.executable, "-m", "dev.azure_standin", "--data-plane", data_plane],
                            cwd=layout.REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"stand-in exited: {proc.stderr.read()[-2000:]}")
            try:
                if requests.get(f"{layout.CONTROL_ENDPOINT}/health", verify=str(layout.CA_CERT),
                                timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("stand-in did not become healthy")
            time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()
