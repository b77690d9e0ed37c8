"""Timer schedules as the Functions host reads them: six-field NCRONTAB (UTC) or a TimeSpan interval.

NCRONTAB fields are `{second} {minute} {hour} {day} {month} {day-of-week}`. Like NCrontab (and unlike Vixie
cron) a day must match both the day-of-month and the day-of-week field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_MONTHS = {name: i for i, name in enumerate(
    ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), start=1)}
_DAYS = {name: i for i, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}
# (low, high, names) per field, in NCRONTAB order
_FIELDS = ((0, 59, {}), (0, 59, {}), (0, 23, {}), (1, 31, {}), (1, 12, _MONTHS), (0, 6, _DAYS))
_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})$")
_SEARCH_LIMIT = timedelta(days=366 * 5)


class ScheduleError(ValueError):
    """A schedule the host would refuse at start-up."""


@dataclass(frozen=True)
class CronSchedule:
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday

    def next_after(self, moment: datetime) -> datetime:
        """The first occurrence strictly after `moment` (UTC)."""
        t = moment.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
        limit = t + _SEARCH_LIMIT
        while t < limit:
            if t.month not in self.months:
                t = (t.replace(day=1, hour=0, minute=0, second=0) + timedelta(days=32)).replace(day=1)
            elif t.day not in self.days or (t.isoweekday() % 7) not in self.weekdays:
                t = t.replace(hour=0, minute=0, second=0) + timedelta(days=1)
            elif t.hour not in self.hours:
                t = t.replace(minute=0, second=0) + timedelta(hours=1)
            elif t.minute not in self.minutes:
                t = t.replace(second=0) + timedelta(minutes=1)
            elif t.second not in self.seconds:
                t += timedelta(seconds=1)
            else:
                return t
        raise ScheduleError("schedule never fires within five years")


@dataclass(frozen=True)
class IntervalSchedule:
    """The TimeSpan form (`HH:MM:SS`): fires every interval, counted from start-up."""

    interval: timedelta

    def next_after(self, moment: datetime) -> datetime:
        return moment.astimezone(UTC) + self.interval


Schedule = CronSchedule | IntervalSchedule


def parse_schedule(expression: str) -> Schedule:
    """Parse a timer trigger's `schedule` after `%SETTING%` resolution."""
    text = expression.strip()
    span = _TIMESPAN.match(text)
    if span:
        days, hours, minutes, seconds = (int(g or 0) for g in span.groups())
        interval = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
        if interval <= timedelta(0):
            raise ScheduleError(f"TimeSpan schedule {expression!r} must be positive")
        return IntervalSchedule(interval)
    parts = text.split()
    if len(parts) != 6:
        raise ScheduleError(f"{expression!r} is not a valid NCRONTAB expression: the Functions host wants "
                            "six fields ({second} {minute} {hour} {day} {month} {day-of-week}), "
                            f"got {len(parts)}")
    sets = [_parse_field(part, low, high, names, expression) for part, (low, high, names) in zip(
        parts, _FIELDS, strict=True)]
    return CronSchedule(*sets)


def _parse_field(field: str, low: int, high: int, names: dict[str, int], expression: str) -> frozenset[int]:
    values: set[int] = set()
    for item in field.split(","):
        body, _, step_text = item.partition("/")
        step = _number(step_text, names, expression) if step_text else 1
        if step < 1:
            raise ScheduleError(f"step {step_text!r} in {expression!r} must be at least 1")
        if body == "*":
            start, end = low, high
        elif "-" in body:
            first, _, last = body.partition("-")
            start, end = _number(first, names, expression), _number(last, names, expression)
        else:
            start = _number(body, names, expression)
            end = high if step_text else start
        if not (low <= start <= high and low <= end <= high) or start > end:
            raise ScheduleError(f"{item!r} in {expression!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


def _number(text: str, names: dict[str, int], expression: str) -> int:
    upper = text.upper()
    if upper in names:
        return names[upper]
    if not (text.isascii() and text.isdigit()):  # '²' passes isdigit and breaks int()
        raise ScheduleError(f"{text!r} in {expression!r} is not a number")
    return int(text)
