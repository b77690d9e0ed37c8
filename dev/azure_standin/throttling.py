"""ARM's request throttling: token buckets per principal, per subscription (or tenant), per kind of
operation, plus a subscription-wide bucket shared by all principals.

Source followed: azure-docs `articles/azure-resource-manager/management/request-limits-and-throttling.md`
("Regional throttling and token bucket algorithm", 2024 onwards):
- subscription and tenant buckets: reads 250 refilling 25 per second, writes 200 / 10, deletes 200 / 10;
- "Subscription limits apply per subscription, per service principal, and per operation type. There are
  also global subscription limits that are equivalent to 15 times the individual service principal limits
  for each operation type"; a request is throttled when any of them is exceeded;
- answers carry `x-ms-ratelimit-remaining-subscription-reads|writes|deletes` (and
  `x-ms-ratelimit-remaining-subscription-global-*`, `x-ms-ratelimit-remaining-tenant-*` for tenant-level
  requests); an empty bucket answers 429 with `Retry-After` (seconds).
The 429 body's code and message follow what ARM is seen answering (`SubscriptionRequestsThrottled`,
"Number of 'read' requests for subscription '...' actor '...' exceeded. Please try again after '6'
seconds after additional tokens are available."); the exact wording is modelled, not specified.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from dev.azure_standin.errors import ArmError

KINDS = ("reads", "writes", "deletes")
DEFAULT_LIMITS: dict[str, tuple[float, float]] = {"reads": (250, 25), "writes": (200, 10), "deletes": (200, 10)}
GLOBAL_FACTOR = 15
SINGULAR = {"reads": "read", "writes": "write", "deletes": "delete"}
REMAINING_PREFIX = "x-ms-ratelimit-remaining-"


def kind_of(method: str) -> str:
    """ARM counts GET/HEAD as reads, DELETE as deletes, everything else (PUT, PATCH, POST) as writes."""
    method = method.upper()
    if method in ("GET", "HEAD"):
        return "reads"
    return "deletes" if method == "DELETE" else "writes"


def check_limits(limits: Any) -> dict[str, tuple[float, float]]:
    """Control input `{"reads": [bucket, refill], ...}` (missing kinds keep ARM's), validated."""
    if not isinstance(limits, dict) or set(limits) - set(KINDS):
        raise ValueError(f"throttle_limits must map some of {KINDS} to [bucket size, refill per second]")
    checked = dict(DEFAULT_LIMITS)
    for kind, value in limits.items():
        if (not isinstance(value, (list, tuple)) or len(value) != 2
                or not all(isinstance(v, (int, float)) and v > 0 for v in value)):
            raise ValueError(f"throttle_limits.{kind} must be [bucket size > 0, refill per second > 0]")
        checked[kind] = (float(value[0]), float(value[1]))
    return checked


@dataclass
class TokenBucket:
    size: float
    refill: float  # tokens per second
    tokens: float
    updated: float

    def _top_up(self, now: float) -> None:
        self.tokens = min(self.size, self.tokens + (now - self.updated) * self.refill)
        self.updated = now

    def wait(self, now: float) -> float:
        """Seconds until one token is there (0 when one is)."""
        self._top_up(now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.refill


@dataclass(frozen=True)
class Verdict:
    headers: dict[str, str]
    error: ArmError | None = None


class Throttle:
    """All buckets of one stand-in; thread-safe. Buckets start full and appear on first use."""

    def __init__(self, limits: dict[str, tuple[float, float]]) -> None:
        self.limits = {k: (float(v[0]), float(v[1])) for k, v in limits.items()}
        self._buckets: dict[tuple[str, ...], TokenBucket] = {}
        self._lock = threading.Lock()

    def _bucket(self, key: tuple[str, ...], kind: str, factor: int, now: float) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            size, refill = self.limits[kind]
            bucket = self._buckets[key] = TokenBucket(size * factor, refill * factor, size * factor, now)
        return bucket

    def take(self, principal: str, subscription: str | None, method: str) -> Verdict:
        """Spend one token of each bucket this request counts against, or none when one is empty."""
        kind = kind_of(method)
        now = time.monotonic()
        with self._lock:
            if subscription is None:
                buckets = {f"x-ms-ratelimit-remaining-tenant-{kind}":
                           self._bucket(("tenant", principal, kind), kind, 1, now)}
            else:
                sub = subscription.lower()
                buckets = {
                    f"x-ms-ratelimit-remaining-subscription-{kind}":
                        self._bucket(("subscription", sub, principal, kind), kind, 1, now),
                    f"x-ms-ratelimit-remaining-subscription-global-{kind}":
                        self._bucket(("global", sub, kind), kind, GLOBAL_FACTOR, now),
                }
            wait = max(b.wait(now) for b in buckets.values())
            if wait == 0:
                for bucket in buckets.values():
                    bucket.tokens -= 1
            headers = {name: str(int(b.tokens)) for name, b in buckets.items()}
        if wait == 0:
            return Verdict(headers)
        seconds = max(1, math.ceil(wait))
        scope = "tenant" if subscription is None else f"subscription '{subscription}'"
        code = "TenantRequestsThrottled" if subscription is None else "SubscriptionRequestsThrottled"
        return Verdict(headers, ArmError(
            429, code,
            f"Number of '{SINGULAR[kind]}' requests for {scope} actor '{principal}' exceeded. Please try again "
            f"after '{seconds}' seconds after additional tokens are available. Refer to https://aka.ms/arm-throttling",
            {**headers, "Retry-After": str(seconds)}))
