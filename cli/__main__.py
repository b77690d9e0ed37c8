"""`python -m cli <command>` (or `bin/acr-import <command>`): argparse subcommands over the app's core.

`import`, `status`, `list`, `redrive` (cli/imports.py, cli/status.py, cli/redrive.py) and `refresh`.

Reads the same app settings as the Function App: the environment, filled in from `--settings FILE` or else
./local.settings.json when there is one (as the Functions tools do); says on stderr which it used.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from cli import imports, redrive, status
from cli.problems import explain
from shared import app_context
from shared.core.settings import load_settings
from shared.refresh.run import ERROR, SKIPPED, UNCHANGED, refresh_log, run_refresh

DEFAULT_SETTINGS_FILE = "local.settings.json"  # in the current folder, as the Functions tools read it


def _apply_settings_file(path: str | None) -> str:
    """Values of a local.settings.json (`--settings`, else ./local.settings.json when there is one), without
    overriding the environment (as Core Tools does). Returns what was used, for the user to see."""
    if not path:
        if not Path(DEFAULT_SETTINGS_FILE).is_file():
            return f"settings: the environment (no ./{DEFAULT_SETTINGS_FILE})"
        path = DEFAULT_SETTINGS_FILE
    values = json.loads(Path(path).read_text()).get("Values", {})
    for key, value in values.items():
        os.environ.setdefault(key, str(value))
    return f"settings: {path} (the environment wins where both set a value)"


def refresh(args: argparse.Namespace) -> int:
    settings = load_settings()
    config_text = Path(args.config).read_text() if args.config else None
    queues = None if args.dry_run else app_context.import_queues(settings)
    print(f"checking the tracked tags in {args.config or 'TRACKED_IMAGES'} against their targets...",
          file=sys.stderr, flush=True)
    result = run_refresh(settings, app_context.registry_client(settings), app_context.identity(settings),
                         queues=queues, refresh_log=None if args.dry_run else refresh_log(settings),
                         dry_run=args.dry_run, config_text=config_text, progress=_progress_on(sys.stderr))
    if args.json:
        print(json.dumps({"summary": result.summary.as_log(),
                          "imports": [p.request for p in result.plan.imports],
                          "checks": [c.__dict__ for c in result.plan.checks]}, indent=2))
        return 1 if result.summary.errors else 0
    verb = "would import" if args.dry_run else "enqueued"
    for planned in result.plan.imports:
        check = planned.check
        print(f"{verb:13} {check.source} -> {check.target}  ({check.status}: {check.reason})")
    for check in result.plan.checks:
        if check.status in (SKIPPED, ERROR) or (args.verbose and check.status == UNCHANGED):
            print(f"{check.status:13} {check.source} -> {check.target}  ({check.reason})")
    for problem in result.plan.problems:
        print(f"{'problem':13} {problem}")
    s = result.summary
    limits = ", ".join(f"{h}: {r}" for h, r in s.rate_limit_remaining.items()) or "none reported"
    print(f"checked {s.checked}, changed {s.changed}, missing {s.missing}, referrers {s.referrers}, "
          f"unchanged {s.unchanged}, "
          f"skipped {s.skipped}, errors {s.errors}; rate limit remaining: {limits}"
          + (" (dry run: nothing enqueued)" if args.dry_run else f"; enqueued {s.enqueued}"))
    return 1 if s.errors else 0


def _progress_on(stream: TextIO) -> Callable[[int, int], None] | None:
    """`checked 12/40 tags` rewritten in place on a terminal; nothing in a pipe or a log (each result line
    and the summary say it all there)."""
    if not stream.isatty():
        return None

    def show(done: int, total: int) -> None:
        stream.write(f"\rchecked {done}/{total} tags" + ("\n" if done == total else ""))
        stream.flush()

    return show


def _configure_logging(debug: bool) -> None:
    """The app's log lines are for its logs: structured JSON (the refresh summary, settings events) that App
    Insights and log queries read, not a person at a terminal. The CLI says what happened in its own words
    (result lines, one summary line, errors as `error: ...`); `--debug` shows the log lines on stderr too."""
    if debug:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
        for noisy in ("azure", "urllib3"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    else:
        logging.getLogger().addHandler(logging.NullHandler())  # else Python's last resort prints warnings


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog=os.environ.get("ACR_IMPORT_PROG", "python -m cli"),
                                  description="acr-importer operator commands")
    top.add_argument("--settings", help="a local.settings.json whose Values fill unset environment variables "
                     "(default: ./local.settings.json when there is one)")
    top.add_argument("--debug", action="store_true",
                     help="show the Python traceback of an error, and the app's log lines on stderr")
    commands = top.add_subparsers(dest="command", required=True)
    run = commands.add_parser("refresh", help="compare tracked tags with the target and enqueue what changed")
    run.add_argument("--dry-run", action="store_true", help="print the plan (what and why) without enqueueing")
    run.add_argument("--config", help="tracked images file (default: the TRACKED_IMAGES setting)")
    run.add_argument("--json", action="store_true", help="print the plan as JSON")
    run.add_argument("-v", "--verbose", action="store_true", help="also list unchanged tags")
    run.set_defaults(handler=refresh)
    imports.add_command(commands)
    status.add_commands(commands)
    redrive.add_command(commands)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    _configure_logging(args.debug)
    try:
        print(_apply_settings_file(args.settings), file=sys.stderr)
        code: int = args.handler(args)  # each command's handler (cli/imports.py ...) returns its exit code
        return code
    except Exception as err:  # one line saying what is wrong and what to do; --debug for the traceback
        if args.debug:
            raise
        problem = explain(err, args)
        print(f"error: {problem.message}", file=sys.stderr)
        return problem.exit_code


if __name__ == "__main__":
    sys.exit(main())
