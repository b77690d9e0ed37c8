"""python -m benchmarks [NAME ...]: run benchmarks (all by default) and update docs/benchmarks.md."""

from __future__ import annotations

import importlib
import sys

from benchmarks.isolation import own_stack, remove_own_stack
from benchmarks.report import DOC, write_section

ALL = ("importtime", "latency", "refresh", "cost", "scaleout", "ops")


def main(argv: list[str]) -> int:
    owned = own_stack()  # before any benchmark imports dev.layout
    try:
        for name in argv or ALL:
            module = importlib.import_module(f"benchmarks.{name}")
            print(f"running {name} ...", flush=True)
            body = module.run()
            write_section(name, module.TITLE, body)
            print(body)
    finally:
        if owned:
            remove_own_stack()
    print(f"written to {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
