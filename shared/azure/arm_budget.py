"""ARM's request budget as this process last saw it: one record per process, shared by every thread.

Instances of the app share no coordinator; what they share is ARM's own answers. Every answer to the app's
identity says how many requests of that kind are left in its buckets, so whatever any instance spends shows
in the next answer any other instance gets. This module keeps the last numbers seen per (ARM endpoint,
identity, subscription, kind), estimates the tokens now from the share of the refill the answers show is
left to this process (all of it when alone, about 1/N beside N-1 busy instances), and remembers a 429's
Retry-After so that the other threads of the process wait it out too instead of each spending a 429 to learn
it. The pure decisions made from it (how long to wait) are the import worker's (shared/imports/worker.py).

What ARM does, from azure-docs `articles/azure-resource-manager/management/request-limits-and-throttling.md`
(https://learn.microsoft.com/azure/azure-resource-manager/management/request-limits-and-throttling):
- "Regional throttling and token bucket algorithm": subscription buckets of reads 250 refilling 25 per
  second, writes 200 / 10, deletes 200 / 10, "per subscription, per service principal, and per operation
  type", plus "global subscription limits that are equivalent to 15 times the individual service principal
  limits for each operation type" shared by all principals; a request is throttled when any is exceeded.
  "Free or trial customers might have lower limits": ARM_REQUEST_LIMITS names other buckets (and a
  subscription whose limits are lower than the app believes only meets 429s, waited out as any other).
- "Remaining requests": "Read requests return a value in the header for the number of remaining read
  requests. Write requests include a value for the number of remaining write requests":
  `x-ms-ratelimit-remaining-subscription-reads` / `-writes` / `-deletes`. Answers since the token buckets
  also carry the global bucket's `x-ms-ratelimit-remaining-subscription-global-reads` etc. (Az.Accounts'
  `Invoke-AzRest` help shows a 2024 answer with `...-subscription-reads: 249` and `...-global-reads: 3749`:
  the buckets less the request itself). A throttled request answers 429 with `Retry-After` in seconds.
The local stand-in (dev/azure_standin/throttling.py) models exactly this.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from shared.core.failures import ascii_count

LIMITS: dict[str, tuple[float, float]] = {"reads": (250.0, 25.0), "writes": (200.0, 10.0), "deletes": (200.0, 10.0)}
GLOBAL_FACTOR = 15
_SCOPES = (("subscription", 1), ("subscription-global", GLOBAL_FACTOR))


def kind_of(method: str) -> str:
    """ARM counts GET/HEAD as reads, DELETE as deletes, everything else (PUT, PATCH, POST) as writes."""
    method = method.upper()
    return "reads" if method in ("GET", "HEAD") else "deletes" if method == "DELETE" else "writes"


@dataclass(frozen=True)
class Budget:
    """One kind of ARM request for one identity in one subscription, as estimated now.

    `fraction` is what is left of the tighter bucket (the identity's or the subscription-global one), 0-1,
    None when no answer has said (ARM does not always send the headers); `token_wait` the seconds until that
    bucket holds a whole token again (0 when it does); `throttled_wait` the seconds left of the last 429's
    Retry-After; `watchers` this process's threads watching imports in the subscription; `scope` names the
    tighter bucket, for reasons a person reads."""

    kind: str
    fraction: float | None = None
    tokens: float | None = None
    size: float = LIMITS["reads"][0]
    refill: float = LIMITS["reads"][1]
    token_wait: float = 0.0
    throttled_wait: float = 0.0
    watchers: int = 0
    scope: str = "subscription"

    @property
    def bucket(self) -> str:
        """The bucket's name as the header says it, e.g. `subscription writes` or `subscription-global reads`."""
        return f"{self.scope} {self.kind}"


@dataclass
class _Seen:
    """One bucket: the estimate's anchor (`tokens` at `at`, less the tokens this process took since) and the
    refill this process may count on (`rate`), learned from what the answers said over windows of at least
    RATE_WINDOW seconds: whatever the bucket did not gain, other instances spent."""

    tokens: float
    at: float
    rate: float
    window_tokens: float
    window_at: float
    answers: int = 0  # this process's answered (not throttled) requests since `window_at`: each spent a token


RATE_WINDOW = 0.5   # seconds of answers the share of the refill is measured over
RATE_GAIN = 0.5     # how far one window's measurement moves the share
MIN_SHARE = 0.05    # the least share of the refill assumed (1 of 20 instances); below it, 429s teach the rest


@dataclass
class _Record:
    buckets: dict[str, _Seen]   # scope -> last seen
    not_before: float = 0.0     # a 429's Retry-After, as a monotonic time
    throttled_scope: str = "subscription"


class BudgetBook:
    """The process's record of ARM's remaining-request headers; thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 limits: Mapping[str, tuple[float, float]] | None = None) -> None:
        self._clock = clock
        self._limits = dict(limits or LIMITS)
        self._records: dict[tuple[str, str], _Record] = {}
        self._watchers: dict[str, int] = {}
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    def limits(self, kind: str) -> tuple[float, float]:
        return self._limits.get(kind, LIMITS[kind])

    def set_limits(self, limits: Mapping[str, tuple[float, float]]) -> None:
        """Bucket (size, refill per second) per kind; kinds not given keep ARM's documented ones."""
        with self._lock:
            self._limits = {**LIMITS, **limits}

    def observe(self, key: str, method: str, status: int, headers: Mapping[str, str],
                retry_after: float | None = None) -> None:
        """Take in one ARM answer to a `method` request (its headers, any case); `key` names the ARM endpoint,
        identity and subscription. A 429 holds every request of its kind back until its Retry-After."""
        kind = kind_of(method)
        lowered = {k.lower(): v for k, v in headers.items()}
        now = self._clock()
        with self._lock:
            record = self._records.setdefault((key, kind), _Record({}))
            size, refill = self.limits(kind)
            for scope, factor in _SCOPES:
                value = _count(lowered.get(f"x-ms-ratelimit-remaining-{scope}-{kind}"))
                if value is None:
                    continue
                seen = record.buckets.get(scope)
                if seen is None:
                    record.buckets[scope] = _Seen(value, now, refill * factor, value, now)
                    continue
                seen.answers += status != 429
                seen.rate = _learned_rate(seen, value, now, size * factor, refill * factor)
                seen.tokens, seen.at = value, now
            if status == 429:
                record.not_before = max(record.not_before, now + (retry_after if retry_after is not None else 1.0))
                empty = [s for s, _ in _SCOPES if s in record.buckets and record.buckets[s].tokens < 1]
                record.throttled_scope = empty[-1] if empty else "subscription"

    def budget(self, key: str, kind: str, *, take: bool = False) -> Budget:
        """The estimate now. With `take`, one token is spent from the estimate when there is one (so threads of
        this process that ask at once do not all see the same last token), else nothing is spent."""
        size, refill = self.limits(kind)
        now = self._clock()
        with self._lock:
            watchers = self._watchers.get(key, 0) if kind == "reads" else 0
            record = self._records.get((key, kind))
            if record is None:
                return Budget(kind, size=size, refill=refill, watchers=watchers)
            throttled_wait = max(0.0, record.not_before - now)
            fraction, tokens, token_wait, scope = None, None, 0.0, record.throttled_scope
            estimates = []
            for name, factor in _SCOPES:
                seen = record.buckets.get(name)
                if seen is None:
                    continue
                bucket_size = size * factor
                estimate = min(bucket_size, seen.tokens + (now - seen.at) * seen.rate)
                estimates.append((estimate / bucket_size, estimate, max(0.0, (1 - estimate) / seen.rate), name))
            if estimates:
                fraction, tokens, _, scope = min(estimates)
                token_wait = max(e[2] for e in estimates)
                if throttled_wait > 0:
                    scope = record.throttled_scope
                if take and token_wait == 0 and throttled_wait == 0:
                    for name, factor in _SCOPES:
                        if name in record.buckets:
                            seen = record.buckets[name]
                            seen.tokens = min(size * factor, seen.tokens + (now - seen.at) * seen.rate) - 1
                            seen.at = now
            return Budget(kind, fraction, tokens, size, refill, token_wait, throttled_wait, watchers, scope)

    @contextmanager
    def watching(self, key: str) -> Iterator[None]:
        """Count a thread watching an import in `key`'s subscription while the block runs."""
        with self._lock:
            self._watchers[key] = self._watchers.get(key, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._watchers[key] -= 1


def _learned_rate(seen: _Seen, value: float, now: float, size: float, refill: float) -> float:
    """The refill this process may count on, after an answer saying `value` tokens are left.

    Over a window the bucket gained refill x seconds less what everyone spent; this process spent `answers`
    of it, so `value - window_tokens + answers` over the window's seconds is the refill left to it (all of it
    when it is alone; about 1/N of it beside N-1 busy instances). A bucket near full at either end says nothing
    about sharing (the refill was capped): then all of it. Smoothed, and never below MIN_SHARE."""
    elapsed = now - seen.window_at
    if elapsed < RATE_WINDOW:
        return seen.rate
    if value >= size - 1 or seen.window_tokens >= size - 1:
        measured = refill
    else:
        measured = (value - seen.window_tokens + seen.answers) / elapsed
    seen.window_tokens, seen.window_at, seen.answers = value, now, 0
    rate = seen.rate + RATE_GAIN * (measured - seen.rate)
    return min(refill, max(refill * MIN_SHARE, rate))


def _count(value: str | None) -> float | None:
    """A remaining-requests header as a number of tokens, or None when absent or not a plain count."""
    if value is None:
        return None
    text = value.strip()
    if not ascii_count(text) or len(text) > 9:
        return None
    return float(text)


BOOK = BudgetBook()
"""The process's one record: every AcrManagement of the process (one per settings) writes and reads it."""
