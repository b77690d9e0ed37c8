"""`status ID [--wait]`, `list [--state ...] [--since ...]`, `prune`: the status table, as a person wants it.

Following a request (`import` without `--no-wait`, `status --wait`) prints a line whenever its state or
reason changes: the transitions, retries, and the manifests ACR still has pending for a long import.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TextIO

from cli.connection import table_service
from cli.terminal import printable
from shared import app_context
from shared.azure.status import StatusRecord, StatusStore, UnreadableRow
from shared.core.outcome import State
from shared.core.request_ids import UnsafeRequestId, checked_request_id
from shared.core.settings import load_settings
from shared.imports.http_api import status_body

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_TIMEOUT = 0, 1, 2, 3
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_STATUS_URL = re.compile(r"^[a-z][a-z0-9+.-]*://[^/]*/(?:.*/)?imports/([^/?#]*)/?(?:[?#].*)?$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class CliError(ValueError):
    """A problem the person can fix; printed as `error: ...`, exit 2."""


def status_store() -> StatusStore:
    return app_context.status_store(load_settings(), table_service())


def exit_code(state: State) -> int:
    return EXIT_OK if state.ended_well else EXIT_FAILED


@dataclass
class Follower:
    """Prints what changed since the last look, with the time since following began."""

    out: TextIO = sys.stdout
    _seen: tuple[object, ...] = ()
    _began: float = 0.0

    def show(self, record: StatusRecord) -> None:
        key = (record.state, record.reason, record.attempts, record.checks)
        if key == self._seen:
            return
        # the worker keeps the previous reason when it moves on; do not show it again under the new state
        stale = bool(self._seen) and record.state != self._seen[0] and record.reason == self._seen[1]
        self._seen = key
        elapsed = time.monotonic() - self._began
        attempt = f"attempt {record.attempts}" if record.attempts else ""
        detail = "; ".join(part for part in (attempt, "" if stale else record.reason) if part)
        print(f"{elapsed:6.1f}s  {record.state!s:10} {printable(detail)}", file=self.out, flush=True)

    def follow(self, store: StatusStore, request_id: str, *, timeout: float | None,
               poll_seconds: float = 0.5) -> StatusRecord | None:
        """Look until the request ends (its record), or `timeout` passes (None)."""
        self._began = time.monotonic()
        deadline = None if timeout is None else self._began + timeout
        while True:
            record = store.get(request_id)
            if record is not None:
                self.show(record)
                if record.state.terminal:
                    return record
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(poll_seconds)


def summary_lines(record: StatusRecord) -> list[str]:
    """The row for a person; every stored field escaped (see cli/terminal.py)."""
    return [printable(line) for line in _summary_lines(record)]


def _summary_lines(record: StatusRecord) -> list[str]:
    targets = [*record.target_tags, *(f"{r} (untagged)" for r in record.untagged_target_repositories)]
    lines = [f"id:         {record.id}", f"state:      {record.state}", f"source:     {record.source}",
             f"target:     {record.target}", f"tags:       {', '.join(targets)}", f"mode:       {record.mode}",
             f"attempts:   {record.attempts}"]
    if record.digest:
        lines.append(f"digest:     {record.digest}" + (f" ({record.platforms} platforms)" if record.platforms else ""))
    if record.referrers:
        lines.append(f"referrers:  {record.referrers}")
    if record.backup_tags:
        lines.append(f"backups:    {', '.join(record.backup_tags)}")
    if record.reason:
        lines.append(f"reason:     {record.reason}")
    if record.code:
        lines.append(f"code:       {record.code} ({record.kind})")
    lines.append("history:")
    shown = [t for i, t in enumerate(record.transitions)
             if i == 0 or t.get("state") != record.transitions[i - 1].get("state")]  # one line per state change
    lines += [f"  {t.get('at', '')[:23]}  {t.get('state', '')}" for t in shown]
    return lines


def request_id_argument(text: str) -> str:
    """A request id as typed, or pasted with the HTTP API's status URL around it (`.../api/imports/<id>`).
    Checked here, so a mistyped id is a clear error and never a table exception."""
    candidate = text.strip()
    pasted = _STATUS_URL.search(candidate)
    if pasted:
        candidate = pasted.group(1)
    try:
        return checked_request_id(candidate)
    except UnsafeRequestId as err:
        raise CliError(f"{printable(json.dumps(text[:200]))} is not a request id: {err}") from None


def request_id_type(text: str) -> str:
    """`request_id_argument` for argparse (a usage error naming the flag)."""
    try:
        return request_id_argument(text)
    except CliError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def show_status(args: argparse.Namespace) -> int:
    request_id = request_id_argument(args.id)
    store = status_store()
    try:
        record = store.get(request_id)
    except UnreadableRow as err:  # written by something else (a hand edit, another version): not the CLI's bug
        raise CliError(f"{err}; fix or delete the row in the status table") from None
    if record is None:
        print(f"error: no request {request_id!r} in the status table (not yet picked up, never sent, or pruned "
              "after STATUS_RETENTION_DAYS)", file=sys.stderr)
        return EXIT_FAILED
    if args.wait and not record.state.terminal:
        follower = Follower(out=sys.stderr if args.json else sys.stdout)
        record = follower.follow(store, request_id, timeout=args.timeout) or store.get(request_id) or record
    if args.json:
        print(json.dumps(status_body(record), indent=2))
    else:
        print("\n".join(summary_lines(record)))
    if args.wait and not record.state.terminal:
        return EXIT_TIMEOUT
    return exit_code(record.state) if record.state.terminal else EXIT_OK


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`30m`, `2h`, `7d`, `1w` ago, or an ISO date/time (UTC when it names no zone)."""
    now = now or datetime.now(UTC)
    match = _RELATIVE.match(text.strip().lower())
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a time ago (30m, 2h, 7d) nor an ISO date/time") \
            from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def state_name(text: str) -> State:
    try:
        return State(text.lower())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a state; states are "
                                         f"{', '.join(s.value for s in State)}") from None


