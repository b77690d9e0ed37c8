"""Replication on push: rules, loading them (refusing cycles), and what one ACR event becomes.

An import into a registry raises ImagePushed there too, so rules that lead back to a registry they
start from would copy forever. Cycles are refused when the rules are loaded; a chain (A->B, B->C) is
fine: B's ImagePushed from our own import carries the image on to C, once.

`plan_event` is pure (event + rules -> import request documents, or why none); `replicate` does the
I/O through the app's objects: requests go on the queue (shared/imports/claims.py `queue_once`), ignored and
rejected events get their status row (shared/imports/recorder.py). Events that reach the import queue (Event Grid
delivering straight into it) come here from shared/dispatch.py: `from_queue` and `poisoned`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from shared.app_context import Worker
from shared.azure.config_source import ConfigUnavailable, read_config
from shared.core import policy
from shared.core.outcome import Failure, Kind, Outcome, Problem, State
from shared.core.patterns import UnsafePattern, compile_pattern
from shared.core.redact import redact_text
from shared.core.reference import InvalidReference, parse_repository
from shared.core.referrers import DEFAULT_CHOICE, ReferrerChoice, parse_choice
from shared.core.request import ImportRequest, Rejected, field_path, validate_document
from shared.core.resource_ids import RegistryId, parse_registry_id
from shared.core.settings import REPLICATION, Settings
from shared.imports.claims import queue_once
from shared.imports.recorder import (
    dead_letter,
    finish_rejected,
    letter,
    log_outcome,
    record_ignored,
    record_rejected,
    settings_refusal,
)
from shared.registry.client import RegistryError
from shared.replication import events as ev
from shared.replication import journal
from shared.schemas import validator

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator

log = logging.getLogger("acr_importer")
DEFAULT_MODE = "IfChanged"
EVENT_FIELD = "(event)"


class ReplicationConfigError(ValueError):
    """The rules cannot be used (unreadable, invalid, or cyclic); the message says where."""


@dataclass(frozen=True)
class NamePatterns:
    include: tuple[re.Pattern[str], ...] = ()
    exclude: tuple[re.Pattern[str], ...] = ()

    def selects(self, name: str) -> bool:
        if any(p.fullmatch(name) for p in self.exclude):
            return False
        return not self.include or any(p.fullmatch(name) for p in self.include)


@dataclass(frozen=True)
class ReplicationRule:
    index: int
    name: str
    source: RegistryId
    targets: tuple[RegistryId, ...]
    repositories: NamePatterns
    tags: NamePatterns
    target_prefix: str
    mode: str
    referrers: ReferrerChoice | None = None  # the rule's `referrers`; None: the REFERRERS settings decide

    @property
    def label(self) -> str:
        return f"rules[{self.index}] ({self.name})"

    def selects(self, repository: str, tag: str) -> bool:
        return self.repositories.selects(repository) and self.tags.selects(tag)


@dataclass(frozen=True)
class ReplicationRules:
    rules: tuple[ReplicationRule, ...]

    def for_topic(self, topic: RegistryId) -> list[ReplicationRule]:
        return [r for r in self.rules if r.source.same_as(topic)]


def _validator() -> Draft202012Validator:
    return validator("replication-rules.v1.json")


def parse_rules(text: str, settings: Settings) -> ReplicationRules:
    """Every rule, or ReplicationConfigError listing every problem (a partial rule set could copy where
    nobody meant to, or miss a guard, so one bad rule refuses the set)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise ReplicationConfigError(f"replication rules: not JSON: {err.msg} at line {err.lineno}") from None
    problems = [Problem(field_path(e.absolute_path), e.message[:200])
                for e in sorted(_validator().iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))]
    if problems:
        raise ReplicationConfigError("replication rules: " + "; ".join(map(str, problems)))
    rules = [_rule(index, entry, settings, problems) for index, entry in enumerate(doc["rules"])]
    if problems:
        raise ReplicationConfigError("replication rules: " + "; ".join(map(str, problems)))
    found = tuple(r for r in rules if r is not None)
    cycle = find_cycle(found)
    if cycle:
        raise ReplicationConfigError("replication rules form a cycle, so an image would be copied around it "
                                     f"forever (each import raises ImagePushed again): {describe_cycle(cycle)}; "
                                     "remove one of these rules")
    return ReplicationRules(found)


