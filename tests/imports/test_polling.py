"""How often a running import is looked at, and how the app rides ARM's request budget: pure decisions and
the process's record of ARM's remaining-request headers (shared/azure/arm_budget.py), with a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.azure.arm_budget import GLOBAL_FACTOR, LIMITS, Budget, BudgetBook
from shared.core.settings import load_settings
from shared.imports.worker import (
    FIRST_LOOKS,
    MAX_PACED_POLL_SECONDS,
    first_look_delay,
    paced_delay,
    poll_delay,
    write_wait_delay,
)

SETTINGS = load_settings({"IMPORT_POLL_INTERVAL_SECONDS": "0.5"})
KEY = "https://arm|system|sub"


def reads(fraction: float | None, *, watchers: int = 1, throttled_wait: float = 0.0) -> Budget:
    size, refill = LIMITS["reads"]
    tokens = None if fraction is None else fraction * size
    return Budget("reads", fraction, tokens, size, refill, watchers=watchers, throttled_wait=throttled_wait)


# --- the schedule ------------------------------------------------------------------------------------------

def test_a_new_import_is_looked_at_sooner_at_first_then_in_proportion_then_every_interval():
    assert [poll_delay(0.3, 10.0, SETTINGS, checks=n) for n in range(1, 4)] == pytest.approx(FIRST_LOOKS)
    assert poll_delay(0.7, 10.0, SETTINGS, checks=4) == pytest.approx(0.15), "never sooner than 0.15 s"
    assert poll_delay(2.0, 10.0, SETTINGS, checks=8) == pytest.approx(0.2), "10% of the time so far"
    assert poll_delay(5.0, 10.0, SETTINGS, checks=15) == pytest.approx(0.5), "never later than the interval"


def test_the_wait_for_a_copys_end_stays_in_proportion_to_the_copy():
    """Simulated copies of 1 to 50 s (no budget pressure): the look that sees the end comes at most 15% of
    the copy's time (or 0.15 s) after it, and a 2 s copy costs about a dozen looks, not one per 0.1 s."""
    for copy in (1.0, 2.0, 2.17, 3.5, 10.0, 50.0):
        now, checks = 0.0, 0
        while now < copy:
            checks += 1
            now += poll_delay(now, 10.0, SETTINGS, checks=checks)
        assert now - copy <= max(0.15, 0.1 * copy, 0.5 if copy > 4.9 else 0) + 1e-9, copy
        if copy == 2.0:
            assert checks <= 13


def test_the_first_looks_never_wait_longer_than_the_interval_or_a_shorter_retry_after():
    slow = load_settings({"IMPORT_POLL_INTERVAL_SECONDS": "0.15"})
    assert poll_delay(0.0, None, slow, checks=3) == pytest.approx(0.15)
    assert poll_delay(0.0, 0.1, SETTINGS, checks=2) == pytest.approx(0.1)


def test_after_the_first_minute_retry_after_rules_and_the_schedule_is_over():
    assert poll_delay(61.0, 10.0, SETTINGS, checks=1) == pytest.approx(10.0)


# --- pacing by the read budget (the pure delay function) ----------------------------------------------------

def test_looks_slow_down_as_the_read_bucket_drains_and_speed_up_as_it_fills():
    full, half, tenth, empty = (paced_delay(0.5, reads(f)) for f in (1.0, 0.5, 0.1, 0.0))
    assert full == half == pytest.approx(0.5), "with half the bucket or more left, the schedule stands"
    assert tenth == pytest.approx(2.5), "a tenth left: five times slower"
    assert empty == pytest.approx(MAX_PACED_POLL_SECONDS), "near empty: ACR's own pace, never slower"


def test_the_look_right_after_the_post_waits_only_when_reads_run_short():
    assert first_look_delay(None) == 0
    assert first_look_delay(reads(None)) == 0
    assert first_look_delay(reads(0.6)) == 0, "a quick copy is seen at once"
    assert first_look_delay(reads(0.6, throttled_wait=3.0)) == pytest.approx(3.0)
    assert first_look_delay(reads(0.05)) == pytest.approx(FIRST_LOOKS[0] * 10)
    assert first_look_delay(reads(0.0)) == pytest.approx(MAX_PACED_POLL_SECONDS)


