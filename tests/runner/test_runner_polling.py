"""How the runner polls a trigger's queue, as the storage extension's QueueListener does: the back-off of an idle
queue (RandomizedExponentialBackoffStrategy from 100 ms to maxPollingInterval) and one Get Messages call per poll.
What a user notices: how soon a message is picked up, and how many storage transactions an idle app makes."""

from __future__ import annotations

import base64
import http.client
from datetime import timedelta

import pytest

from dev.runner.queues import PollBackoff
from tests.runner import test_runner as base
from tests.runner.test_runner import client, make_runner, seen

storage = base.storage        # Azurite for this module too
queue_name = base.queue_name  # a fresh queue name, the fixture app's records cleared

LOWEST, MIDDLE, HIGHEST = (lambda low, high: low), (lambda low, high: (low + high) / 2), (lambda low, high: high)


def waits(backoff: PollBackoff, found: list[bool]) -> list[float]:
    return [backoff.next_delay(f) for f in found]


def test_an_idle_queue_is_polled_less_and_less_often_until_max_polling_interval():
    backoff = PollBackoff(timedelta(seconds=1), uniform=MIDDLE)
    # 100 ms, then 100 ms + 2^(n-1) x 100 ms: the host's delta back-off, not a doubling of the last wait
    assert waits(backoff, [False] * 8) == pytest.approx([0.1, 0.2, 0.3, 0.5, 0.9, 1.0, 1.0, 1.0])


@pytest.mark.parametrize("pick, expected", [
    (LOWEST, [0.1, 0.18, 0.26, 0.42, 0.74, 1.0, 1.0]),
    (HIGHEST, [0.1, 0.22, 0.34, 0.58, 1.0, 1.0, 1.0]),
])
def test_the_jitter_is_twenty_percent_of_the_increment_and_the_cap_is_never_exceeded(pick, expected):
    assert waits(PollBackoff(timedelta(seconds=1), uniform=pick), [False] * 7) == pytest.approx(expected)


def test_a_found_message_brings_the_next_wait_back_to_100_ms_and_starts_the_back_off_over():
    backoff = PollBackoff(timedelta(seconds=1), uniform=MIDDLE)
    assert waits(backoff, [False] * 6)[-1] == 1.0
    assert waits(backoff, [True, False, False, False]) == pytest.approx([0.1, 0.2, 0.3, 0.5])


def test_max_polling_interval_at_the_100_ms_minimum_polls_every_100_ms():
    backoff = PollBackoff(timedelta(milliseconds=100), uniform=HIGHEST)
    assert waits(backoff, [False, False, True, False, False]) == pytest.approx([0.1] * 5)


def test_each_poll_is_one_get_messages_call_even_when_it_finds_fewer_than_batch_size(queue_name, monkeypatch):
    path = f"/{queue_name}/messages"
    gets: list[str] = []
    original = http.client.HTTPConnection.putrequest

    def putrequest(self, method, url, *args, **kwargs):
        if method == "GET" and path in url.split("?")[0]:
            gets.append(url)
        return original(self, method, url, *args, **kwargs)

    monkeypatch.setattr(http.client.HTTPConnection, "putrequest", putrequest)
    queue = client(queue_name)
    with make_runner(queue_name) as runner:
        listener = runner.queue_listener("echo")
        queue.send_message(base64.b64encode(b"hello").decode())  # 1 message, batchSize 2 in the fixture host.json
        assert runner.wait_idle(15)
    assert [r["body"] for r in seen("echo")] == ["hello"]
    polls = listener.polls  # read after stop: no poll is under way
    assert polls >= 2  # the poll that found it, then at least one that found the queue empty
    assert len(gets) == polls  # the SDK's pager would ask again after a short batch: one more call each time
