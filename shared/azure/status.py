"""The status store: one row per request in Azure Table storage, so anyone can look up what happened.

The ACR API keeps no history of failed imports; this table does. Rows hold no secret: reasons are
redacted before they get here.

The row is also where the app keeps its own state of a request (the operation it watches, the attempt
count, the first attempt's time, which queue message carries the request, a fingerprint of what it asks),
because anything on the queue can be written by any producer. Writes that claim a request are conditional
(insert-if-absent, then `If-Match` with the row's ETag), so two deliveries of one id cannot both run it.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from dataclasses import replace as copy_with
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.azure.queues import letter_text
from shared.azure.storage import LazyTable
from shared.core.outcome import STATE_NAMES, State
from shared.core.redact import redact_text
from shared.core.request import ImportRequest, fingerprint

# The Azure SDK is imported inside the functions that use it, on purpose: it costs about half a second of
# every cold start (docs/benchmarks.md), and a message that is refused at once never needs it.

if TYPE_CHECKING:
    from azure.data.tables import TableServiceClient

log = logging.getLogger("acr_importer")

PARTITION = "import"
REFRESH_PARTITION = "refresh"  # shared/refresh/run.py's summaries: `run-<time>` rows, and `latest` (kept)
DEAD_LETTER_PARTITION = "deadletter"  # a copy of a request's last dead letter, RowKey = its id (`keep_dead_letter`)
REPLICATION_PARTITION = "replication"  # one row per handled ACR event (shared/replication/journal.py)
LOG_PARTITIONS = (REFRESH_PARTITION, DEAD_LETTER_PARTITION, REPLICATION_PARTITION)  # pruned by their write time
MAX_LETTER_CHARS = 30_000  # one Azure Tables string property holds 32K UTF-16 characters
MAX_BACKUP_TAGS = 10  # a row keeps the newest backups a request made (one per moved tag; a request has few)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class StatusRecord:
    id: str
    state: State
    source: str = ""
    target: str = ""
    target_tags: list[str] = field(default_factory=list)
    untagged_target_repositories: list[str] = field(default_factory=list)
    mode: str = ""
    reason: str = ""
    kind: str = ""
    code: str = ""
    attempts: int = 0
    digest: str = ""
    platforms: int | None = None
    referrers: str = ""  # what came along, by artifact type ("application/spdx+json=1, …"; "none"), "" not asked
    referrer_digests: str = ""  # their digests, comma-separated (bounded: shared/imports/referrers.py)
    checks: int = 0  # looks at a long-running import so far; a follow-up message with fewer is stale
    operation: str = ""  # ARM's operation URL of the running import, so a redelivery watches it, not a new one
    operation_started_at: str = ""
    poll_failures: str = ""  # looks at the operation that failed in a row ("HTTP 500,HTTP 503"); bounded
    first_attempt_at: str = ""  # of the current run: the authorization grace window counts from it
    carrier: str = ""  # queue message id that carries the request now; "" = open to a message asking the same
    fingerprint: str = ""  # shared.core.request.fingerprint of the request this row is about ("" on older rows)
    created_at: str = ""
    updated_at: str = ""
    transitions: list[dict[str, str]] = field(default_factory=list)
    backup_tags: list[str] = field(default_factory=list)  # "repo:backup-tag=sha256:..." kept before tags moved
    etag: str | None = field(default=None, repr=False, compare=False)  # as read; conditional writes use it
    unreadable: tuple[str, ...] = field(default=(), compare=False)  # columns as read that were not what the app writes

    def moved(self, state: State, **fields: Any) -> StatusRecord:
        """A copy moved to `state` with `fields` set (None leaves a field), its transition recorded."""
        now = utc_now().isoformat()
        record = copy_with(self, transitions=list(self.transitions), unreadable=())  # what is written reads
        for name, value in fields.items():
            if value is not None:
                setattr(record, name, value)
        if not record.transitions or record.transitions[-1].get("state") != str(state) or fields.get("attempts"):
            record.transitions.append({"state": str(state), "at": now})
        record.state = state
        record.updated_at = now
        record.created_at = record.created_at or now
        return record

    def to_entity(self) -> dict[str, Any]:
        return {
            "PartitionKey": PARTITION, "RowKey": self.id, "State": str(self.state), "Source": self.source,
            "Target": self.target, "TargetTags": json.dumps(self.target_tags),
            "UntaggedTargetRepositories": json.dumps(self.untagged_target_repositories), "Mode": self.mode,
            "Reason": self.reason[:16000], "Kind": self.kind, "Code": self.code, "Attempts": self.attempts,
            "Digest": self.digest, "Platforms": self.platforms if self.platforms is not None else -1,
            "Checks": self.checks, "Operation": self.operation, "OperationStartedAt": self.operation_started_at,
            "PollFailures": self.poll_failures, "FirstAttemptAt": self.first_attempt_at, "Carrier": self.carrier,
            "Fingerprint": self.fingerprint, "Referrers": self.referrers, "ReferrerDigests": self.referrer_digests,
            "CreatedAt": self.created_at, "UpdatedAt": self.updated_at,
            "Transitions": json.dumps(self.transitions[-50:]),
            "BackupTags": json.dumps(self.backup_tags[-MAX_BACKUP_TAGS:]),
        }

    @classmethod
    def from_entity(cls, entity: dict[str, Any]) -> StatusRecord:
        """A row read back. Rows are written by this app, but a table is shared (an older version, another
        producer, a hand edit): a column of the wrong type reads as its default and is named in `unreadable`, so
        one bad column neither hides the row nor fails the answer it is part of. A row whose State is not one
        of the app's cannot be a record: UnreadableRow."""
        row = StoredColumns(entity)
        state_text = entity.get("State")
        if not isinstance(state_text, str) or state_text not in STATE_NAMES:
            raise UnreadableRow(str(entity.get("RowKey", "")),
                                f"State {_quoted(state_text)} is not a state the app knows ({', '.join(STATE_NAMES)})")
        platforms = row.number("Platforms", -1)
        return cls(
            id=str(entity["RowKey"]), state=State(state_text), source=row.text("Source"), target=row.text("Target"),
            target_tags=row.texts("TargetTags"), untagged_target_repositories=row.texts("UntaggedTargetRepositories"),
            mode=row.text("Mode"), reason=row.text("Reason"), kind=row.text("Kind"), code=row.text("Code"),
            attempts=row.number("Attempts", 0), digest=row.text("Digest"),
            platforms=None if platforms == -1 else platforms, checks=row.number("Checks", 0),
            operation=row.text("Operation"), operation_started_at=row.text("OperationStartedAt"),
            poll_failures=row.text("PollFailures"), first_attempt_at=row.text("FirstAttemptAt"),
            carrier=row.text("Carrier"), fingerprint=row.text("Fingerprint"), referrers=row.text("Referrers"),
            referrer_digests=row.text("ReferrerDigests"), created_at=row.text("CreatedAt"),
            updated_at=row.text("UpdatedAt"), transitions=row.transitions(), backup_tags=row.texts("BackupTags"),
            etag=(getattr(entity, "metadata", None) or {}).get("etag"), unreadable=tuple(row.unreadable),
        )


