"""Writing results: one section per benchmark in docs/benchmarks.md, replaced in place on each run."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = """# Benchmarks

Measured with `make bench` (`python -m benchmarks [name ...]`). Each section says the machine and the date
it was measured on. Comparisons are made side by side in one run and given as ratios, because these
machines are noisy; absolute times are for orientation only. Each run starts a stack of its own (a fresh
folder and free ports: `benchmarks/isolation.py`), so a stack a developer or a test session has running is
left alone.
"""


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
        cpu = model
    except (OSError, StopIteration):
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return f"{os.cpu_count()} cores ({cpu}){memory}, Python {platform.python_version()}, {platform.system()}"


def stamp() -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=DOC.parent.parent).stdout.strip()
    return f"_Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}; commit {commit or 'n/a'}._"


def write_section(name: str, title: str, body: str) -> None:
    text = DOC.read_text() if DOC.exists() else HEADER
    block = f"<!-- bench:{name} -->\n## {title}\n\n{stamp()}\n\n{body.strip()}\n<!-- /bench:{name} -->"
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)
