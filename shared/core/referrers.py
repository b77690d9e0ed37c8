"""Which referrers travel with an image: the choice a request, a tracked image, a replication rule or the
REFERRERS settings make, read from one grammar, and the names of what the registry side finds.

The ACR import API copies an image and its platforms, never what refers to it (signatures, SBOMs,
attestations; dotnet/docker-tools issue #1999). The app finds those in the source after the import and
imports each by digest; this module only says which of them are wanted and whether a missing one fails
the request. Pure: the walk is shared/registry/referrers.py, the imports shared/imports/referrers.py.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from shared.core.outcome import Problem

ALL, NONE, REQUIRED = "all", "none", "required"
WORDS = (ALL, NONE, REQUIRED)
MAX_ARTIFACT_TYPES = 20
ARTIFACT_TYPE = re.compile(r"[A-Za-z0-9][\w.+-]{0,126}/[A-Za-z0-9][\w.+-]{0,126}", re.ASCII)  # RFC 6838
CHOICE_RULE = ('must be "all", "none", "required", or {"artifactTypes": [media types], "required": true|false}')

# cosign's tag convention (`sha256-<hex>.sig`, `.att`, `.sbom`, beside the image), and the artifact type each
# is filtered by: the type cosign gives the same thing when it stores it as an OCI 1.1 referrer.
COSIGN_TAG_TYPES = {
    "sig": "application/vnd.dev.cosign.artifact.sig.v1+json",
    "att": "application/vnd.dev.cosign.artifact.att.v1+json",
    "sbom": "application/vnd.dev.cosign.artifact.sbom.v1+json",
}


@dataclass(frozen=True)
class ReferrerChoice:
    """Which referrers come along (`artifact_types` empty: every type) and whether one that cannot be
    imported fails the request (`required`) or leaves it `succeeded` with a warning."""

    enabled: bool = True
    artifact_types: tuple[str, ...] = ()
    required: bool = False

    def admits(self, artifact_type: str) -> bool:
        return self.enabled and (not self.artifact_types or artifact_type in self.artifact_types)

    def as_document(self) -> str | dict[str, Any]:
        """The request field that asks for this choice (what the refresh and replication send)."""
        if not self.enabled:
            return NONE
        if not self.artifact_types:
            return REQUIRED if self.required else ALL
        return {"artifactTypes": list(self.artifact_types), "required": self.required}

    def __str__(self) -> str:
        if not self.enabled:
            return NONE
        what = ", ".join(self.artifact_types) if self.artifact_types else ALL
        return f"{what} (required)" if self.required else what


DEFAULT_CHOICE = ReferrerChoice()


def parse_choice(value: Any, where: str) -> ReferrerChoice | Problem:
    """A request's `referrers` field, a tracked image's or a replication rule's option, in one grammar."""
    if isinstance(value, str):
        if value not in WORDS:
            return Problem(where, f"{CHOICE_RULE}; got {value[:40]!r}")
        return ReferrerChoice(enabled=value != NONE, required=value == REQUIRED)
    if not isinstance(value, dict):
        return Problem(where, CHOICE_RULE)
    unknown = sorted(set(value) - {"artifactTypes", "required"})
    if unknown:
        return Problem(f"{where}.{unknown[0][:40]}", f"unknown field; {where} takes artifactTypes and required")
    required = value.get("required", False)
    if not isinstance(required, bool):
        return Problem(f"{where}.required", "must be true or false")
    types = value.get("artifactTypes", [])
    if not isinstance(types, list) or not types:
        return Problem(f"{where}.artifactTypes", "must be a non-empty list of artifact types (media types, such as "
                                                 "application/vnd.cncf.notary.signature); leave it out for all")
    if len(types) > MAX_ARTIFACT_TYPES:
        return Problem(f"{where}.artifactTypes", f"must have at most {MAX_ARTIFACT_TYPES} items")
    for index, item in enumerate(types):
        if not isinstance(item, str) or not ARTIFACT_TYPE.fullmatch(item):
            return Problem(f"{where}.artifactTypes[{index}]", "must be a media type such as "
                                                               "application/vnd.cncf.notary.signature")
    return ReferrerChoice(artifact_types=tuple(dict.fromkeys(types)), required=required)


def parse_setting(text: str, required: bool) -> ReferrerChoice | str:
    """The REFERRERS setting (`all`, `none`, or comma-separated artifact types) with REFERRERS_REQUIRED; a
    message naming the rule when it is not one."""
    words = [w.strip() for w in text.split(",") if w.strip()]
    if not words or words == [ALL]:
        return ReferrerChoice(required=required)
    if words == [NONE]:
        return ReferrerChoice(enabled=False)
    bad = next((w for w in words if not ARTIFACT_TYPE.fullmatch(w)), None)
    if bad is not None or len(words) > MAX_ARTIFACT_TYPES:
        shown = f"{bad[:60]!r} is not a media type" if bad is not None else f"more than {MAX_ARTIFACT_TYPES} types"
        return (f"REFERRERS must be all, none, or up to {MAX_ARTIFACT_TYPES} comma-separated artifact types "
                f"(media types such as application/vnd.cncf.notary.signature): {shown}")
    return ReferrerChoice(artifact_types=tuple(dict.fromkeys(words)), required=required)


def cosign_tag(subject: str, suffix: str) -> str:
    """cosign's tag for what it attaches to `subject` (`sha256:<hex>` -> `sha256-<hex>.sig`)."""
    return f"{subject.replace(':', '-', 1)}.{suffix}"


def schema_tag(subject: str) -> str:
    """The referrers tag schema's tag for `subject` (OCI distribution spec 1.1): `sha256-<hex>`."""
    return subject.replace(":", "-", 1)


MAX_COUNTS_TEXT = 2000  # characters of the row's counts: a registry names the types, as many and as long as it likes


def count_by_type(artifact_types: Iterable[str]) -> str:
    """`application/spdx+json=1, application/vnd.cncf.notary.signature=2`: what came along, for the row; the most
    common types first when they do not all fit in MAX_COUNTS_TEXT, the rest counted together."""
    counts = Counter(artifact_types)
    text = ", ".join(f"{kind}={counts[kind]}" for kind in sorted(counts))
    if len(text) <= MAX_COUNTS_TEXT:
        return text
    shown: list[str] = []
    for kind, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        if sum(len(part) + 2 for part in shown) + len(kind) + 60 > MAX_COUNTS_TEXT:
            break
        shown.append(f"{kind}={count}")
    rest = len(counts) - len(shown)
    return ", ".join(shown) + f", and {rest} more artifact types ({sum(counts.values())} referrers in all)"