_HEADER = ("UPDATED (UTC)", "STATE", "TRIES", "ID", "SOURCE", "TARGET", "REASON")
# when the table is wider than the terminal, cells are cut in this order (REASON first, the id last), each to
# no less than its floor; what is cut ends in "…" and `--json` has it in full
_SHRINK_ORDER = ((6, 8), (4, 12), (5, 12), (3, 12))
_GAP = 2


def table(records: list[StatusRecord], width: int | None = None) -> list[str]:
    """The rows as aligned text no wider than `width` (default: the terminal's, COLUMNS when set)."""
    width = width or shutil.get_terminal_size().columns
    rows: list[tuple[str, ...]] = [_HEADER]
    for r in records:
        targets = ", ".join([*r.target_tags, *r.untagged_target_repositories])
        rows.append(tuple(printable(cell) for cell in (r.updated_at[:19].replace("T", " "), str(r.state),
                                                       str(r.attempts), r.id, r.source, targets, r.reason)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADER))]
    for column, floor in _SHRINK_ORDER:
        excess = sum(widths) + _GAP * (len(widths) - 1) - width
        if excess <= 0:
            break
        widths[column] = max(floor, widths[column] - excess)
    lines = []
    for row in rows:
        cells = [_cut(cell, w).ljust(w) for cell, w in zip(row, widths, strict=True)]
        lines.append((" " * _GAP).join(cells).rstrip()[:width])
    return lines


def _cut(cell: str, width: int) -> str:
    return cell if len(cell) <= width else cell[:max(width - 1, 0)] + "…"


def list_requests(args: argparse.Namespace) -> int:
    states = set(args.state or ())
    records = status_store().list(state=next(iter(states)) if len(states) == 1 else None, since=args.since)
    records = [r for r in records if not states or r.state in states][-args.limit:]
    if args.json:
        print(json.dumps([status_body(r) for r in records], indent=2))
    elif records:
        print("\n".join(table(records)))
    else:
        print("no requests match", file=sys.stderr)
    return EXIT_OK


def prune(args: argparse.Namespace) -> int:
    cutoff = args.older_than or datetime.now(UTC) - timedelta(days=load_settings().status_retention_days)
    if args.older_than is None and load_settings().status_retention_days <= 0:
        print("STATUS_RETENTION_DAYS is 0: rows are kept forever; give --older-than to prune anyway")
        return EXIT_OK
    deleted = status_store().prune(cutoff)
    print(f"deleted {deleted} rows last updated before {cutoff.isoformat(timespec='seconds')}")
    return EXIT_OK


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = commands.add_parser("status", help="show one request's state, reason and history")
    status.add_argument("id", help="the request id (printed by `import`, returned by the HTTP API), or the "
                                   "HTTP API's statusUrl")
    status.add_argument("--wait", action="store_true", help="follow it until it ends (exit 1 if it failed)")
    status.add_argument("--timeout", type=float, help="with --wait: stop following after this many seconds (exit 3)")
    status.add_argument("--json", action="store_true", help="print the row as JSON (the HTTP API's shape)")
    status.set_defaults(handler=show_status)

    listing = commands.add_parser("list", help="list requests as a table, newest last")
    listing.add_argument("--state", type=state_name, action="append",
                         help="only this state (repeat for several): " + ", ".join(s.value for s in State))
    listing.add_argument("--since", type=parse_since, help="updated since: 30m, 2h, 7d, or an ISO date/time")
    listing.add_argument("--limit", type=int, default=200, help="at most this many, the newest (default 200)")
    listing.add_argument("--json", action="store_true", help="print the rows as JSON")
    listing.set_defaults(handler=list_requests)

    pruning = commands.add_parser("prune", help="delete status rows older than the retention (the app does this "
                                                "daily with STATUS_RETENTION_DAYS)")
    pruning.add_argument("--older-than", type=parse_since, metavar="AGE",
                         help="e.g. 90d, or an ISO date (default: STATUS_RETENTION_DAYS ago)")
    pruning.set_defaults(handler=prune)
