"""GET /api/ops/refresh: the scheduled refresh as an operator checks it. Its recent runs (the `run-<time>`
summaries shared/refresh/run.py `RefreshLog.record` writes), the upstreams still backing off after a 429 and
until when, each upstream's remaining rate limit as the latest run saw it (Docker Hub by the host the app
names it with), and REFRESH_SCHEDULE. Stored summaries are read defensively: a field of the wrong type reads
as null, problems as text, each bounded; a run row whose summary does not parse is named in `skipped`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.core.redact import redact_text
from shared.core.settings import Settings
from shared.imports.http_api import ApiResponse
from shared.ops.answers import bad_query, limit_query
from shared.refresh.run import RefreshLog

COUNTS = ("checked", "changed", "missing", "unchanged", "skipped", "errors", "enqueued", "referrers")
MAX_PROBLEMS = 20  # per run shown (the summary row keeps more; `problemsOmitted` counts the rest)
MAX_PROBLEM_CHARS = 1000
MAX_KEY_CHARS = 200  # of a row key named in `skipped`


def refresh(request_url: str, settings: Settings, runs_log: RefreshLog, now: datetime) -> ApiResponse:
    limit = limit_query(request_url, "GET /api/ops/refresh")
    if isinstance(limit, list):
        return bad_query(limit)
    secrets = settings.secret_values()
    latest = runs_log.latest() or {}
    resting = runs_log.backoff_until(now.timestamp())
    remaining = latest.get("rateLimitRemaining")
    runs, unread = runs_log.runs(limit, now)
    return ApiResponse(200, {
        "schedule": settings.refresh_schedule or None,
        "lastRunAt": _text(latest.get("startedAt")),
        "runs": [run_body(run, secrets) for run in runs],
        "skipped": [{"row": key[:MAX_KEY_CHARS], "reason": "its Summary is not a JSON object"} for key in unread],
        "backoff": [{"host": host, "until": datetime.fromtimestamp(until, UTC).isoformat()}
                    for host, until in sorted(resting.items()) if until > now.timestamp()],
        "rateLimits": [{"host": host, "remaining": _count(value)}
                       for host, value in sorted(remaining.items())] if isinstance(remaining, dict) else [],
    })


def run_body(run: dict[str, Any], secrets: tuple[str, ...]) -> dict[str, Any]:
    stored = run.get("problems")
    problems: list[Any] = stored if isinstance(stored, list) else []
    shown = [redact_text(str(p)[:MAX_PROBLEM_CHARS], secrets) for p in problems[:MAX_PROBLEMS]]
    omitted = _count(run.get("problemsOmitted")) or 0
    return {"startedAt": _text(run.get("startedAt")), "durationMs": _count(run.get("durationMs")),
            "dryRun": run.get("dryRun") if isinstance(run.get("dryRun"), bool) else None,
            **{name: _count(run.get(name)) for name in COUNTS},
            "problems": shown, "problemsOmitted": omitted + len(problems) - len(shown)}


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    return value[:64] if isinstance(value, str) else None