def _registry(value: str, where: str, problems: list[Problem]) -> RegistryId | None:
    try:
        return parse_registry_id(value)
    except (ValueError, KeyError) as err:
        problems.append(Problem(where, str(err) if isinstance(err, ValueError) else "is not a registry resource id"))
        return None


def _patterns(entry: dict[str, Any], name: str, where: str, problems: list[Problem]) -> NamePatterns:
    compiled: dict[str, list[re.Pattern[str]]] = {"include": [], "exclude": []}
    for kind in compiled:
        for i, text in enumerate((entry.get(name) or {}).get(kind, [])):
            try:
                compiled[kind].append(compile_pattern(text))
            except UnsafePattern as err:  # registries choose the names matched: see shared.core.patterns
                problems.append(Problem(f"{where}.{name}.{kind}[{i}]", str(err)))
    return NamePatterns(tuple(compiled["include"]), tuple(compiled["exclude"]))


def _rule(index: int, entry: dict[str, Any], settings: Settings, problems: list[Problem]) -> ReplicationRule | None:
    where = f"rules[{index}]"
    before = len(problems)
    source = _registry(entry["source"], f"{where}.source", problems)
    targets = [_registry(t, f"{where}.targets[{i}]", problems) for i, t in enumerate(entry["targets"])]
    if source is not None:
        refusal = policy.source_refusal(None, source, settings)
        if refusal:
            problems.append(Problem(f"{where}.source", f"{refusal}; add its login server or resource id"))
    for i, target in enumerate(targets):
        refusal = policy.target_refusal(target, settings) if target is not None else None
        if refusal:
            problems.append(Problem(f"{where}.targets[{i}]", refusal))
    prefix = entry.get("targetPrefix", "")
    if prefix:
        try:
            parse_repository(prefix.rstrip("/") + "/x" if prefix.endswith("/") else prefix + "x")
        except InvalidReference as err:
            problems.append(Problem(f"{where}.targetPrefix", err.reason))
    repositories = _patterns(entry, "repositories", where, problems)
    tags = _patterns(entry, "tags", where, problems)
    referrers = parse_choice(entry["referrers"], f"{where}.referrers") if "referrers" in entry else None
    if isinstance(referrers, Problem):
        problems.append(referrers)
    if len(problems) > before or source is None or isinstance(referrers, Problem):
        return None
    return ReplicationRule(index, entry.get("name") or where, source, tuple(t for t in targets if t),
                           repositories, tags, prefix, entry.get("mode", DEFAULT_MODE), referrers)


def find_cycle(rules: Iterable[ReplicationRule]) -> list[tuple[RegistryId, ReplicationRule]] | None:
    """A cycle in the registry graph (source -> each target), as (registry, rule leaving it) steps.

    Registry-level on purpose: repository filters and prefixes could make some cycles harmless, but
    proving that for regular expressions is not worth the risk of an endless copy loop.
    """
    edges: dict[str, list[tuple[str, RegistryId, ReplicationRule]]] = {}
    names: dict[str, RegistryId] = {}
    for rule in rules:
        names[str(rule.source).lower()] = rule.source
        for target in rule.targets:
            names.setdefault(str(target).lower(), target)
            edges.setdefault(str(rule.source).lower(), []).append((str(target).lower(), target, rule))
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[tuple[str, ReplicationRule]] = []

    def visit(node: str) -> list[tuple[str, ReplicationRule]] | None:
        state[node] = 1
        for nxt, _, rule in edges.get(node, []):
            path.append((node, rule))
            if state.get(nxt) == 1:
                start = next(i for i, (n, _) in enumerate(path) if n == nxt)
                return path[start:]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
            path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return [(names[n], rule) for n, rule in found]
    return None


def describe_cycle(cycle: list[tuple[RegistryId, ReplicationRule]]) -> str:
    hops = " -> ".join([registry.name for registry, _ in cycle] + [cycle[0][0].name])
    return f"{hops} (by {', '.join(rule.label for _, rule in cycle)})"


