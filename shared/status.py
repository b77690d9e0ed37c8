"""The status store: one row per request in Azure Table storage, so anyone can look up what happened.

The ACR API keeps no history of failed imports; this table does. Rows hold no secret: reasons are
redacted before they get here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.outcome import State
from shared.storage import LazyTable

if TYPE_CHECKING:
    from shared.request import ImportRequest

PARTITION = "import"
REFRESH_PARTITION = "refresh"  # shared/refresh.py's summaries: `run-<time>` rows, and `latest` (kept)


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
    checks: int = 0  # looks at a long-running import so far; a follow-up message with fewer is stale
    operation: str = ""  # ARM's operation URL of the running import, so a redelivery watches it, not a new one
    operation_started_at: str = ""
    created_at: str = ""
    updated_at: str = ""
    transitions: list[dict[str, str]] = field(default_factory=list)

    def to_entity(self) -> dict[str, Any]:
        return {
            "PartitionKey": PARTITION, "RowKey": self.id, "State": str(self.state), "Source": self.source,
            "Target": self.target, "TargetTags": json.dumps(self.target_tags),
            "UntaggedTargetRepositories": json.dumps(self.untagged_target_repositories), "Mode": self.mode,
            "Reason": self.reason[:16000], "Kind": self.kind, "Code": self.code, "Attempts": self.attempts,
            "Digest": self.digest, "Platforms": self.platforms if self.platforms is not None else -1,
            "Checks": self.checks, "Operation": self.operation, "OperationStartedAt": self.operation_started_at,
            "CreatedAt": self.created_at, "UpdatedAt": self.updated_at,
            "Transitions": json.dumps(self.transitions[-50:]),
        }

    @classmethod
    def from_entity(cls, entity: dict[str, Any]) -> StatusRecord:
        platforms = entity.get("Platforms", -1)
        return cls(
            id=entity["RowKey"], state=State(entity["State"]), source=entity.get("Source", ""),
            target=entity.get("Target", ""), target_tags=json.loads(entity.get("TargetTags") or "[]"),
            untagged_target_repositories=json.loads(entity.get("UntaggedTargetRepositories") or "[]"),
            mode=entity.get("Mode", ""), reason=entity.get("Reason", ""), kind=entity.get("Kind", ""),
            code=entity.get("Code", ""), attempts=int(entity.get("Attempts", 0)), digest=entity.get("Digest", ""),
            platforms=None if platforms in (None, -1) else int(platforms), checks=int(entity.get("Checks", 0)),
            operation=entity.get("Operation", ""), operation_started_at=entity.get("OperationStartedAt", ""),
            created_at=entity.get("CreatedAt", ""), updated_at=entity.get("UpdatedAt", ""),
            transitions=json.loads(entity.get("Transitions") or "[]"),
        )


class StatusStore:
    """Rows keyed by request id. A write moves a request to a state and remembers when it did."""

    def __init__(self, table_name: str, service=None) -> None:
        self._client = LazyTable(table_name, service)

    def get(self, request_id: str) -> StatusRecord | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return StatusRecord.from_entity(self._client().get_entity(PARTITION, request_id))
        except ResourceNotFoundError:
            return None

    def transition(self, request_id: str, state: State, **fields: Any) -> StatusRecord:
        """Move a request to `state`, creating its row on first sight; other fields update when given."""
        now = utc_now().isoformat()
        record = self.get(request_id) or StatusRecord(id=request_id, state=state, created_at=now)
        for name, value in fields.items():
            if value is not None:
                setattr(record, name, value)
        if not record.transitions or record.transitions[-1].get("state") != str(state) or fields.get("attempts"):
            record.transitions.append({"state": str(state), "at": now})
        record.state = state
        record.updated_at = now
        from azure.data.tables import UpdateMode

        self._client().upsert_entity(record.to_entity(), mode=UpdateMode.REPLACE)
        return record

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
        return sorted((StatusRecord.from_entity(e) for e in entities), key=lambda r: r.updated_at)

    def prune(self, older_than: datetime) -> int:
        """Delete request rows last updated before `older_than`, and refresh run summaries written before it.

        The refresh `latest` row carries live backoff state and is never pruned. Returns how many rows went.
        """
        from azure.core.exceptions import ResourceNotFoundError

        table = self._client()
        keys = ["PartitionKey", "RowKey"]
        stale = [*table.query_entities(f"PartitionKey eq '{PARTITION}' and UpdatedAt lt @cutoff",
                                       parameters={"cutoff": older_than.isoformat()}, select=keys),
                 *table.query_entities(f"PartitionKey eq '{REFRESH_PARTITION}' and Timestamp lt @cutoff",
                                       parameters={"cutoff": older_than}, select=keys)]
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


def prune_expired(store: StatusStore, retention_days: float, now: datetime | None = None) -> int:
    """Apply STATUS_RETENTION_DAYS (0 keeps everything). Cheap: one filtered query, a delete per old row."""
    if retention_days <= 0:
        return 0
    return store.prune((now or utc_now()) - timedelta(days=retention_days))


def request_fields(request: ImportRequest) -> dict[str, Any]:
    """What a status row shows of a valid request. Credentials are never in it (only a set's name is), and an
    inline password is scrubbed even from what parsed: a producer may have used it as the source's name."""
    from shared.redact import redact_text

    secrets = (request.credentials.password,) if request.credentials else ()
    return {"source": redact_text(str(request.source), secrets), "target": str(request.target),
            "target_tags": [redact_text(t, secrets) for t in request.target_tags],
            "untagged_target_repositories": [redact_text(r, secrets) for r in request.untagged_target_repositories],
            "mode": request.mode}
