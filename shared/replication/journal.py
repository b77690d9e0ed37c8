"""The replication journal: one row per ACR event handled, in the status table's `replication` partition, so an
operator sees what replication received and what it did with it without searching the logs.

Status rows exist only for events that import nothing (`event-…`) and for the imports planned (`evt-…`); the
journal adds the event itself: its outcome (planned, ignored, rejected, or a duplicate delivery of an event
already handled), the reason and the request ids planned. Fields are bounded and redacted before they get here.

Row keys run newest first: the table keeps a partition in RowKey order, so the key is the microseconds left
until a far ceiling (Azure's "log tail" pattern: learn.microsoft.com, "Table design patterns"), and reading the
newest N rows is one range read of N. Rows are pruned with STATUS_RETENTION_DAYS (StatusStore.prune).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.azure.status import REPLICATION_PARTITION, StoredColumns
from shared.azure.storage import LazyTable

if TYPE_CHECKING:
    from azure.data.tables import TableServiceClient

PLANNED, IGNORED, REJECTED, DUPLICATE = "planned", "ignored", "rejected", "duplicate"
OUTCOMES = (PLANNED, IGNORED, REJECTED, DUPLICATE)
MAX_TEXT = 512  # characters of an id, topic, repository, tag, digest or action
MAX_REASON = 2000
MAX_IMPORTS = 50  # request ids kept per event (a rule set with more targets says how many were left out)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CEILING = 10**18  # microseconds: the year 33658, so `_CEILING - now` keeps 18 digits for a long while


def _countdown(at: datetime) -> str:
    return f"{_CEILING - (at.astimezone(UTC) - _EPOCH) // timedelta(microseconds=1):018d}"


def row_key(at: datetime, salt: str) -> str:
    """Sorts newest first; `salt` (the event) tells apart two events of one microsecond."""
    return f"{_countdown(at)}-{hashlib.sha256(salt.encode('utf-8', 'replace')).hexdigest()[:12]}"


@dataclass(frozen=True)
class JournalEntry:
    """One handled event, as the operator endpoint shows it."""

    id: str
    at: str
    topic: str
    repository: str
    tag: str
    digest: str
    action: str
    outcome: str
    reason: str
    imports: tuple[str, ...] = ()
    imports_omitted: int = 0
    unreadable: tuple[str, ...] = ()  # columns as read that were not what the app writes (shown empty)

    def to_entity(self, key: str) -> dict[str, Any]:
        return {"PartitionKey": REPLICATION_PARTITION, "RowKey": key, "Id": self.id[:MAX_TEXT], "At": self.at,
                "Topic": self.topic[:MAX_TEXT], "Repository": self.repository[:MAX_TEXT], "Tag": self.tag[:MAX_TEXT],
                "Digest": self.digest[:MAX_TEXT], "Action": self.action[:MAX_TEXT], "Outcome": self.outcome,
                "Reason": self.reason[:MAX_REASON], "Imports": json.dumps(list(self.imports[:MAX_IMPORTS])),
                "ImportsOmitted": self.imports_omitted + max(0, len(self.imports) - MAX_IMPORTS)}

    @classmethod
    def from_entity(cls, entity: dict[str, Any]) -> JournalEntry:
        """A row read back; a field of the wrong type reads as empty and is named in `unreadable` (rows are the
        app's, but a table is shared)."""
        row = StoredColumns(entity)
        imports = row.texts("Imports")
        omitted = row.number("ImportsOmitted", 0)
        outcome = row.text("Outcome")
        if outcome not in OUTCOMES and "Outcome" not in row.unreadable:
            row.unreadable.append("Outcome")
        return cls(id=row.text("Id"), at=row.text("At"), topic=row.text("Topic"), repository=row.text("Repository"),
                   tag=row.text("Tag"), digest=row.text("Digest"), action=row.text("Action"), outcome=outcome,
                   reason=row.text("Reason"), imports=tuple(imports), imports_omitted=omitted,
                   unreadable=tuple(row.unreadable))


class ReplicationJournal:
    """The `replication` partition of the status table."""

    def __init__(self, table_name: str, service: TableServiceClient | None = None) -> None:
        self._client = LazyTable(table_name, service)

    def record(self, entry: JournalEntry, at: datetime) -> bool:
        """Write one event's row; best effort (False when it could not be written): the event's imports and
        status rows are what counts, and a failed write must not make the host redeliver the event."""
        from azure.core.exceptions import AzureError

        try:
            self._client().create_entity(entry.to_entity(row_key(at, f"{entry.topic}|{entry.id}|{entry.outcome}")))
        except AzureError:
            return False
        return True

    def newest(self, limit: int) -> list[JournalEntry]:
        """The `limit` newest events, newest first (the partition's own order)."""
        entries: list[JournalEntry] = []
        for entity in self._client().query_entities("PartitionKey eq @partition",
                                                    parameters={"partition": REPLICATION_PARTITION},
                                                    results_per_page=limit):
            entries.append(JournalEntry.from_entity(entity))
            if len(entries) >= limit:
                break
        return entries

    def outcomes_since(self, since: datetime, max_rows: int) -> tuple[list[str], bool]:
        """The outcome of every event handled since `since`, at most `max_rows`, and whether more were left
        unread. Newer rows have smaller keys, so these are the keys below since's countdown ('.' sorts after
        the '-' that follows it)."""
        found: list[str] = []
        for entity in self._client().query_entities(
                "PartitionKey eq @partition and RowKey lt @bound",
                parameters={"partition": REPLICATION_PARTITION, "bound": _countdown(since) + "."},
                select=["Outcome"], results_per_page=1000):
            if len(found) >= max_rows:
                return found, True
            outcome = entity.get("Outcome")
            found.append(outcome if isinstance(outcome, str) else "")
        return found, False


_journals: dict[str, ReplicationJournal] = {}


def journal(table_name: str) -> ReplicationJournal:
    """The journal in the app's status table (one per table and process)."""
    return _journals.setdefault(table_name, ReplicationJournal(table_name))