def load_rules(settings: Settings) -> ReplicationRules:
    """The rules from REPLICATION_RULES (a file relative to the app root, or an https blob URL, read at
    most once a minute); raises ReplicationConfigError, naming the setting, when they cannot be used."""
    blocked = settings.problems_for(REPLICATION)
    if blocked:
        raise ReplicationConfigError("settings stop replication: " + "; ".join(str(p) for p in blocked))
    try:
        text = read_config("REPLICATION_RULES", settings.replication_rules, settings)
    except ConfigUnavailable as err:
        raise ReplicationConfigError(str(err)) from None
    return parse_rules(text, settings)


# --- one event -> what to do ------------------------------------------------------------------------
@dataclass(frozen=True)
class EventPlan:
    """What an event becomes: import request documents, or `state` (skipped/rejected) with a reason."""

    event: ev.RegistryEvent | ev.UnreadableEvent
    state: State
    reason: str
    requests: tuple[dict[str, Any], ...] = ()

    @property
    def record_id(self) -> str:
        """The status row of an event that imports nothing (deterministic: a redelivery finds it)."""
        return f"event-{self.event.key}"


def request_id(event: ev.RegistryEvent, target: RegistryId, target_tag: str) -> str:
    """Deterministic per (event, target, tag): Event Grid redelivers, and a duplicate must do nothing."""
    text = f"{event.key}|{str(target).lower()}|{target_tag}"
    return f"evt-{hashlib.sha256(text.encode()).hexdigest()[:32]}"


@dataclass(frozen=True)
class PushedReferrer:
    """An untagged manifest that names a subject: a signature, SBOM or attestation pushed by digest."""

    subject: str
    artifact_type: str


class ReferrerLookup(Protocol):
    """The reads that tell whether an untagged push is a referrer, and whether its subject was replicated.
    Raises RegistryError when a registry cannot be read."""

    def referrer(self, source: RegistryId, repository: str, digest: str) -> PushedReferrer | None:
        ...

    def holds(self, target: RegistryId, repository: str, digest: str) -> bool:
        ...


def plan_event(event: ev.RegistryEvent | ev.UnreadableEvent, rules: ReplicationRules,
               lookup: ReferrerLookup | None = None, default_referrers: ReferrerChoice = DEFAULT_CHOICE) -> EventPlan:
    """What an event asks for. `lookup` reads untagged pushes (None: they are ignored, as before referrers);
    `default_referrers` is the REFERRERS setting, for rules without a `referrers` option."""
    if isinstance(event, ev.UnreadableEvent):
        return EventPlan(event, State.REJECTED, f"malformed event: {event.reason}")
    what = f"event {event.id[:128]!r} ({event.event_type})"
    try:
        topic = parse_registry_id(event.topic)
    except (ValueError, KeyError):
        return EventPlan(event, State.REJECTED, f"{what}: topic {event.topic[:256]!r} is not a container registry "
                                                "resource id; no rule names it")
    selected = rules.for_topic(topic)
    if not selected:
        return EventPlan(event, State.REJECTED, f"{what} from {topic.name!r} ({topic}): no replication rule names "
                                                "this registry as its source, so its events are not trusted")
    if event.event_type != ev.IMAGE_PUSHED:
        return EventPlan(event, State.SKIPPED, f"ignored: {what} from {topic.name!r}; only ImagePushed is "
                                               "replicated (deletes and charts are recorded, never copied)")
    if event.problems or not event.repository or not event.digest:
        missing = [n for n in ("repository", "digest") if not getattr(event, n)]
        reasons = [*event.problems, *(f"data.target.{n} is missing" for n in missing
                                      if not any(p.startswith(f"data.target.{n} ") for p in event.problems))]
        return EventPlan(event, State.REJECTED, f"malformed {what}: {'; '.join(reasons)}")
    image = f"{event.repository}@{event.digest}"
    if not event.tag:
        return _plan_untagged(event, topic, selected, lookup, default_referrers)
    documents: dict[str, dict[str, Any]] = {}
    for rule in selected:
        if not rule.selects(event.repository, event.tag):
            continue
        target_tag = f"{rule.target_prefix}{event.repository}:{event.tag}"
        for target in rule.targets:
            rid = request_id(event, target, target_tag)
            document: dict[str, Any] = {"id": rid, "source": image, "sourceRegistry": str(topic), "target": str(target),
                                        "targetTags": [target_tag], "mode": rule.mode}
            if rule.referrers is not None:
                document["referrers"] = rule.referrers.as_document()
            documents.setdefault(rid, document)
    if not documents:
        names = ", ".join(r.label for r in selected)
        return EventPlan(event, State.SKIPPED, f"ignored: {event.repository}:{event.tag} from {topic.name!r} is "
                                               f"not selected by {names}")
    return EventPlan(event, State.RECEIVED, f"{image} ({event.repository}:{event.tag}) -> "
                                            f"{len(documents)} import(s)", tuple(documents.values()))


