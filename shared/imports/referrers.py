"""Referrers travel with the image: after the import (or when IfChanged finds the image unchanged), what refers
to it in the source is found (shared/registry/referrers.py) and each one the target lacks is imported by
digest through the same ACR import API, into every target repository of the request.

ACR's import copies an image and all its platforms but none of its referrers (dotnet/docker-tools issue
#1999, fixed there the same way: discover, then import each). Referrers are small (a signature is a few
KiB), so their imports are started together and watched to their end within IMPORT_WAIT_SECONDS, never
handed over: a referrer still importing then counts as missing, and a `required` request is retried.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.app_context import Worker
from shared.azure.arm import OperationStatus
from shared.azure.deadlines import ARM_CALL_SECONDS
from shared.core.failures import classify_error
from shared.core.outcome import Kind
from shared.core.referrers import ReferrerChoice, count_by_type
from shared.core.request import ImportRequest
from shared.core.resource_ids import RegistryId
from shared.imports.engine import referrer_parameters, resolve_source_registry, source_access
from shared.registry.client import RegistryError, deadline_scope, index_entries
from shared.registry.referrers import Referrer, Walk, find_referrers, missing_in

MAX_DIGESTS_TEXT = 16000  # characters of the row's referrer digests (a table property holds 32K characters)
MAX_NOTED = 3             # failures named in a reason; the rest are counted

OUT_OF_TIME = ("not finished: the invocation's time for referrers ran out (shared/azure/deadlines.py); the next "
               "attempt or refresh brings it")
MAX_LOOK_FAILURES = 4     # looks in a row ARM may fail (5xx, no answer) before a referrer counts as missing


@dataclass(frozen=True)
class Watch:
    """How the worker looks at an import's operation (a 5xx or no answer comes back as `failed_with`, a 429 as
    `throttled`), and how long it waits between looks (its schedule and ARM's read budget)."""

    look: Callable[[str], OperationStatus]
    delay: Callable[[float, float | None, int], float]  # (seconds running, Retry-After, looks so far)


@dataclass(frozen=True)
class Carried:
    """What came along with an image: found in the source (admitted by the choice), imported now, already
    there, and what could not be imported (each with why)."""

    choice: ReferrerChoice
    walk: Walk
    imported: tuple[Referrer, ...] = ()
    failed: tuple[str, ...] = ()
    retryable: bool = True  # whether trying again may help (False: every import that failed, failed for good)

    @property
    def incomplete(self) -> bool:
        return bool(self.failed) or not self.walk.complete

    @property
    def problems(self) -> tuple[str, ...]:
        """Why the target may lack a referrer: imports that failed, subjects not read, a bound reached."""
        return (*self.failed, *(f"not read: {u}" for u in self.walk.unread), *((self.walk.cut,) if self.walk.cut
                                                                                else ()))

    def row_fields(self) -> dict[str, Any]:
        failed = {text.split(" ", 1)[0] for text in self.failed}
        there = [r for r in self.walk.found if r.digest not in failed]
        digests = ",".join(dict.fromkeys(r.digest for r in there))
        if len(digests) > MAX_DIGESTS_TEXT:
            digests = digests[:MAX_DIGESTS_TEXT].rsplit(",", 1)[0] + ",…"
        return {"referrers": count_by_type(r.artifact_type or "(none)" for r in there) or "none",
                "referrer_digests": digests}

    def note(self) -> str:
        """A clause for the outcome's reason: what came along, and any warning."""
        found = len(self.walk.found)
        text = f"{found} referrer{'s' if found != 1 else ''} ({len(self.imported)} imported now)" if found else \
            "no referrers"
        problems = self.problems
        if problems:
            shown = "; ".join(problems[:MAX_NOTED]) + (f"; and {len(problems) - MAX_NOTED} more"
                                                       if len(problems) > MAX_NOTED else "")
            text += f"; {'' if self.choice.required else 'warning: '}referrers missing in the target: {shown}"
        return text


def carry_referrers(worker: Worker, request: ImportRequest, digest: str, watch: Watch, *, deadline: float,
                    children: list[str] | None = None) -> Carried | None:
    """Find the image's referrers in the source and import those the target lacks. None when the request
    asks for none. Never raises for a registry or an import: what failed is in `Carried.failed`. `children`:
    the image's platform manifests when the caller has just read them (else one GET of the target). Every
    read and ARM call ends by `deadline` (shared/azure/deadlines.py `referrers_deadline`); what could not be
    done by then is missing."""
    with deadline_scope(deadline):
        return _carry(worker, request, digest, watch, deadline, children)


def _carry(worker: Worker, request: ImportRequest, digest: str, watch: Watch, deadline: float,
           children: list[str] | None) -> Carried | None:
    if not request.referrers.enabled or worker.registries is None or worker.identity is None:
        return None
    settings, registries, identity = worker.settings, worker.registries, worker.identity
    suffix = settings.acr_login_server_suffix
    target_host = request.target.login_server(suffix)
    repositories = list(dict.fromkeys([*(t.repository for t in request.target_tags),
                                       *request.untagged_target_repositories]))
    subjects = [digest, *(children or [])]
    if children is None:
        try:
            described = registries.manifest(target_host, repositories[0], digest, identity)
            if described is not None and isinstance(described[1].get("manifests"), list):
                subjects += [e.digest for e in index_entries(target_host, described[1], "the imported index")]
        except RegistryError as err:
            return Carried(request.referrers, Walk(unread=(f"{digest[:19]}…: {err}",)))
    host, auth = source_access(request, identity, suffix=suffix)
    walk = find_referrers(registries, host, request.source.repository, subjects, auth, request.referrers,
                          max_depth=settings.referrers_max_depth, max_count=settings.referrers_max_count,
                          cosign_tags=settings.referrers_cosign_tags)
    try:
        missing = missing_in(registries, target_host, repositories, walk.found, identity)
    except RegistryError as err:
        missing = [(r, repo) for r in walk.found for repo in repositories]
        walk = Walk(walk.found, (*walk.unread, f"target not read: {err}"), walk.cut, walk.skipped, walk.reads)
    unread = bool(walk.unread)  # a read that failed may pass another time; a count bound reached will not
    if not missing:
        return Carried(request.referrers, walk, retryable=unread)
    imported, failed, retryable = _import_all(worker, request, missing, watch, deadline)
    return Carried(request.referrers, walk, imported, failed, retryable or unread)


def _import_all(worker: Worker, request: ImportRequest, missing: list[tuple[Referrer, str]],
                watch: Watch, deadline: float) -> tuple[tuple[Referrer, ...], tuple[str, ...], bool]:
    """Start every import, then watch them together until each ended or IMPORT_WAIT_SECONDS ran out."""
    settings, arm = worker.settings, worker.arm
    began = time.monotonic()
    failed: dict[str, tuple[str, bool]] = {}  # digest -> why, and whether it may pass another time
    running: dict[str, tuple[Referrer, str]] = {}  # operation URL -> what it imports
    look_failures: dict[str, int] = {}  # operation URL -> looks in a row ARM failed
    done: list[Referrer] = []
    try:
        source_registry = resolve_source_registry(request, arm.registry_by_login_server,
                                                  suffix=settings.acr_login_server_suffix)
    except Exception as exc:
        why, retryable = _why(worker, exc, request.target)
        return (), tuple(f"{r.digest} ({r.artifact_type or 'no artifact type'}): {why}" for r, _ in missing), \
            retryable
    for referrer, repository in missing:
        if time.monotonic() + ARM_CALL_SECONDS > deadline:
            failed[referrer.digest] = (OUT_OF_TIME, True)
            continue
        body = referrer_parameters(request, source_registry, referrer.digest, repository, referrer.tag)
        try:
            url, _ = arm.start_import(request.target, body)
        except Exception as exc:
            failed[referrer.digest] = _why(worker, exc, request.target)
            continue
        if url is None:
            done.append(referrer)
        else:
            running[url] = (referrer, repository)
    looks = 0
    with arm.watching(request.target):
        while running:
            looks += 1
            retry_after = None
            for url, (referrer, _) in list(running.items()):
                try:
                    status = watch.look(url)
                except Exception as exc:  # the import failed (ARM's error), or the look met something unknown
                    failed[referrer.digest] = _why(worker, exc, request.target)
                    del running[url]
                    continue
                if status.done:
                    done.append(referrer)
                    del running[url]
                    continue
                if status.failed_with is not None and not status.throttled:
                    look_failures[url] = look_failures.get(url, 0) + 1
                    if look_failures[url] >= MAX_LOOK_FAILURES:
                        failed[referrer.digest] = (f"ARM answered {MAX_LOOK_FAILURES} looks at its import in a row "
                                                   f"with {status.failed_with}", True)
                        del running[url]
                        continue
                else:
                    look_failures.pop(url, None)
                if status.retry_after:
                    retry_after = max(retry_after or 0.0, status.retry_after)
            if not running:
                break
            delay = max(watch.delay(time.monotonic() - began, retry_after, looks), retry_after or 0.0)
            if time.monotonic() + delay + ARM_CALL_SECONDS > deadline:
                for referrer, _ in running.values():
                    failed[referrer.digest] = (OUT_OF_TIME, True)
                break
            if time.monotonic() - began + delay > settings.import_wait_seconds:
                for referrer, _ in running.values():
                    failed[referrer.digest] = (f"still importing after {settings.import_wait_seconds:.0f} s "
                                           "(IMPORT_WAIT_SECONDS); it may yet land", True)
                break
            time.sleep(delay)
    by_digest = {r.digest: r for r, _ in missing}
    return (tuple(r for r in dict.fromkeys(done) if r.digest not in failed),
            tuple(f"{d} ({by_digest[d].artifact_type or 'no artifact type'}): {why}" for d, (why, _) in failed.items()),
            any(retryable for _, retryable in failed.values()))


def _why(worker: Worker, exc: Exception, target: RegistryId) -> tuple[str, bool]:
    """What an error of a referrer's import means, and whether another try may pass (a transient one)."""
    failure = classify_error(exc, seconds_since_first_attempt=0.0,
                             authorization_grace_seconds=worker.settings.authorization_grace_seconds,
                             target=str(target))
    if failure is None:
        return type(exc).__name__, True
    return str(failure), failure.kind is Kind.TRANSIENT
