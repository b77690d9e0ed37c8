"""Whether an unchanged image's referrers are in the target too: the refresh's extra reads, once per digest.

A tag whose digest is unchanged is "unchanged" only when its referrers are (issue 16): a signature or an
SBOM attached upstream to an image imported earlier must follow it. Referrers hang off digests, not tags,
so one run checks each (source repository, digest, target repository, choice) once, however many tags point
at that digest; threads meeting a digest another thread is checking wait for its answer.

One check reads: the image's manifest from the TARGET (an index's platform manifests are subjects too, and
Docker Hub counts a manifest GET upstream as a pull), the source's referrers of each subject
(shared/registry/referrers.py: the referrers API, else the tag schema, and cosign's tags), and one HEAD in
the target per referrer found. The worker's IfChanged request then imports only what the target lacks
(shared/imports/referrers.py).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass

from shared.core.referrers import ReferrerChoice
from shared.core.settings import Settings
from shared.registry.client import Auth, IdentityAuth, RegistryError, index_entries
from shared.registry.referrers import ReferrerReader, find_referrers, missing_in

MAX_PROBLEM = 300  # characters of why the referrers are not known, for the tag's reason


@dataclass(frozen=True)
class ReferrerState:
    """What one check found: how many referrers the source has (admitted by the choice), the digests of those
    the target lacks, and why the answer is incomplete ("" when it is complete)."""

    found: int = 0
    missing: tuple[str, ...] = ()
    problem: str = ""
    rate_limited: bool = False  # the source answered 429 while its referrers were read

    @property
    def known(self) -> bool:
        return not self.problem and not self.rate_limited


_Key = tuple[str, str, str, str, str, ReferrerChoice]


class ReferrerChecks:
    """The referrer checks of one refresh run, each (source repository, digest, target repository, choice)
    read once; shared by the run's threads. `checks` counts the checks that read the registries."""

    def __init__(self, reader: ReferrerReader, settings: Settings) -> None:
        self._reader = reader
        self._settings = settings
        self._lock = threading.Lock()
        self._answers: dict[_Key, Future[ReferrerState]] = {}
        self.checks = 0

    def check(self, *, host: str, repository: str, auth: Auth, digest: str, target_host: str,
              target_repository: str, identity: IdentityAuth, choice: ReferrerChoice) -> ReferrerState:
        """The referrers of `digest` in the source and which of them the target lacks. Registry errors are
        in `ReferrerState.problem`; anything else (a bug, an unusable identity) raises, for every thread
        waiting on the same digest alike."""
        key = (host, repository, digest, target_host, target_repository, choice)
        with self._lock:
            answer = self._answers.get(key)
            owner = answer is None
            if answer is None:
                answer = self._answers[key] = Future()
                self.checks += 1
        if not owner:
            return answer.result()
        try:
            state = self._read(host, repository, auth, digest, target_host, target_repository, identity, choice)
        except BaseException as exc:
            answer.set_exception(exc)
            raise
        answer.set_result(state)
        return state

    def _read(self, host: str, repository: str, auth: Auth, digest: str, target_host: str, target_repository: str,
              identity: IdentityAuth, choice: ReferrerChoice) -> ReferrerState:
        settings, reader = self._settings, self._reader
        subjects = [digest]
        try:
            described = reader.manifest(target_host, target_repository, digest, identity)
            if described is not None and isinstance(described[1].get("manifests"), list):
                subjects += [e.digest for e in index_entries(target_host, described[1], "the target's index")]
        except RegistryError as err:
            return ReferrerState(problem=f"target: {str(err)[:MAX_PROBLEM]}")
        walk = find_referrers(reader, host, repository, subjects, auth, choice,
                              max_depth=settings.referrers_max_depth, max_count=settings.referrers_max_count,
                              cosign_tags=settings.referrers_cosign_tags)
        try:
            missing = missing_in(reader, target_host, [target_repository], walk.found, identity)
        except RegistryError as err:
            return ReferrerState(len(walk.found), problem=f"target: {str(err)[:MAX_PROBLEM]}",
                                 rate_limited=walk.rate_limited)
        problem = "; ".join(f"not read: {u}" for u in walk.unread)[:MAX_PROBLEM]
        return ReferrerState(len(walk.found), tuple(dict.fromkeys(r.digest for r, _ in missing)), problem,
                             walk.rate_limited)