MAX_TRANSITIONS_READ = 200  # a hand-made Transitions list is read this far (the app writes at most 50)


def column_value(entity: dict[str, Any], name: str) -> Any:
    """A column's value as Python reads it: the SDK hands an Edm.Int64 (any int another writer stored above
    2^31) back as an EntityProperty of (value, type)."""
    value = entity.get(name)
    return getattr(value, "value", value) if isinstance(value, tuple) and hasattr(value, "edm_type") else value


def stored_json(text: Any) -> Any:
    """What a JSON column holds, parsed; None when it is not text or not JSON (another writer, a hand edit), or
    nested deeper than Python's reader goes. Callers check the shape they need."""
    if not isinstance(text, str):
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


class UnreadableRow(ValueError):
    """A status row that cannot be read as a request's record (its State is not one of the app's)."""

    def __init__(self, request_id: str, reason: str) -> None:
        super().__init__(f"status row {request_id[:200]!r}: {reason}")
        self.request_id = request_id
        self.reason = reason


def _quoted(value: Any) -> str:
    return repr(value)[:100] if isinstance(value, str) else f"of type {type(value).__name__}"


class StoredColumns:
    """The columns of one row, each read as the type the app writes it with; `unreadable` names the rest. For
    every kind of row the app keeps in the status table (requests here, the replication journal's events)."""

    def __init__(self, entity: dict[str, Any]) -> None:
        self._entity = entity
        self.unreadable: list[str] = []

    def _value(self, name: str) -> Any:
        return column_value(self._entity, name)

    def text(self, name: str) -> str:
        value = self._value(name)
        if value is None or isinstance(value, str):
            return value or ""
        self.unreadable.append(name)
        return ""

    def number(self, name: str, default: int) -> int:
        """A whole number (the SDK hands back one above 2^31 as an Int64 EntityProperty)."""
        value = self._value(name)
        if value is None:
            return default
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        self.unreadable.append(name)
        return default

    def _json_list(self, name: str) -> list[Any]:
        found = stored_json(self.text(name) or "[]")
        if not isinstance(found, list):
            self.unreadable.append(name)
            return []
        return found

    def texts(self, name: str) -> list[str]:
        found = self._json_list(name)
        kept = [item for item in found if isinstance(item, str)]
        if len(kept) < len(found) and name not in self.unreadable:
            self.unreadable.append(name)
        return kept

    def transitions(self) -> list[dict[str, str]]:
        """`{"state", "at"}` objects of text (a state the app does not know is still history to show)."""
        found = self._json_list("Transitions")
        kept = [{"state": item["state"], "at": item["at"]} for item in found[-MAX_TRANSITIONS_READ:]
                if isinstance(item, dict) and isinstance(item.get("state"), str) and isinstance(item.get("at"), str)]
        if len(kept) < len(found) and "Transitions" not in self.unreadable:
            self.unreadable.append("Transitions")
        return kept