def _plan_untagged(event: ev.RegistryEvent, topic: RegistryId, selected: list[ReplicationRule],
                   lookup: ReferrerLookup | None, default: ReferrerChoice) -> EventPlan:
    """An untagged push: a platform of a multi-arch push or a push by digest (the tagged push carries those),
    or a referrer (a signature, SBOM or attestation pushed with a `subject`, as notation, oras and cosign
    in OCI 1.1 mode do on a registry with the referrers API, such as ACR).

    Event Grid's `data.target` says only mediaType, size, digest, repository (no artifactType, no subject:
    learn.microsoft.com event-schema-container-registry and the SDKs' ContainerRegistryEventTarget), and a
    referrer's mediaType is the image manifest's, so the manifest is read from the source (one GET on the
    source ACR). A referrer is imported by digest into each target whose rule admits its artifact type, when
    that target holds its subject: there the subject was replicated earlier and its import is over, so it
    would never see this referrer. Where the subject is not (yet) there, its import brings its referrers along
    when it runs, or the rule's tag filters left it out."""
    assert event.repository is not None and event.digest is not None
    image = f"{event.repository}@{event.digest}"
    untagged = f"ignored: untagged manifest {image} (a platform of a multi-arch push, or a push by digest); the " \
               "tagged push carries the image"
    selecting = [r for r in selected if r.repositories.selects(event.repository)]
    wanting = [(r, r.referrers or default) for r in selecting if (r.referrers or default).enabled]
    if lookup is None or not selecting:
        return EventPlan(event, State.SKIPPED, untagged)
    if not wanting:
        return EventPlan(event, State.SKIPPED, f"{untagged}; the rules selecting it take no referrers")
    try:
        pushed = lookup.referrer(topic, event.repository, event.digest)
    except RegistryError as err:
        return EventPlan(event, State.SKIPPED, f"{untagged}; could not read whether it is a referrer: "
                                               f"{str(err)[:300]}")
    if pushed is None:
        return EventPlan(event, State.SKIPPED, untagged)
    what = f"referrer {image} ({pushed.artifact_type or 'no artifact type'}) of {pushed.subject}"
    documents: dict[str, dict[str, Any]] = {}
    waiting: list[str] = []
    for rule, choice in wanting:
        if not choice.admits(pushed.artifact_type):
            continue
        repository = f"{rule.target_prefix}{event.repository}"
        for target in rule.targets:
            try:
                there = lookup.holds(target, repository, pushed.subject)
            except RegistryError as err:
                waiting.append(f"{target.name}: not read: {str(err)[:200]}")
                continue
            if not there:
                waiting.append(f"{target.name}/{repository} lacks the subject")
                continue
            rid = request_id(event, target, f"{repository}@{event.digest}")
            document: dict[str, Any] = {"id": rid, "source": image, "sourceRegistry": str(topic),
                                        "target": str(target), "untaggedTargetRepositories": [repository],
                                        "mode": "NoForce"}
            if rule.referrers is not None:
                document["referrers"] = rule.referrers.as_document()
            documents.setdefault(rid, document)
    if not documents:
        why = "; ".join(waiting[:5]) if waiting else "no rule's referrers option admits its artifact type"
        return EventPlan(event, State.SKIPPED, f"ignored: {what}: {why} (an import of the subject brings its "
                                               "referrers along)")
    return EventPlan(event, State.RECEIVED, f"{what} -> {len(documents)} import(s) by digest",
                     tuple(documents.values()))


