"""Who may run a request: one request id, one import, decided on the request's status row.

Everything on the queue can be written by any producer, so nothing there decides what the app does with
an id it has seen before. The row does: it holds a fingerprint of what the request asks and the queue
message that carries it now (`carrier`). `decide` compares a delivery with the row; the worker then
claims the row with a conditional write (insert-if-absent, or `If-Match` its ETag), so of two deliveries
racing for one row exactly one wins, and the other decides again on what the winner wrote.

The app's own id prefixes are reserved: a producer cannot take `refresh-…`, `evt-…` or `event-…` ids in
advance, because a message with such an id runs only when the app itself opened its row first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from shared.azure.queues import MessageTooLarge
from shared.azure.status import StatusRecord, StatusStore, request_fields
from shared.core.outcome import Failure, Kind, State
from shared.core.request import ImportRequest, fingerprint

RESERVED_PREFIXES = ("refresh-", "evt-", "event-")  # refresh, replication (requests, events)


def reserved_prefix(request_id: str) -> str | None:
    """The app's own prefix this id starts with (compared without case: ids are case-insensitive keys in
    some tools, and `Refresh-x` must not slip past), or None."""
    lowered = request_id.lower()
    return next((p for p in RESERVED_PREFIXES if lowered.startswith(p)), None)


class Step(StrEnum):
    START = "start"          # no run to join: start one (insert the row, or reopen one that ended badly)
    TAKE = "take"            # the row waits for this message, or is open to one asking the same: claim it
    CONTINUE = "continue"    # this message carries the running request (redelivered after a crash): go on
    DONE = "done"            # the request already ended as asked: change nothing
    DUPLICATE = "duplicate"  # another message carries the same request now: change nothing
    CONFLICT = "conflict"    # the id belongs to a different request: refuse, leave its row alone
    SQUAT = "squat"          # a reserved id the app never opened: refuse, write no row


@dataclass(frozen=True)
class Decision:
    step: Step
    reason: str = ""


def decide(row: StatusRecord | None, request: ImportRequest, message_id: str) -> Decision:
    """What one delivery of `request` (queue message `message_id`) may do, given the id's row."""
    prefix = reserved_prefix(request.id)
    if row is None:
        if prefix:
            return Decision(Step.SQUAT, f"starts with {prefix!r}, which only the app's own requests use, and "
                                        "the app opened no request with this id; pick another id")
        return Decision(Step.START)
    if row.carrier and row.carrier == message_id:  # the message the row waits for, or its redelivery
        if row.state.terminal:
            return Decision(Step.DONE, f"already {row.state}")
        return Decision(Step.CONTINUE) if row.state is State.RUNNING else Decision(Step.TAKE)
    if not _same_request(row, request, prefix):
        return Decision(Step.CONFLICT, f"is taken by a different request (it is {row.state}); the same id with "
                                       "a different request is refused, never taken as done; use a new id")
    if row.state.ended_well:
        return Decision(Step.DONE, f"already {row.state}: a repeated delivery changes nothing")
    if row.state.terminal:
        return Decision(Step.START, f"again after it {row.state}")
    if not row.carrier:
        return Decision(Step.TAKE)
    return Decision(Step.DUPLICATE, f"duplicate: another message carries this request (it is {row.state}); "
                                    "this delivery changes nothing")


def _same_request(row: StatusRecord, request: ImportRequest, prefix: str | None) -> bool:
    if row.fingerprint:
        return row.fingerprint == fingerprint(request)
    if not row.state.terminal:  # a run of an older version in flight (no fingerprints then): it goes on
        return True
    if prefix:  # a reserved id runs only on a row the app opened for exactly this request
        return False
    if row.state.ended_well:  # a row from before fingerprints: compare what it shows
        shown = request_fields(request)
        return (row.source, row.target.lower(), sorted(row.target_tags), sorted(row.untagged_target_repositories),
                row.mode) == (shown["source"], shown["target"].lower(), sorted(shown["target_tags"]),
                              sorted(shown["untagged_target_repositories"]), shown["mode"])
    return True  # a failure of an older version, or a rejection record: a request may start again on it


@dataclass(frozen=True)
class Queued:
    """What `queue_once` did: sent the request (its row opened), or why not (its row shows what it is)."""

    sent: bool
    record: StatusRecord | None
    why_not: str = ""