@dataclass(frozen=True)
class Opened:
    """`StatusStore.open`'s answer: the row this call wrote, or else the row that already had the id (None
    when that one was deleted in between)."""

    written: StatusRecord | None
    existing: StatusRecord | None = None

    @property
    def created(self) -> bool:
        return self.written is not None

    @property
    def record(self) -> StatusRecord | None:
        return self.written or self.existing


@dataclass(frozen=True)
class StatusPage:
    """`StatusStore.page`'s answer: the rows kept, in id order, the id to go on after (None: no more), and the
    rows read but left out because they cannot be read as records (UnreadableRow), so the answer can say so."""

    records: list[StatusRecord]
    after: str | None
    skipped: list[UnreadableRow] = field(default_factory=list)


PAGE_SCAN_ROWS = 1000  # rows one `page` call reads at most, kept or not (a text filter may keep few of them)
PAGE_SCAN_FIRST = 100  # rows of the first service page when rows are kept in Python (`keep`, a text filter)
PAGE_SCAN_GROWTH = 4  # each further service page that many times larger (100, 400, 500): a rare match costs 3
# round trips, not 10 (docs/benchmarks.md, "The operator's view"), and a common one still reads about 100 rows
PAGE_SERVER_PAGES = 50  # service pages one call asks for at most (Azure may answer a page empty, with a token)