class RegistryLookup:
    """ReferrerLookup over the app's registry client and identity (the app reads both registries)."""

    def __init__(self, worker: Worker) -> None:
        self._registries, self._identity = worker.reader()
        self._suffix = worker.settings.acr_login_server_suffix

    def referrer(self, source: RegistryId, repository: str, digest: str) -> PushedReferrer | None:
        found = self._registries.manifest(source.login_server(self._suffix), repository, digest, self._identity)
        if found is None:
            return None
        document = found[1]
        subject = document.get("subject")
        if not isinstance(subject, dict) or not isinstance(subject.get("digest"), str):
            return None
        config = document.get("config")
        artifact_type = document.get("artifactType") or (config.get("mediaType") if isinstance(config, dict) else "")
        return PushedReferrer(subject["digest"], artifact_type if isinstance(artifact_type, str) else "")

    def holds(self, target: RegistryId, repository: str, digest: str) -> bool:
        return self._registries.head_manifest(target.login_server(self._suffix), repository, digest,
                                              self._identity) is not None


# --- the I/O ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EventResult:
    event_id: str
    state: State  # RECEIVED: its imports are queued; SKIPPED or REJECTED: recorded with the reason
    reason: str
    request_ids: tuple[str, ...] = ()
    outcome: str = ""  # the journal's: planned, ignored, rejected, duplicate (shared/replication/journal.py)


def replicate(worker: Worker, payload: Any) -> list[EventResult]:
    """Handle one delivery (an event or an array of them). Never raises for what an event says; raises
    ReplicationConfigError when the rules are unusable (so the delivery is retried after a fix) and
    storage errors (so the host retries)."""
    found = ev.read_events(payload)
    rules = load_rules(worker.settings)
    lookup = RegistryLookup(worker)
    results = []
    for event in found:
        result = _handle(worker, plan_event(event, rules, lookup, worker.settings.referrers))
        _journal(worker, event, result.outcome, result.reason, result.request_ids)
        results.append(result)
    return results


def _handle(worker: Worker, plan: EventPlan) -> EventResult:
    event = plan.event
    document = event.document if isinstance(event, ev.UnreadableEvent) else _event_summary(event)
    if plan.state is State.SKIPPED:
        record_ignored(worker, plan.record_id, plan.reason, document)
        return EventResult(event.id, plan.state, plan.reason, outcome=journal.IGNORED)
    if plan.state is State.REJECTED:
        recorded = _reject_once(worker, plan.record_id, plan.reason, document)
        return EventResult(event.id, plan.state, recorded.reason if recorded else plan.reason,
                           outcome=journal.REJECTED if recorded else journal.DUPLICATE)
    queued, sent = [], 0
    for doc in plan.requests:
        checked = validate_document(doc, worker.settings, fallback_id=doc["id"])
        if isinstance(checked, Rejected):
            _reject_once(worker, doc["id"], f"event {event.id[:128]!r}: {checked.reason}", doc)
            continue
        sent += _enqueue_once(worker, checked)
        queued.append(checked.id)
    log.info(json.dumps({"event": "replication", "eventId": event.id[:128], "topic": event.topic[:512],
                         "subject": getattr(event, "subject", "")[:512], "requests": queued,
                         "reason": plan.reason}))
    outcome = journal.PLANNED if sent else journal.DUPLICATE if queued else journal.REJECTED
    return EventResult(event.id, plan.state, plan.reason, tuple(queued), outcome)


def _enqueue_once(worker: Worker, request: ImportRequest) -> bool:
    """Queue the request unless a delivery of this event already did: its `evt-…` row is opened first (the
    worker runs a reserved id only on a row the app opened), then the message is sent. A redelivery finds
    the row and sends nothing, unless the first send failed before the row named its message. Whether it sent."""
    return queue_once(worker.status, request, worker.queues.enqueue, "queued by replication on push").sent


