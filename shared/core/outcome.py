"""What can happen to an import request: problems, failure kinds, the one terminal state it ends in, and
the `Outcome` one delivery of it (or of an ACR event) ends with."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    """How a failure is handled: rejected and permanent are final at once; transient is retried."""

    REJECTED = "rejected"
    TRANSIENT = "transient"
    PERMANENT = "permanent"


class State(StrEnum):
    RECEIVED = "received"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    SKIPPED = "skipped"
    REJECTED = "rejected"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        """The request ended: nothing more happens to it unless it is sent again."""
        return self in TERMINAL_STATES

    @property
    def ended_well(self) -> bool:
        """Ended as asked: imported, or nothing to import (a repeated delivery of it changes nothing)."""
        return self in ENDED_WELL

    @property
    def ended_badly(self) -> bool:
        """Ended without the import: the same request may start again on its row (a redrive, a re-send)."""
        return self in ENDED_BADLY


# The status partitions, defined here only (a StrEnum's class attributes would be members).
ENDED_WELL = frozenset({State.SUCCEEDED, State.SKIPPED})
ENDED_BADLY = frozenset({State.REJECTED, State.FAILED})
TERMINAL_STATES = ENDED_WELL | ENDED_BADLY
# A state by the name stored and sent for it (text read back from a table or a query is checked against this).
STATES_BY_NAME = {str(s): s for s in State}
STATE_NAMES = tuple(STATES_BY_NAME)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a request: the field (a JSON path like `targetTags[1]`) and the rule it breaks."""

    field: str
    rule: str

    def __str__(self) -> str:
        return f"{self.field}: {self.rule}"


@dataclass(frozen=True)
class Failure:
    """An import that did not succeed, as a value: its kind, the service's code, and a message for a person."""

    kind: Kind
    code: str
    message: str
    retry_after: float | None = None

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.code else self.message


def rejection(problems: list[Problem]) -> Failure:
    return Failure(Kind.REJECTED, "InvalidRequest", "; ".join(str(p) for p in problems))


@dataclass(frozen=True)
class Outcome:
    """What one delivery did: the state it left the request (or event record) in, and why."""

    request_id: str
    state: State
    reason: str = ""
    attempts: int = 0
    failure: Failure | None = None
    retry_in_seconds: float | None = None
