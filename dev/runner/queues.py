"""Queue triggers and queue outputs with the storage extension 5.x semantics.

Per function: fetch `batchSize` messages under a 10-minute lease, renew the lease halfway while a function
runs, fetch again as soon as no more than `newBatchThreshold` are in flight, back off (`PollBackoff`: from 100 ms to
`maxPollingInterval`, as the host's RandomizedExponentialBackoffStrategy) while the queue is empty. Success deletes;
failure releases the message after `visibilityTimeout`, or moves it to `<queue>-poison` once its dequeue count
reaches `maxDequeueCount`.

The trigger's queue is not created: the storage extension's QueueListener (azure-sdk-for-net,
Microsoft.Azure.WebJobs.Extensions.Storage.Queues `QueueListener.ExecuteAsync`) asks `ExistsAsync` before it
receives and, while the queue does not exist, backs off (up to `maxPollingInterval`) until it appears. The
poison queue is created when the first message is moved there (`CopyMessageToPoisonQueueAsync` ->
`AddMessageAndCreateIfNotExistsAsync`), and a queue output binding creates its queue on first write, as here.
"""

from __future__ import annotations

import base64
import binascii
import concurrent.futures
import contextlib
import logging
import math
import random
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import azure.functions as func
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueClient, QueueMessage

from dev.runner.config import FunctionSpec, QueueOptions
from dev.runner.inputs import queue_input
from dev.runner.invoker import Invoker
from dev.runner.storage import resolve_connection

log = logging.getLogger("dev.runner")

LEASE = timedelta(minutes=10)      # the host's receive visibility while a function runs
MIN_POLL = timedelta(milliseconds=100)
POISON_SUFFIX = "-poison"


def encode(body: str | bytes, encoding: str) -> str:
    raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    return base64.b64encode(raw).decode("ascii") if encoding == "base64" else raw.decode("utf-8")


def decode(text: str, encoding: str) -> bytes:
    """Message bytes, or ValueError when the text is not valid for the encoding (host: straight to poison)."""
    if encoding == "none":
        return text.encode("utf-8")
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"message is not valid base64: {exc}") from None


def output_texts(value: Any) -> list[str | bytes]:
    """The messages one queue output value stands for (str, bytes, QueueMessage, or a list of them)."""
    if value is None:
        return []
    if isinstance(value, str | bytes):
        return [value]
    if isinstance(value, func.QueueMessage):
        return [value.get_body()]
    if isinstance(value, list | tuple):
        return [m for item in value for m in output_texts(item)]
    raise TypeError(f"queue output value of type {type(value).__name__} is not str, bytes or a list")


class PollBackoff:
    """How long an idle listener waits before it polls again: the storage extension's
    `RandomizedExponentialBackoffStrategy(QueuePollingIntervals.Minimum, maxPollingInterval)` as `QueueListener`
    drives it (azure-sdk-for-net, Microsoft.Azure.WebJobs.Extensions.Storage.Common: `Timers/
    RandomizedExponentialBackoffStrategy.cs`, `Listeners/QueueListener.cs` `CreateDelayWithNotificationTask`,
    `Shared/Queues/QueuePollingIntervals.cs`: Minimum 100 ms).

    A poll that found messages is followed by the next poll at once (after the newBatchThreshold wait), with no
    delay. An empty poll waits `next_delay(found_since_last_delay)`: after a poll found messages, the minimum
    (100 ms) and the back-off starts over; otherwise minimum + (0.8..1.2) x 2^(n-1) x minimum for the n-th
    empty poll in a row (about 100, 200, 300, 500, 900 ms, ...) until that reaches `maxPollingInterval`, which
    is then the wait, exactly (no jitter at the cap). The first empty poll after start waits the minimum.
    """

    RANDOMIZATION = 0.2

    def __init__(self, maximum: timedelta, minimum: timedelta = MIN_POLL,
                 uniform: Callable[[float, float], float] = random.uniform) -> None:
        self._min = minimum.total_seconds()
        self._max = max(maximum.total_seconds(), self._min)
        self._uniform = uniform
        self._exponent = 0
        self._current = 0.0

    def next_delay(self, found_since_last_delay: bool) -> float:
        """Seconds to wait after an empty poll."""
        if found_since_last_delay:
            self._current, self._exponent = self._min, 1
        elif self._current != self._max:
            interval = self._min
            if self._exponent > 0:
                factor = self._uniform(1 - self.RANDOMIZATION, 1 + self.RANDOMIZATION)
                interval += factor * 2 ** (self._exponent - 1) * self._min
            if interval < self._max:
                self._current = interval
                self._exponent += 1
            else:
                self._current = self._max
        return self._current