def test_no_budget_seen_leaves_the_schedule_alone():
    assert paced_delay(0.1, None) == pytest.approx(0.1)
    assert paced_delay(0.1, reads(None, watchers=500)) == pytest.approx(0.1)


def test_this_process_watchers_together_stay_within_the_refill():
    assert paced_delay(0.1, reads(1.0, watchers=50)) == pytest.approx(50 / LIMITS["reads"][1])


@given(base=st.floats(0.05, 60), low=st.floats(0, 1), high=st.floats(0, 1), watchers=st.integers(0, 1000))
def test_the_fewer_reads_remain_the_longer_the_wait_and_never_shorter_than_planned(base, low, high, watchers):
    low, high = min(low, high), max(low, high)
    slow, fast = paced_delay(base, reads(low, watchers=watchers)), paced_delay(base, reads(high, watchers=watchers))
    assert slow >= fast >= base
    assert slow <= max(base, MAX_PACED_POLL_SECONDS)


@given(base=st.floats(0.05, 60), fraction=st.none() | st.floats(0, 1), wait=st.floats(0, 3600))
def test_a_retry_after_seen_by_the_process_is_waited_out_exactly_never_sooner(base, fraction, wait):
    assert paced_delay(base, reads(fraction, throttled_wait=wait)) >= wait


@given(watchers=st.integers(1, int(LIMITS["reads"][1] * MAX_PACED_POLL_SECONDS)))
def test_any_number_of_watchers_up_to_the_cap_settles_before_the_bucket_is_empty(watchers):
    """All instances' watchers W together look W / d(f) times a second. As the bucket drains, d grows, so
    with one token left at the latest their looks fit in the refill: they share it without a 429."""
    size, refill = LIMITS["reads"]
    assert watchers / paced_delay(0.5, reads(1 / size, watchers=0)) <= refill


@given(wait=st.floats(0, 600), jitter=st.floats(0, 1))
def test_a_held_back_post_waits_for_its_token_and_at_most_twice_that(wait, jitter):
    delay = write_wait_delay(wait, jitter)
    assert max(1.0, wait) <= delay <= 2 * max(1.0, wait)


# --- the process's record of ARM's headers ------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_book_keeps_the_remaining_reads_and_refills_its_estimate_at_the_documented_rate():
    clock = Clock()
    book = BudgetBook(clock)
    assert book.budget(KEY, "reads").fraction is None
    book.observe(KEY, "GET", 200, {"x-ms-ratelimit-remaining-subscription-reads": "25",
                                   "x-ms-ratelimit-remaining-subscription-global-reads": "3000"})
    assert book.budget(KEY, "reads").fraction == pytest.approx(0.1)
    clock.now += 2.0  # 25 per second
    assert book.budget(KEY, "reads").tokens == pytest.approx(75)
    clock.now += 60.0
    assert book.budget(KEY, "reads").fraction == pytest.approx(1.0), "never more than the bucket"
    assert book.budget(KEY, "writes").fraction is None, "reads say nothing about writes"


def test_the_tighter_of_the_identity_and_the_global_bucket_counts_and_is_named():
    book = BudgetBook(Clock())
    book.observe(KEY, "POST", 202, {"X-Ms-Ratelimit-Remaining-Subscription-Writes": "150",
                                    "x-ms-ratelimit-remaining-subscription-global-writes": "0"})
    budget = book.budget(KEY, "writes")
    assert budget.fraction == 0 and budget.bucket == "subscription-global writes"
    assert budget.token_wait == pytest.approx(1 / (LIMITS["writes"][1] * GLOBAL_FACTOR))


