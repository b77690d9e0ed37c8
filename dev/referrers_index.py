"""The OCI 1.1 referrers API answered from a docker-registry's filesystem storage, which cannot answer it itself
(distribution 2.8 has no `/v2/<name>/referrers/<digest>` and says 404, as a registry without the API does).

Used by the registries of the local stack that serve the API in front of a docker-registry: the ACR stand-in's
login servers (dev/azure_standin/login_server.py) and the Docker Hub front (dev/hub_front.py). Transport and
authorization stay with them; this module says which manifests of a repository have `subject.digest == D`.

The answer follows the OCI distribution spec 1.1 "Listing Referrers": 200 with an image index
(`application/vnd.oci.image.index.v1+json`, `schemaVersion: 2`), one descriptor per manifest or index of the
same repository whose `subject` names the digest, each with `mediaType`, `digest`, `size`, `artifactType` (the
manifest's own, else for an image manifest its config's `mediaType`; omitted for an index without one) and the
manifest's `annotations`; an empty list when none match, also when the subject itself is not in the repository
(distribution-spec PR #491 removed the "MAY return an empty list" for a missing subject: its referrers are
listed); 400 for a digest of invalid syntax; `?artifactType=` filters and sets `OCI-Filters-Applied:
artifactType`. A repository the registry does not know is 404 `NAME_UNKNOWN` (the spec's 200 is "assuming a
repository is found"; a client reads the 404 as "no API", falls back to the referrers tag, finds nothing: the
same outcome as an empty list). Every referrer comes in one page (no `Link`) unless a page size is set (a
stand-in setting, for clients' paging paths): the spec asks for a `Link` only when the list "cannot be
returned in a single manifest", and ACR's page size is not documented.

Storage layout (distribution's `registry/storage/paths.go`, as dev/azure_standin/acr_listing.py reads it):
`repositories/<name>/_manifests/revisions/sha256/<hex>/link` per manifest (removed on delete), content in
`blobs/sha256/<xx>/<hex>/data`. A manifest's bytes never change for its digest, so what a manifest says about
its subject is cached by digest, and a query costs one directory listing and a stat per manifest.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from dev import registries

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPES = frozenset({OCI_INDEX, "application/vnd.docker.distribution.manifest.list.v2+json"})
FILTERS_HEADER = "OCI-Filters-Applied"
SUBJECT_HEADER = "OCI-Subject"
# the digest grammar of the OCI image spec (descriptor.md), and the two registered algorithms' encodings
DIGEST = re.compile(r"(?P<algorithm>[a-z0-9]+(?:[+._-][a-z0-9]+)*):(?P<encoded>[a-zA-Z0-9=_-]+)")
ENCODED_LENGTH = {"sha256": 64, "sha512": 128}
_CACHE_LIMIT = 50_000


def valid_digest(digest: str) -> bool:
    """A digest a registry accepts: `sha256:` + 64 or `sha512:` + 128 lowercase hex characters."""
    match = DIGEST.fullmatch(digest)
    if match is None or match.group("algorithm") not in ENCODED_LENGTH:
        return False
    encoded = match.group("encoded")
    return len(encoded) == ENCODED_LENGTH[match.group("algorithm")] and re.fullmatch(r"[0-9a-f]+", encoded) is not None


def storage_root(spec: registries.RegistrySpec) -> Path:
    """The filesystem driver's root (`<rootdirectory>/docker/registry/v2`) of one of the stack's registries."""
    return registries.registry_dir(spec) / "data" / "docker" / "registry" / "v2"


@dataclass(frozen=True)
class _Summary:
    """What one manifest says about referrers: its subject (if any) and the descriptor that lists it."""

    subject: str | None
    descriptor: dict[str, Any] = field(default_factory=dict)


_summaries: dict[str, _Summary] = {}
_lock = threading.Lock()


def referrer_descriptor(raw: bytes, digest: str) -> dict[str, Any]:
    """The descriptor of a manifest as the referrers API lists it (OCI distribution spec 1.1)."""
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = {}
    doc = doc if isinstance(doc, dict) else {}
    is_index = doc.get("mediaType") in INDEX_TYPES or ("manifests" in doc and "config" not in doc)
    media_type = doc.get("mediaType") if isinstance(doc.get("mediaType"), str) else (
        OCI_INDEX if is_index else OCI_MANIFEST)
    descriptor: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": len(raw)}
    artifact_type = doc.get("artifactType")
    if not artifact_type and not is_index:
        config = doc.get("config")
        artifact_type = config.get("mediaType") if isinstance(config, dict) else None
    if isinstance(artifact_type, str) and artifact_type:
        descriptor["artifactType"] = artifact_type
    annotations = doc.get("annotations")
    if isinstance(annotations, dict) and annotations:
        descriptor["annotations"] = annotations
    return descriptor


def _summary(root: Path, digest: str) -> _Summary | None:
    with _lock:
        known = _summaries.get(digest)
    if known is not None:
        return known
    hexdigest = digest.partition(":")[2]
    path = root / "blobs" / "sha256" / hexdigest[:2] / hexdigest / "data"
    try:
        raw = path.read_bytes()
    except OSError:
        return None  # not (yet) in the blob store: not listed, and not cached
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    subject = doc.get("subject") if isinstance(doc, dict) else None
    subject_digest = subject.get("digest") if isinstance(subject, dict) else None
    summary = (_Summary(subject_digest, referrer_descriptor(raw, digest)) if isinstance(subject_digest, str)
               else _Summary(None))
    with _lock:
        if len(_summaries) >= _CACHE_LIMIT:
            _summaries.clear()
        _summaries[digest] = summary
    return summary


def repository_exists(root: Path, repository: str) -> bool:
    return (root / "repositories" / repository / "_manifests").is_dir()


def referrers(root: Path, repository: str, subject: str, artifact_type: str | None = None) -> list[dict[str, Any]]:
    """Descriptors of the manifests in `repository` whose `subject.digest` is `subject`, oldest push first
    (then by digest), only those of `artifact_type` when given. `root` is a storage root (`storage_root`);
    the caller has checked the repository name (it becomes a path)."""
    folder = root / "repositories" / repository / "_manifests" / "revisions" / "sha256"
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    found: list[tuple[float, str, dict[str, Any]]] = []
    for entry in entries:
        link = entry / "link"
        try:
            pushed = link.stat().st_mtime
        except OSError:
            continue  # deleted: docker-registry removes the link
        digest = f"sha256:{entry.name}"
        summary = _summary(root, digest) if valid_digest(digest) else None
        if summary is None or summary.subject != subject:
            continue
        if artifact_type is not None and summary.descriptor.get("artifactType") != artifact_type:
            continue
        found.append((pushed, digest, dict(summary.descriptor)))
    return [descriptor for _, _, descriptor in sorted(found, key=lambda item: item[:2])]


def referrers_index(descriptors: list[dict[str, Any]]) -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}


@dataclass(frozen=True)
class ReferrersAnswer:
    """A transport-neutral answer to `GET /v2/<repository>/referrers/<digest>`: status, JSON body, headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str]

    def encoded(self) -> bytes:
        return json.dumps(self.body, separators=(",", ":")).encode()


