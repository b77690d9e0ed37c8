"""GET /api/ops/health: how the app is doing at a glance. Counts of requests by state over the last hour and
day and 24 hourly buckets of ended and failed requests, from the status rows (two columns read, at most
SCAN_ROWS rows: `truncated` says when more were left); and the depth and oldest-message age of the import,
dead-letter (`-rejected`) and poison queues, each read on its own so one that cannot be read is an `error`
in the answer, not a failed answer."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from shared.azure.queues import ImportQueues, QueueLook
from shared.azure.status import StatusStore
from shared.core.outcome import STATES_BY_NAME
from shared.core.redact import redact_text
from shared.core.settings import Settings
from shared.imports.http_api import ApiResponse
from shared.ops.answers import bad_query, no_query

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
BUCKETS = 24
SCAN_ROWS = 20_000  # status rows one answer reads at most (State and UpdatedAt only)


def health(request_url: str, settings: Settings, status: StatusStore, queues: ImportQueues,
           now: datetime) -> ApiResponse:
    problems = no_query(request_url, "GET /api/ops/health")
    if problems:
        return bad_query(problems)
    rows, truncated = status.recent_states(now - DAY, SCAN_ROWS)
    roles = (("import", settings.import_queue), ("rejected", settings.dead_letter_queue),
             ("poison", settings.poison_queue))
    secrets = settings.secret_values()
    return ApiResponse(200, {"generatedAt": now.isoformat(), **summarise(rows, now), "scanned": len(rows),
                             "truncated": truncated,
                             "queues": [queue_body(role, queues.look(name), now, secrets) for role, name in roles]})


def summarise(rows: Iterable[tuple[str, str]], now: datetime) -> dict[str, Any]:
    """`counts` (requests by their state now, updated in the last hour / day) and `timeline` (whole hours, oldest
    first, the last one the hour now runs in: requests that ended in each, by `updatedAt`, and how many of
    those failed or were rejected). A row whose state or time does not read is left out, and counted in
    `skipped`."""
    last_hour, last_day = dict.fromkeys(STATES_BY_NAME, 0), dict.fromkeys(STATES_BY_NAME, 0)
    first = now.replace(minute=0, second=0, microsecond=0) - (BUCKETS - 1) * HOUR
    ended, failed = [0] * BUCKETS, [0] * BUCKETS
    skipped = 0
    for state_text, updated in rows:
        state, at = STATES_BY_NAME.get(state_text), _time(updated)
        if state is None or at is None:
            skipped += 1
            continue
        if at >= now - DAY:
            last_day[state_text] += 1
        if at >= now - HOUR:
            last_hour[state_text] += 1
        bucket = (at - first) // HOUR
        if state.terminal and 0 <= bucket < BUCKETS:
            ended[bucket] += 1
            failed[bucket] += state.ended_badly
    return {"counts": {"lastHour": last_hour, "lastDay": last_day}, "skipped": skipped,
            "timeline": [{"start": (first + i * HOUR).isoformat(), "end": (first + (i + 1) * HOUR).isoformat(),
                          "ended": ended[i], "failed": failed[i]} for i in range(BUCKETS)]}


def queue_body(role: str, look: QueueLook, now: datetime, secrets: tuple[str, ...]) -> dict[str, Any]:
    age = max(0, int((now - look.oldest).total_seconds())) if look.oldest is not None else None
    return {"role": role, "name": look.name, "depth": look.depth, "oldestAgeSeconds": age,
            "error": redact_text(look.error, secrets) if look.error else None}


def _time(text: str) -> datetime | None:
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo is not None else None