def test_a_429_holds_every_thread_back_until_its_retry_after():
    clock = Clock()
    book = BudgetBook(clock)
    book.observe(KEY, "GET", 429, {"x-ms-ratelimit-remaining-subscription-reads": "0"}, retry_after=4.0)
    assert book.budget(KEY, "reads").throttled_wait == pytest.approx(4.0)
    assert book.budget(KEY, "reads").bucket == "subscription reads"
    clock.now += 3.0
    assert book.budget(KEY, "reads").throttled_wait == pytest.approx(1.0)
    clock.now += 1.0
    assert book.budget(KEY, "reads").throttled_wait == 0
    assert book.budget("https://arm|system|other", "reads").throttled_wait == 0, "per subscription"


def test_taking_the_last_token_leaves_none_for_the_next_thread():
    book = BudgetBook(Clock())
    book.observe(KEY, "POST", 202, {"x-ms-ratelimit-remaining-subscription-writes": "1"})
    assert book.budget(KEY, "writes", take=True).token_wait == 0
    held = book.budget(KEY, "writes", take=True)
    assert held.token_wait == pytest.approx(1 / LIMITS["writes"][1])


def test_watchers_are_counted_while_they_watch():
    book = BudgetBook(Clock())
    with book.watching(KEY), book.watching(KEY):
        assert book.budget(KEY, "reads").watchers == 2
    assert book.budget(KEY, "reads").watchers == 0


@pytest.mark.parametrize("value", ["", "-1", "1e9", "many", "12345678901"])
def test_headers_that_are_not_plain_counts_are_ignored(value):
    book = BudgetBook(Clock())
    book.observe(KEY, "GET", 200, {"x-ms-ratelimit-remaining-subscription-reads": value})
    assert book.budget(KEY, "reads").fraction is None


def test_arm_request_limits_name_other_buckets_and_keep_arms_for_the_rest():
    settings = load_settings({"ARM_REQUEST_LIMITS": "reads=100/10, writes=20/0.5"})
    assert settings.arm_request_limits == {"reads": (100.0, 10.0), "writes": (20.0, 0.5)}
    book = BudgetBook(Clock())
    book.set_limits(settings.arm_request_limits)
    assert (book.limits("reads"), book.limits("writes"), book.limits("deletes")) == (
        (100.0, 10.0), (20.0, 0.5), LIMITS["deletes"])
    assert load_settings({}).arm_request_limits == {}


def _answers(book: BudgetBook, clock: Clock, values: list[int], every: float) -> None:
    for value in values:
        clock.now += every
        book.observe(KEY, "POST", 202, {"x-ms-ratelimit-remaining-subscription-writes": str(value)})


def test_alone_the_process_counts_on_the_whole_refill():
    clock = Clock()
    book = BudgetBook(clock)
    _answers(book, clock, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], every=0.2)  # 10/s refill, one POST each 0.2 s
    assert book.budget(KEY, "writes").token_wait == 0
    assert book.budget(KEY, "writes").tokens == pytest.approx(9)
    clock.now += 1.0
    assert book.budget(KEY, "writes").tokens == pytest.approx(19)


def test_beside_other_instances_the_process_learns_its_share_of_the_refill():
    """Four instances drain the write bucket: every answer this one gets says 0 left, while it gets about one
    answer per 0.4 s. The refill it may count on falls toward its share (2.5 of 10 per second), so it waits
    for a token about four times longer than alone, instead of meeting 429s."""
    clock = Clock()
    book = BudgetBook(clock)
    _answers(book, clock, [0] * 40, every=0.4)
    budget = book.budget(KEY, "writes")
    assert 1 / LIMITS["writes"][1] * 3 < budget.token_wait < 1 / LIMITS["writes"][1] * 5


@pytest.mark.parametrize("value", ["²", "٣٣", "５", "1²", "-1", "1e9", "nan", "", " ", "9" * 10])
def test_a_remaining_header_that_is_not_a_plain_ascii_count_is_ignored_not_a_crash(value):
    """A server (or a proxy) choosing the header's digits: '²' is a digit to str.isdigit and breaks int()."""
    book = BudgetBook(clock=lambda: 100.0)
    book.observe(KEY, "GET", 200, {"x-ms-ratelimit-remaining-subscription-reads": value})
    assert book.budget(KEY, "reads").fraction is None