def queue_once(store: StatusStore, request: ImportRequest, send: Callable[[dict[str, Any]], str], reason: str, *,
               restart_failed: bool = False) -> Queued:
    """Put a request of the app's own making (refresh, replication) on the queue at most once per run.

    The row comes first (insert-if-absent: `received`, open, with the fingerprint), then the message, then
    the row names the message as its carrier. A row already there means the request is queued or done: it
    is sent again only while the row is still open (an earlier send failed before it was named; a second
    copy is harmless, one of them takes the row), or, with `restart_failed`, over a failure of the same
    request. A send that raises leaves the row open, so the next try sends it again."""
    opened = store.open(request, reason)
    row = opened.record
    if row is None:
        return Queued(False, None, "its status row disappeared while it was being queued")
    if not opened.created:
        mine = fingerprint(request)
        if row.fingerprint and row.fingerprint != mine:
            return Queued(False, row, f"id {request.id} is taken by a different request (it is {row.state})")
        if row.state is State.RECEIVED and not row.carrier:
            pass
        elif restart_failed and row.state.ended_badly:
            reopened = store.reopen(row, request, reason)
            if reopened is None:
                return Queued(False, store.get(request.id), "its status row changed while it was being queued")
            row = reopened
        else:
            return Queued(False, row, f"already {row.state}")
    message_id = send({**request.document, "id": request.id})
    store.pin(row, message_id)
    return Queued(True, row)


@dataclass(frozen=True)
class Submitted:
    """What `submit_new` did with a person's request: sent it (its row opened and named), found its id taken
    (`record` is the row that holds it), or could not send it (`failure` says why; no row is left)."""

    sent: bool
    record: StatusRecord | None
    failure: Failure | None = None


def submit_new(store: StatusStore, request: ImportRequest, send: Callable[[dict[str, Any]], str], reason: str, *,
               queue: str) -> Submitted:
    """Record, then queue, a request a person sent (CLI, HTTP API): the one rule for both.

    The row comes first (insert-if-absent, so of two racing submissions with one id exactly one goes on), then
    the message, then the row names it as its carrier. A request that never reached the queue leaves no row:
    the row as written here is withdrawn (`If-Match` its ETag; a row a worker took meanwhile, because the send
    did arrive after all, stays), so its id stays free and no status says it was accepted."""
    opened = store.open(request, reason)
    if not opened.created or opened.record is None:
        return Submitted(False, opened.record)
    try:
        message_id = send({**request.document, "id": request.id})
    except BaseException as err:
        store.withdraw(opened.record)
        failure = not_queued(err, queue)
        if failure is None:
            raise
        return Submitted(False, None, failure)
    store.pin(opened.record, str(message_id or ""))
    return Submitted(True, opened.record)


def not_queued(err: BaseException, queue: str) -> Failure | None:
    """Why a send to `queue` failed, for the person who sent the request; None for an error we do not know
    (a bug: it propagates). Names the service's answer, never its message (it may quote a URL with a token)."""
    from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError, ServiceRequestError

    if isinstance(err, MessageTooLarge):
        return Failure(Kind.REJECTED, "MessageTooLarge", f"{err}; nothing was queued")
    if isinstance(err, ResourceNotFoundError):
        return Failure(Kind.PERMANENT, "QueueNotFound", f"queue {queue!r} does not exist: is IMPORT_QUEUE the app's "
                                                        "queue? Nothing was queued")
    kind = Kind.TRANSIENT
    if isinstance(err, HttpResponseError):
        answer = f"the queue service answered {err.status_code} {getattr(err, 'error_code', None) or ''}".rstrip()
        if err.status_code and err.status_code < 500 and err.status_code not in (408, 429):
            kind = Kind.PERMANENT  # refused (a role, a setting): sending again as is will not help
    elif isinstance(err, ServiceRequestError):
        answer = "the queue service did not answer"
    elif isinstance(err, AzureError):
        answer = f"the queue service failed ({type(err).__name__})"
    else:
        return None
    again = "send it again" if kind is Kind.TRANSIENT else "fix that, then send it again"
    return Failure(kind, "NotQueued", f"could not put the request on queue {queue!r}: {answer}; nothing was queued "
                                      f"or recorded: {again}")
