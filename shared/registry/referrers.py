"""Finding what refers to an image in a registry, and which of it a target already holds.

Three ways a registry keeps referrers, read in this order for each subject digest:
- the OCI 1.1 referrers API (`GET /v2/<name>/referrers/<digest>`), which ACR, Docker Hub and most current
  registries serve;
- where a registry has no such API (404, as docker-registry 2.8 answers), the referrers tag schema: an index
  under the tag `sha256-<hex>` that OCI 1.1 clients keep up to date;
- cosign's tags `sha256-<hex>.sig`, `.att`, `.sbom` (cosign before its OCI 1.1 mode), when
  REFERRERS_COSIGN_TAGS is on and the choice admits their types: one HEAD each, for the image itself and for
  each referrer found (a signature on an SBOM), not for every platform manifest of an index: cosign signs
  what it is given, the index, unless told `--recursive`, and three HEADs per platform would cost an unsigned
  four-platform image twelve reads for nothing.

The walk is recursive (a signature on an SBOM is found as a referrer of the SBOM) and bounded by depth and
count; a digest met twice is read once, so a referrer naming its own subject, or a cycle, ends. A subject
whose referrers cannot be read is noted and the walk goes on; a registry that rate-limits ends it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared.core.referrers import COSIGN_TAG_TYPES, ReferrerChoice, cosign_tag, schema_tag
from shared.registry.client import Auth, Descriptor, ManifestHead, RateLimited, RegistryError, index_entries

MAX_NOTE = 160  # characters of one registry error kept per unread subject


class ReferrerReader(Protocol):
    """The reads a walk needs (RegistryClient has them; the refresh's planning tests give their own)."""

    def head_manifest(self, host: str, repository: str, reference: str, auth: Auth = None) -> ManifestHead | None:
        ...

    def manifest(self, host: str, repository: str, reference: str,
                 auth: Auth = None) -> tuple[ManifestHead, dict[str, Any]] | None:
        ...

    def referrers(self, host: str, repository: str, digest: str, auth: Auth = None) -> list[Descriptor] | None:
        ...


@dataclass(frozen=True)
class Referrer:
    """A manifest that refers to `subject`; `tag` is cosign's tag naming it ("" for one found by the referrers
    API or the tag schema), kept in the target too."""

    digest: str
    artifact_type: str
    subject: str
    tag: str = ""
    depth: int = 1


@dataclass(frozen=True)
class Walk:
    """What a walk found (admitted by the choice), what it could not read, and the bound that cut it short."""

    found: tuple[Referrer, ...] = ()
    unread: tuple[str, ...] = ()  # "sha256:abc…: why"
    cut: str = ""                  # "" when complete
    skipped: int = 0               # referrers the choice left out
    reads: int = 0                 # registry requests the walk sent
    rate_limited: bool = False     # the registry answered 429 (the cut says so too)

    @property
    def complete(self) -> bool:
        return not self.unread and not self.cut


@dataclass
class _State:
    choice: ReferrerChoice
    max_depth: int
    max_count: int
    cosign_tags: bool
    found: list[Referrer] = field(default_factory=list)
    unread: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)  # digests found or given: each is taken once
    read: set[str] = field(default_factory=set)  # subjects whose referrers were read
    platforms: set[str] = field(default_factory=set)  # an index's manifests: no cosign tags looked for
    cut: str = ""
    skipped: int = 0
    reads: int = 0
    api: bool | None = None  # whether the registry serves the referrers API; learned on the first subject
    rate_limited: bool = False


def find_referrers(client: ReferrerReader, host: str, repository: str, subjects: Sequence[str], auth: Auth,
                   choice: ReferrerChoice, *, max_depth: int, max_count: int, cosign_tags: bool) -> Walk:
    """Every referrer of `subjects` (an image, then its platform manifests) that `choice` admits, recursively."""
    if not choice.enabled:
        return Walk()
    state = _State(choice, max_depth, max_count, cosign_tags, seen=set(subjects), platforms=set(subjects[1:]))
    level = [(subject, 1) for subject in dict.fromkeys(subjects)]
    while level and not state.cut:
        following: list[tuple[str, int]] = []
        for subject, depth in level:
            if subject in state.read:
                continue
            state.read.add(subject)
            try:
                for referrer in _referrers_of(client, host, repository, subject, auth, state, depth):
                    if len(state.found) >= max_count:
                        state.cut = f"more than REFERRERS_MAX_COUNT={max_count} referrers; the rest were left"
                        break
                    state.found.append(referrer)
                    if depth < max_depth:
                        following.append((referrer.digest, depth + 1))
            except RateLimited as err:
                state.unread.append(f"{subject[:19]}…: {str(err)[:MAX_NOTE]}")
                state.cut = "the source registry rate-limited the reads; the rest were not read"
                state.rate_limited = True
            except RegistryError as err:
                state.unread.append(f"{subject[:19]}…: {str(err)[:MAX_NOTE]}")
            if state.cut:
                break
        level = following
    return Walk(tuple(state.found), tuple(state.unread), state.cut, state.skipped, state.reads, state.rate_limited)


def _referrers_of(client: ReferrerReader, host: str, repository: str, subject: str, auth: Auth, state: _State,
                  depth: int) -> Iterable[Referrer]:
    listed: list[Descriptor] | None = None
    if state.api is not False:
        state.reads += 1
        listed = client.referrers(host, repository, subject, auth)
        state.api = listed is not None
    if listed is None:
        state.reads += 1
        schema = client.manifest(host, repository, schema_tag(subject), auth)
        listed = [] if schema is None else index_entries(host, schema[1], f"the referrers tag {schema_tag(subject)}")
    out = []
    for entry in listed:
        out.extend(_admitted(state, Referrer(entry.digest, entry.artifact_type, subject, depth=depth)))
    if state.cosign_tags and subject not in state.platforms:
        for suffix, artifact_type in COSIGN_TAG_TYPES.items():
            if not state.choice.admits(artifact_type):
                continue
            tag = cosign_tag(subject, suffix)
            state.reads += 1
            head = client.head_manifest(host, repository, tag, auth)
            if head is not None:
                out.extend(_admitted(state, Referrer(head.digest, artifact_type, subject, tag, depth)))
    return out


def _admitted(state: _State, referrer: Referrer) -> list[Referrer]:
    if referrer.digest == referrer.subject or (referrer.digest in state.seen and not referrer.tag):
        return []  # a manifest naming itself, or one found before (a cycle, or listed twice)
    if not state.choice.admits(referrer.artifact_type):
        state.skipped += 1
        return []
    state.seen.add(referrer.digest)
    return [referrer]


def missing_in(client: ReferrerReader, host: str, repositories: Sequence[str], found: Iterable[Referrer],
               auth: Auth) -> list[tuple[Referrer, str]]:
    """The (referrer, repository) pairs a target lacks: the digest absent, or cosign's tag on another digest.
    One HEAD each, on the app's own registry."""
    missing = []
    for referrer in found:
        for repository in repositories:
            head = client.head_manifest(host, repository, referrer.tag or referrer.digest, auth)
            if head is None or head.digest != referrer.digest:
                missing.append((referrer, repository))
    return missing
