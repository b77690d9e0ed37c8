"""`python -m dev.runner [--app function_app] [--root DIR] [--once]`: run the app until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from dev import layout
from dev.runner.host import Runner


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dev.runner", description=__doc__)
    parser.add_argument("--app", default="function_app", help="module holding `app = func.FunctionApp()`")
    parser.add_argument("--root", type=Path, default=layout.REPO_ROOT, help="folder with host.json")
    parser.add_argument("--port", type=int, default=layout.RUNNER_PORT, help="Event Grid webhook port")
    parser.add_argument("--once", action="store_true",
                        help="stop as soon as the watched queues are empty and nothing runs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="[%(asctime)s] %(message)s", datefmt="%Y-%m-%dT%H:%M:%S")
    for noisy in ("azure", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with Runner(args.app, root=args.root, http_port=args.port) as runner:
        try:
            if args.once:
                while not stop.is_set() and not runner.wait_idle(timeout=1.0):
                    pass
            else:
                stop.wait()
        except KeyboardInterrupt:
            pass
        logging.info("Stopping: waiting for invocations in flight")
    failed = sum(1 for i in runner.invocations if i.outcome != "ok")
    return 1 if args.once and failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