def _journal(worker: Worker, event: ev.RegistryEvent | ev.UnreadableEvent, outcome: str, reason: str,
             imports: tuple[str, ...] = ()) -> None:
    """The event's row in the replication journal (redacted, bounded there); a row not written is logged."""
    def shown(value: str | None) -> str:
        return redact_text(value or "", worker._secrets)

    event_type = getattr(event, "event_type", "") or ""
    entry = journal.JournalEntry(
        id=shown(event.id), at=worker.clock().isoformat(), topic=shown(event.topic),
        repository=shown(getattr(event, "repository", None)), tag=shown(getattr(event, "tag", None)),
        digest=shown(getattr(event, "digest", None)), action=shown(event_type.rpartition(".")[2]), outcome=outcome,
        reason=shown(reason), imports=imports)
    if not journal.journal(worker.settings.status_table).record(entry, worker.clock()):
        log.warning(json.dumps({"event": "replication", "eventId": event.id[:128],
                                "problem": "the replication journal row was not written"}))


def _reject_once(worker: Worker, record_id: str, reason: str, document: Any) -> Outcome | None:
    previous = worker.status.get(record_id)
    if previous is not None and previous.state.terminal:
        return None
    return record_rejected(worker, Rejected(record_id, (Problem(EVENT_FIELD, reason),), document))


def _event_summary(event: ev.RegistryEvent) -> dict[str, Any]:
    return {"id": event.id, "topic": event.topic, "eventType": event.event_type, "subject": event.subject,
            "repository": event.repository, "tag": event.tag, "digest": event.digest}


# --- events on the import queue (shared/dispatch.py) --------------------------------------------------
def from_queue(worker: Worker, document: Any, *, message_id: str) -> list[EventResult] | list[Outcome]:
    """ACR events that reached the import queue: replicated, or, while the settings replication needs are
    broken, each recorded `failed` with the setting named (storage settings broken: SettingsUnusable)."""
    problems = worker.settings.problems_for(REPLICATION)
    if problems:
        return _events_refused(worker, document, settings_refusal(worker, problems, message_id=message_id))
    return replicate(worker, document)


def poisoned(worker: Worker, document: Any, *, message_id: str) -> list[Outcome]:
    """ACR events the host moved to the poison queue: recorded (rejected, or failed naming a broken setting)."""
    started = time.monotonic()
    problems = worker.settings.problems_for(REPLICATION)
    if problems:
        return _events_refused(worker, document, settings_refusal(worker, problems, message_id=message_id))
    return _events_poisoned(worker, document, started)


def _events_refused(worker: Worker, document: Any, reason: str) -> list[Outcome]:
    """ACR events on the queue while the settings replication needs are broken: each `failed`, with the
    reason, and dead-lettered (re-queue them after the fix)."""
    outcomes = []
    failure = Failure(Kind.PERMANENT, "SettingsInvalid", reason)
    for event in ev.read_events(document):
        record_id = f"event-{event.key}"
        previous = worker.status.get(record_id)
        if previous is not None and previous.state.terminal:
            continue
        raw = getattr(event, "document", None) or {"id": event.id, "topic": event.topic,
                                                   "eventType": event.event_type}
        started = time.monotonic()
        worker.status.transition(record_id, State.FAILED, reason=reason, kind=str(failure.kind), code=failure.code)
        dead_letter(worker, letter(worker, record_id, State.FAILED, reason, raw, failure, 0, extra_secrets=()))
        outcome = Outcome(record_id, State.FAILED, reason, 0, failure)
        log_outcome(worker, outcome, None, started, document=raw)
        _journal(worker, event, journal.REJECTED, reason)
        outcomes.append(outcome)
    return outcomes


def _events_poisoned(worker: Worker, document: Any, started: float) -> list[Outcome]:
    """Events whose every delivery crashed (usually unusable replication rules): rejected, so the reason is
    kept; the dead-letter copy can be re-queued once the cause is fixed."""
    reason = ("processing this event raised an error on every delivery, so the host moved it to the poison "
              "queue; the function logs say why (unusable replication rules stop every event)")
    outcomes = []
    for event in ev.read_events(document):
        record_id = f"event-{event.key}"
        previous = worker.status.get(record_id)
        if previous and previous.state.terminal:
            continue
        raw = getattr(event, "document", None) or {"id": event.id, "topic": event.topic,
                                                   "eventType": event.event_type}
        outcomes.append(finish_rejected(worker, Rejected(record_id, (Problem(EVENT_FIELD, reason),), raw),
                                         json.dumps(raw, default=str), started))
        _journal(worker, event, journal.REJECTED, outcomes[-1].reason)
    return outcomes