class StatusStore:
    """Rows keyed by request id. A write moves a request to a state and remembers when it did."""

    def __init__(self, table_name: str, service: TableServiceClient | None = None) -> None:
        self._client = LazyTable(table_name, service)

    def get(self, request_id: str) -> StatusRecord | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return StatusRecord.from_entity(self._client().get_entity(PARTITION, request_id))
        except ResourceNotFoundError:
            return None

    def transition(self, request_id: str, state: State, **fields: Any) -> StatusRecord:
        """Move a request to `state`, creating its row on first sight; other fields update when given.

        Unconditional: for records of the app's own making (events, rejections). A request's run uses
        `create` and `replace`, which fail instead of overwriting a row someone else changed."""
        record = (self.get(request_id) or StatusRecord(id=request_id, state=state)).moved(state, **fields)
        from azure.data.tables import UpdateMode

        self._client().upsert_entity(record.to_entity(), mode=UpdateMode.REPLACE)
        return record

    def create(self, record: StatusRecord) -> StatusRecord | None:
        """Insert the row if no row has its id; None when one does (the id is taken)."""
        return self._insert(record).written

    def _insert(self, record: StatusRecord) -> Opened:
        """Insert-if-absent: the row written, or the row that has the id (read once, for the caller too)."""
        from azure.core.exceptions import ResourceExistsError

        try:
            answer = self._client().create_entity(record.to_entity())
        except ResourceExistsError:
            found = self.get(record.id)
            return Opened(found) if _is_this_write(found, record) else Opened(None, found)
        return Opened(copy_with(record, etag=answer.get("etag")))

    def replace(self, record: StatusRecord) -> StatusRecord | None:
        """Write the row only if it is still as read (`If-Match` its ETag); None when it changed or went."""
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        if record.etag is None:
            raise ValueError("a conditional write needs the ETag of the row as read")
        try:
            answer = self._client().update_entity(record.to_entity(), mode=UpdateMode.REPLACE, etag=record.etag,
                                                  match_condition=MatchConditions.IfNotModified)
        except ResourceNotFoundError:
            return None
        except HttpResponseError as exc:  # 412 Precondition Failed (ResourceModifiedError)
            if exc.status_code == 412:
                found = self.get(record.id)
                return found if _is_this_write(found, record) else None
            raise
        return copy_with(record, etag=answer.get("etag"))

    def open(self, request: ImportRequest, reason: str) -> Opened:
        """A row for a request about to be put on the queue by the app (HTTP API, CLI, refresh, replication):
        `received`, open to the first message asking the same (`carrier` ""), with its fingerprint. Returns
        the new row, or the row that already has this id (then nothing is written)."""
        row = StatusRecord(id=request.id, state=State.RECEIVED).moved(
            State.RECEIVED, reason=reason, fingerprint=fingerprint(request), **request_fields(request))
        return self._insert(row)

    def reopen(self, row: StatusRecord, request: ImportRequest, reason: str) -> StatusRecord | None:
        """Start a request again on a row that ended (failed or rejected): `received`, open, attempts 0, with
        the new request's fingerprint; the history is kept. None when the row changed meanwhile."""
        return self.replace(row.moved(
            State.RECEIVED, reason=reason, attempts=0, kind="", code="", checks=0, poll_failures="", operation="",
            operation_started_at="", first_attempt_at="", carrier="", digest="", referrers="", referrer_digests="",
            fingerprint=fingerprint(request), **request_fields(request)))

    def pin(self, row: StatusRecord, message_id: str) -> None:
        """Name the message just sent as the request's carrier, unless the row moved on meanwhile (then that
        message, or one asking the same, has already taken it). Best effort: an open row is safe too."""
        from azure.core.exceptions import AzureError

        if not message_id or row.carrier or row.etag is None:
            return
        with contextlib.suppress(AzureError):
            self.replace(copy_with(row, carrier=message_id))

    def withdraw(self, row: StatusRecord) -> bool:
        """Delete a row `open` just wrote whose message was never sent, only if it is still as written
        (`If-Match` its ETag): a row that moved on belongs to a request that did reach the queue."""
        from azure.core import MatchConditions
        from azure.core.exceptions import AzureError

        if row.etag is None:
            return False
        try:
            self._client().delete_entity(PARTITION, row.id, etag=row.etag,
                                         match_condition=MatchConditions.IfNotModified)
        except AzureError:  # refused (the row moved on), or this delete landed and its answer was lost
            try:
                return self.get(row.id) is None
            except AzureError:
                return False
        return True

    def recent_states(self, since: datetime, max_rows: int) -> tuple[list[tuple[str, str]], bool]:
        """(State, UpdatedAt) of the request rows updated since `since`, at most `max_rows` of them, and whether
        more were left unread. Two columns only (`select`), so a day of rows is a few small pages."""
        rows: list[tuple[str, str]] = []
        entities = self._client().query_entities(
            "PartitionKey eq @partition and UpdatedAt ge @since",
            parameters={"partition": PARTITION, "since": since.astimezone(UTC).isoformat()},
            select=["State", "UpdatedAt"], results_per_page=1000)
        for entity in entities:
            if len(rows) >= max_rows:
                return rows, True
            rows.append((str(entity.get("State") or ""), str(entity.get("UpdatedAt") or "")))
        return rows, False

    def list(self, *, state: State | None = None, since: datetime | None = None) -> list[StatusRecord]:
        filters = [f"PartitionKey eq '{PARTITION}'"]
        parameters: dict[str, Any] = {}
        if state:
            filters.append("State eq @state")
            parameters["state"] = str(state)
        if since:
            filters.append("UpdatedAt ge @since")
            parameters["since"] = since.isoformat()
        entities = self._client().query_entities(" and ".join(filters), parameters=parameters)
        records = []
        for entity in entities:
            try:
                records.append(StatusRecord.from_entity(entity))
            except UnreadableRow as unreadable:
                log.warning("%s; left out", unreadable)
        return sorted(records, key=lambda r: r.updated_at)

    def page(self, *, limit: int, states: Collection[State] = (), since: datetime | None = None,
             until: datetime | None = None, after: str | None = None,
             keep: Callable[[StatusRecord], bool] | None = None) -> StatusPage:
        """Up to `limit` request rows in the given states, updated in [since, until], with ids after `after`,
        that `keep` accepts; in id order (the table's own order: PartitionKey, RowKey), so newest first would
        mean reading every row. State and time are filtered by the service; `keep` (a text match) in Python,
        over at most PAGE_SCAN_ROWS rows, so one call stays bounded and may return fewer than `limit`; those are
        read in service pages growing from PAGE_SCAN_FIRST (the query is the same, only `$top` grows, and it
        goes on from the service's continuation token).

        User values only ever reach OData as `parameters`: azure-data-tables' `_parameter_filter_substitution`
        quotes a string and doubles its `'` (OData's escape). The table's one index is (PartitionKey, RowKey)
        ascending (learn.microsoft.com, "Designing a scalable partitioning strategy for Azure Table storage"),
        so `PartitionKey eq ... and RowKey gt ...` is a range read. The cursor is the last row *read*, not the
        service's continuation: that holds a hash of the next keys ("Query timeout and pagination"), so a text
        filter that stops inside a service page could not name where; the next call starts after the cursor,
        and every row is read once. The service may answer a page empty, with a token: PAGE_SERVER_PAGES."""
        filters = ["PartitionKey eq @partition"]
        parameters: dict[str, Any] = {"partition": PARTITION}
        if after is not None:
            filters.append("RowKey gt @after")
            parameters["after"] = after
        if states:
            names = sorted({str(s) for s in states})
            # spaces inside the parentheses: the SDK finds `@name` by splitting the filter on spaces
            filters.append("( " + " or ".join(f"State eq @state{i}" for i in range(len(names))) + " )")
            parameters.update({f"state{i}": name for i, name in enumerate(names)})
        if since is not None:
            filters.append("UpdatedAt ge @since")
            parameters["since"] = since.astimezone(UTC).isoformat()
        if until is not None:
            filters.append("UpdatedAt le @until")
            parameters["until"] = until.astimezone(UTC).isoformat()

        def query(size: int, token: Any) -> Any:
            return self._client().query_entities(" and ".join(filters), parameters=parameters,
                                                 results_per_page=size).by_page(continuation_token=token)

        size = limit if keep is None else max(limit, PAGE_SCAN_FIRST)
        pages = query(size, None)
        records: list[StatusRecord] = []
        skipped: list[UnreadableRow] = []
        read, last = 0, after
        for number in range(1, PAGE_SERVER_PAGES + 1):
            entities = next(pages, None)
            if entities is None:
                return StatusPage(records, None, skipped)
            for entity in entities:
                if len(records) >= limit or read >= PAGE_SCAN_ROWS:
                    return StatusPage(records, last, skipped)
                read, last = read + 1, entity["RowKey"]
                try:
                    record = StatusRecord.from_entity(entity)
                except UnreadableRow as unreadable:
                    skipped.append(unreadable)
                    continue
                if keep is None or keep(record):
                    records.append(record)
            token = getattr(pages, "continuation_token", None)
            if token is None:
                return StatusPage(records, None, skipped)
            if len(records) >= limit or read >= PAGE_SCAN_ROWS or number >= PAGE_SERVER_PAGES:
                return StatusPage(records, last, skipped)
            grown = min(size * PAGE_SCAN_GROWTH, PAGE_SCAN_ROWS - read) if keep is not None else size
            if grown > size:  # the same query, from the service's token, in larger pages
                size, pages = grown, query(grown, token)
        return StatusPage(records, last, skipped)

    def keep_dead_letter(self, request_id: str, letter: dict[str, Any]) -> bool:
        """A copy of a dead letter where it can be found by id (the `-rejected` queue cannot be searched): the
        letter as sent (redacted by the recorder), bounded to one property. Best effort, after the queue's copy:
        False when it could not be written (the queue still holds the letter)."""
        from azure.core.exceptions import AzureError
        from azure.data.tables import UpdateMode

        try:
            self._client().upsert_entity({"PartitionKey": DEAD_LETTER_PARTITION, "RowKey": request_id,
                                          "Letter": letter_text(letter, MAX_LETTER_CHARS)}, mode=UpdateMode.REPLACE)
        except AzureError:
            return False
        return True

    def dead_letter(self, request_id: str) -> dict[str, Any] | None:
        """The kept copy of `request_id`'s last dead letter; None when there is none (never dead-lettered, or
        pruned), `{}` when there is one that does not parse as a letter (a shared table: a hand edit, another
        writer), so the answer can say a letter was kept but cannot be shown."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            entity = self._client().get_entity(DEAD_LETTER_PARTITION, request_id)
        except ResourceNotFoundError:
            return None
        letter = stored_json(entity.get("Letter"))
        return letter if isinstance(letter, dict) else {}

    def prune(self, older_than: datetime) -> int:
        """Delete request rows last updated before `older_than`, and the log rows (refresh run summaries, dead
        letter copies, replication events) written before it.

        The refresh `latest` row carries live backoff state and is never pruned. Returns how many rows went.
        """
        from azure.core.exceptions import ResourceNotFoundError

        table = self._client()
        keys = ["PartitionKey", "RowKey"]
        stale = list(table.query_entities(f"PartitionKey eq '{PARTITION}' and UpdatedAt lt @cutoff",
                                          parameters={"cutoff": older_than.isoformat()}, select=keys))
        for partition in LOG_PARTITIONS:
            stale += table.query_entities("PartitionKey eq @partition and Timestamp lt @cutoff",
                                          parameters={"partition": partition, "cutoff": older_than}, select=keys)
        deleted = 0
        for entity in stale:
            if entity["PartitionKey"] == REFRESH_PARTITION and not entity["RowKey"].startswith("run-"):
                continue
            try:
                table.delete_entity(entity["PartitionKey"], entity["RowKey"])
                deleted += 1
            except ResourceNotFoundError:
                pass
        return deleted


def _is_this_write(found: StatusRecord | None, record: StatusRecord) -> bool:
    """Whether the row as read holds exactly `record`: a conditional write that landed but whose answer was
    lost, so the SDK's retry of it was refused (409 for an insert, 412 for an If-Match).

    Seen under load: a write that timed out at the client after Azurite applied it, retried by azure-core
    with the old ETag. Without this check the delivery takes its own write for another's and stops, and the
    request is stranded `running` with no message to carry it. Exactly the same entity means this write:
    `updated_at` and the transition times are this call's, `carrier` names this delivery's message."""
    return found is not None and found.to_entity() == record.to_entity()


def prune_expired(store: StatusStore, retention_days: float, now: datetime | None = None) -> int:
    """Apply STATUS_RETENTION_DAYS (0 keeps everything). Cheap: one filtered query, a delete per old row."""
    if retention_days <= 0:
        return 0
    return store.prune((now or utc_now()) - timedelta(days=retention_days))


def request_fields(request: ImportRequest) -> dict[str, Any]:
    """What a status row shows of a valid request. Credentials are never in it (only a set's name is), and an
    inline password is scrubbed even from what parsed: a producer may have used it as the source's name."""
    secrets = (request.credentials.password.reveal(),) if request.credentials else ()
    return {"source": redact_text(str(request.source), secrets), "target": str(request.target),
            "target_tags": [redact_text(str(t), secrets) for t in request.target_tags],
            "untagged_target_repositories": [redact_text(r, secrets) for r in request.untagged_target_repositories],
            "mode": request.mode}