def _error(status: int, code: str, message: str, detail: Any) -> ReferrersAnswer:
    return ReferrersAnswer(status, {"errors": [{"code": code, "message": message, "detail": detail}]},
                           {"Content-Type": "application/json"})


REFERRERS_PATH = re.compile(r"/v2/(?P<repo>.+)/referrers/(?P<digest>[^/]*)")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY_NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")  # distribution's reference grammar


def answer(root: Path, repository: str, digest: str, artifact_type: str | None, *, page_size: int | None = None,
           last: str | None = None) -> ReferrersAnswer:
    """The whole API for an authorized caller: 400 (bad name or digest), 404 (unknown repository), else 200.

    `page_size` (a stand-in setting, None by default: one page) cuts the list and adds `Link: </v2/<repo>/
    referrers/<digest>?last=<digest>&n=<size>[&artifactType=..]>; rel="next"`, the RFC 5988 link the spec asks
    for when the list does not fit, with the query a client such as az replays as is; `last` (from such a link)
    starts after that referrer (from the start when it is gone)."""
    if not REPOSITORY_NAME.fullmatch(repository):
        return _error(400, "NAME_INVALID", "invalid repository name", {"name": repository})
    if not valid_digest(digest):
        return _error(400, "DIGEST_INVALID", "invalid digest", {"digest": digest})
    if not repository_exists(root, repository):
        return _error(404, "NAME_UNKNOWN", "repository name not known to registry", {"name": repository})
    headers = {"Content-Type": OCI_INDEX}
    if artifact_type:
        headers[FILTERS_HEADER] = "artifactType"
    found = referrers(root, repository, digest, artifact_type or None)
    if last:
        position = next((i for i, d in enumerate(found) if d["digest"] == last), -1)
        found = found[position + 1:]
    if page_size is not None and len(found) > page_size:
        found = found[:page_size]
        query = {"last": found[-1]["digest"], "n": str(page_size)} | (
            {"artifactType": artifact_type} if artifact_type else {})
        headers["Link"] = f'</v2/{repository}/referrers/{digest}?{urlencode(query)}>; rel="next"'
    return ReferrersAnswer(200, referrers_index(found), headers)


def subject_of(body: bytes) -> str | None:
    """The `subject.digest` of a manifest being pushed, for the `OCI-Subject` header a registry with the
    referrers API answers a manifest PUT with (OCI distribution spec 1.1, "Pushing Manifests with Subject");
    without it a client such as oras also pushes the referrers tag, as for a registry without the API."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    subject = doc.get("subject") if isinstance(doc, dict) else None
    digest = subject.get("digest") if isinstance(subject, dict) else None
    return digest if isinstance(digest, str) else None

