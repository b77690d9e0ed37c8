"""When the worker retries and when it looks at a running import again: pure decisions, no services."""

from __future__ import annotations

import pytest

from shared.core.outcome import Failure, Kind
from shared.core.settings import load_settings
from shared.imports.worker import poll_delay, retry_delay

SETTINGS = load_settings({"IMPORT_RETRY_BASE_SECONDS": "10", "IMPORT_RETRY_MAX_SECONDS": "100",
                          "IMPORT_POLL_INTERVAL_SECONDS": "0.5"})


@pytest.mark.parametrize(("attempt", "jitter", "retry_after", "expected"), [
    (1, 1.0, None, 10), (1, 0.0, None, 5), (2, 1.0, None, 20), (3, 1.0, None, 40),
    (5, 1.0, None, 100), (9, 1.0, None, 100),  # capped
    (1, 0.0, 30.0, 30),  # never sooner than Retry-After
])
def test_retry_delay_is_exponential_with_jitter_and_honours_retry_after(attempt, jitter, retry_after, expected):
    failure = Failure(Kind.TRANSIENT, "TooManyRequests", "throttled", retry_after)
    assert retry_delay(attempt, SETTINGS, failure, jitter) == pytest.approx(expected)


@pytest.mark.parametrize(("running_for", "retry_after", "expected"), [
    (0, 10.0, 0.15),    # a young import is looked at soon, whatever ACR's Retry-After says
    (2, 10.0, 0.2),     # then after a tenth of the time it has run
    (30, None, 0.5),
    (30, 0.2, 0.2),     # but never later than ARM asks
    (61, 10.0, 10.0),   # after a minute, Retry-After rules
    (61, None, 0.5),
])
def test_poll_delay_is_prompt_in_the_first_minute_then_polite(running_for, retry_after, expected):
    assert poll_delay(running_for, retry_after, SETTINGS) == pytest.approx(expected)