class QueueListener:
    def __init__(self, spec: FunctionSpec, options: QueueOptions, settings: dict[str, str], invoker: Invoker,
                 write_outputs: Callable[[FunctionSpec, dict[str, Any]], None]) -> None:
        self.spec = spec
        self.queue_name = str(spec.trigger.settings["queueName"]).lower()
        self.options = options
        self._conn = resolve_connection(spec.trigger.settings.get("connection"), settings)
        self._queue: QueueClient = self._conn.queue_client(self.queue_name)
        self._poison_name = None if self.queue_name.endswith(POISON_SUFFIX) or len(
            self.queue_name) + len(POISON_SUFFIX) > 63 else self.queue_name + POISON_SUFFIX
        self._invoker = invoker
        self._write_outputs = write_outputs
        # The host holds a message for 10 minutes while a function runs; a crash-recovery test cannot wait
        # that long, so RUNNER_QUEUE_LEASE_SECONDS (runner only, never an app setting) may shorten it.
        lease_seconds = settings.get("RUNNER_QUEUE_LEASE_SECONDS")
        self._lease = timedelta(seconds=float(lease_seconds)) if lease_seconds else LEASE
        self._processing = 0
        self.missing_polls = 0  # polls that found the queue absent (the host waits; it does not create it)
        self.polls = 0          # receive calls made (each a billed storage transaction in Azure)
        self._cond = threading.Condition()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._pool = concurrent.futures.ThreadPoolExecutor(options.concurrency,
                                                           thread_name_prefix=self.queue_name)
        self._thread = threading.Thread(target=self._run, name=f"listen-{self.queue_name}", daemon=True)

    @property
    def processing(self) -> int:
        return self._processing

    def start(self) -> None:
        self._thread.start()

    def notify(self) -> None:
        """A message was just written to this queue by this host: poll now (the host's shared watcher)."""
        self._wake.set()

    def stop(self) -> None:
        """Stop fetching; let in-flight messages finish and be completed."""
        self._stopping.set()
        self._wake.set()
        self._thread.join()
        self._pool.shutdown(wait=True)

    def is_empty(self) -> bool:
        """No message in the queue, visible or not (a message waiting for its retry counts); a queue that
        does not exist holds none."""
        try:
            return self._queue.get_queue_properties().approximate_message_count == 0
        except ResourceNotFoundError:
            return True

    def _run(self) -> None:
        backoff = PollBackoff(self.options.max_polling_interval)
        found = False  # a poll found messages since the last wait (the host's _foundMessageSinceLastDelay)
        while not self._stopping.is_set():
            self.polls += 1
            try:
                # One Get Messages call per poll, as the host's ReceiveMessagesAsync: iterating the SDK's pager
                # would ask again whenever fewer than batchSize came back (one more transaction per found batch).
                pages = self._queue.receive_messages(
                    messages_per_page=self.options.batch_size, max_messages=self.options.batch_size,
                    visibility_timeout=int(self._lease.total_seconds())).by_page()
                batch = list(next(pages, []))
            except ResourceNotFoundError:  # host: the queue does not exist yet; a failed poll, then back off
                if self.missing_polls == 0:
                    log.warning("Queue %s does not exist; waiting for it (the host does not create a trigger's "
                                "queue)", self.queue_name)
                self.missing_polls += 1
                batch = []
            except (AzureError, OSError) as exc:  # storage down or unreachable: keep polling, as the host does
                log.warning("Queue %s: receive failed (%s); backing off", self.queue_name, type(exc).__name__)
                batch = []
            if not batch:
                self._wake.wait(backoff.next_delay(found))
                self._wake.clear()
                found = False
                continue
            found = True  # poll again at once (after the newBatchThreshold wait below), as the host does
            with self._cond:
                self._processing += len(batch)
            for message in batch:
                self._pool.submit(self._process, message)
            with self._cond:
                while self._processing > self.options.new_batch_threshold and not self._stopping.is_set():
                    self._cond.wait(0.5)

    def _process(self, message: QueueMessage) -> None:
        try:
            self._process_one(message)
        except Exception:
            log.exception("Queue %s: message %s could not be completed", self.queue_name, message.id)
        finally:
            with self._cond:
                self._processing -= 1
                self._cond.notify_all()

    def _process_one(self, message: QueueMessage) -> None:
        if message.dequeue_count > self.options.max_dequeue_count:
            self._poison(message)
            return
        try:
            body = decode(message.content or "", self.options.message_encoding)
        except ValueError as exc:
            log.error("Queue %s: message %s cannot be decoded (%s); moving it to %s without invoking %s",
                      self.queue_name, message.id, exc, self._poison_name, self.spec.name)
            self._poison(message)
            return
        def trigger() -> func.QueueMessage:  # built by the queue converter from the host's datums
            return queue_input(body, id=message.id, dequeue_count=message.dequeue_count,
                               pop_receipt=message.pop_receipt, insertion_time=message.inserted_on,
                               expiration_time=message.expires_on, next_visible_time=message.next_visible_on)

        renewal = _LeaseRenewal(self._queue, message, self._lease)
        renewal.start()
        try:
            result = self._invoker.invoke(
                self.spec, "queue", None, convert=trigger, trigger_id=message.id,
                reason=f"New queue message detected on '{self.queue_name}'.",
                details=f"MessageId: {message.id}, DequeueCount: {message.dequeue_count}, "
                        f"InsertedOn: {message.inserted_on:%Y-%m-%dT%H:%M:%S.000+00:00}")
        finally:
            renewal.stop()
        ok = result.invocation.outcome == "ok"
        if ok:
            try:
                self._write_outputs(self.spec, result.outputs)
            except Exception:
                log.exception("Function %s: writing its output bindings failed", self.spec.name)
                ok = False
        if ok:
            self._delete(message)
        elif self._poison_name is None:
            pass  # host: no poison queue, so the message stays leased (invisible) to avoid a hot loop
        elif message.dequeue_count >= self.options.max_dequeue_count:
            self._poison(message)
        else:
            self._release(message)

    def _poison(self, message: QueueMessage) -> None:
        if self._poison_name is None:
            return
        log.warning("Message has reached MaxDequeueCount of %d. Moving message to queue '%s'.",
                    self.options.max_dequeue_count, self._poison_name)
        poison = self._conn.queue_client(self._poison_name)
        with contextlib.suppress(ResourceExistsError):
            poison.create_queue()
        poison.send_message(message.content or "")
        self._delete(message)

    def _release(self, message: QueueMessage) -> None:
        seconds = math.ceil(self.options.visibility_timeout.total_seconds())
        try:
            self._queue.update_message(message.id, message.pop_receipt, visibility_timeout=seconds)
        except AzureError as exc:  # the message reappears when its lease ends anyway
            log.debug("Queue %s: message %s not released (%s)", self.queue_name, message.id, exc)

    def _delete(self, message: QueueMessage) -> None:
        try:
            self._queue.delete_message(message.id, message.pop_receipt)
        except AzureError as exc:  # it reappears after its lease: at-least-once, as on the host
            log.debug("Queue %s: message %s not deleted (%s)", self.queue_name, message.id, exc)


class _LeaseRenewal:
    """Keeps a running message invisible: renews its lease when half of it has passed (host behaviour).

    Renewing changes the pop receipt; the message object is updated so delete/release use the new one.
    """

    def __init__(self, queue: QueueClient, message: QueueMessage, lease: timedelta) -> None:
        self._queue, self._message, self._lease = queue, message, lease
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{message.id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        seconds = self._lease.total_seconds()
        while not self._done.wait(seconds / 2):
            try:
                receipt = self._queue.update_message(self._message.id, self._message.pop_receipt,
                                                     visibility_timeout=int(seconds))
            except (AzureError, OSError) as exc:
                log.warning("Lease renewal of message %s failed: %s", self._message.id, type(exc).__name__)
                continue
            self._message.pop_receipt = receipt.pop_receipt
            self._message.next_visible_on = receipt.next_visible_on

