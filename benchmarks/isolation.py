"""A stack of the benchmarks' own (state folder and ports), so a developer's or a test session's stack is neither
disturbed (the stand-in's settings are reset, faults added) nor able to disturb a measurement midway. Must run
before dev.layout is imported: it reads ACR_IMPORTER_STACK_DIR and ACR_IMPORTER_PORT_OFFSET once."""

from __future__ import annotations

import os
import random
import shutil
import socket
import sys
import tempfile

PREFIX = "acr-importer-bench-"
BASE_PORTS = (5001, 5002, 5003, 5004, 5011, 5012, 5013, 7071, 9080, 9443, 9444, 10000, 10001, 10002, 10010, 10011,
              10012)


def own_stack() -> bool:
    """Point dev.layout at a fresh folder and a free port offset; True when this call did (and so owns it)."""
    if "dev.layout" in sys.modules or "ACR_IMPORTER_PORT_OFFSET" in os.environ:
        return False
    folder = tempfile.mkdtemp(prefix=PREFIX)
    for offset in random.sample(range(4100, 8100, 100), 40):
        try:
            for base in BASE_PORTS:
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        os.environ["ACR_IMPORTER_STACK_DIR"] = folder
        os.environ["ACR_IMPORTER_PORT_OFFSET"] = str(offset)
        return True
    shutil.rmtree(folder, ignore_errors=True)
    return False


def remove_own_stack() -> None:
    """Delete the folder own_stack made (its stack is stopped by then)."""
    folder = os.environ.get("ACR_IMPORTER_STACK_DIR", "")
    if PREFIX in folder:
        shutil.rmtree(folder, ignore_errors=True)
