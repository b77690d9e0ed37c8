"""GET /api/ops/replication: what replication on push received and did, from its journal
(shared/replication/journal.py): counts of the last day's events by outcome, and the newest events."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta

from shared.imports.http_api import ApiResponse
from shared.ops.answers import bad_query, limit_query
from shared.replication.journal import OUTCOMES, ReplicationJournal

DAY = timedelta(days=1)
SCAN_ROWS = 20_000  # journal rows counted at most (the Outcome column only)


def replication(request_url: str, journal: ReplicationJournal, now: datetime) -> ApiResponse:
    limit = limit_query(request_url, "GET /api/ops/replication")
    if isinstance(limit, list):
        return bad_query(limit)
    outcomes, truncated = journal.outcomes_since(now - DAY, SCAN_ROWS)
    counts = {"received": len(outcomes), **{name: outcomes.count(name) for name in OUTCOMES}}
    events = []
    for entry in journal.newest(limit):
        shown = asdict(entry)
        shown["imports"] = list(entry.imports)
        shown["importsOmitted"] = shown.pop("imports_omitted")
        shown["unreadable"] = list(entry.unreadable)
        events.append(shown)
    return ApiResponse(200, {"counts": counts, "truncated": truncated, "events": events})
