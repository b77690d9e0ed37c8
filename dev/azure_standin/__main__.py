"""`python -m dev.azure_standin [--data-plane registry|memory]`: serve until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading

from dev import layout
from dev.azure_standin.server import Standin
from dev.ca import ensure_ca


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-plane", choices=("registry", "memory"),
                        default=os.environ.get("AZURE_STANDIN_DATA_PLANE", "registry"),
                        help="registry: copy between the stack's docker-registry processes (default); "
                             "memory: an in-memory catalog, for tests that run without registries. "
                             "The control setting `data_plane` switches it at run time.")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s azure-standin %(name)s %(levelname)s %(message)s")
    ensure_ca()
    standin = Standin(args.data_plane)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    standin.start()
    logging.info("serving ARM on %s, managed identity on %s (data plane: %s)",
                 layout.ARM_ENDPOINT, layout.IDENTITY_ENDPOINT, args.data_plane)
    stop.wait()
    standin.stop()
    logging.info("stopped")


if __name__ == "__main__":
    main()
