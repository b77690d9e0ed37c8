"""OCI artifacts that refer to an image, built and pushed with dev/oci.py: what signers and SBOM tools push.

Two shapes, as the OCI image spec 1.1 ("Guidelines for Artifact Usage") and cosign write them:
- an artifact manifest: `artifactType`, the empty config (`application/vnd.oci.empty.v1+json`, `{}`, whose
  base64 is "e30="), layers of any media type and a `subject` naming the image; pushed by digest, found
  through the referrers API (Notary Project signatures, SBOMs, attestations);
- a cosign-style signature: an image manifest (image config media type) without `subject`, tagged
  `sha256-<hex>.sig` (cosign's tag convention), found by that tag.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from dev import oci

EMPTY_CONFIG_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG = b"{}"
NOTARY_SIGNATURE = "application/vnd.cncf.notary.signature"
SPDX_SBOM = "application/spdx+json"
IN_TOTO = "application/vnd.in-toto+json"
COSIGN_SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"


@dataclass(frozen=True)
class Artifact:
    """A manifest with its blobs, ready to push; `digest` is the manifest's."""

    manifest: bytes
    media_type: str
    digest: str
    blobs: dict[str, bytes]


def _canonical(doc: dict) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def descriptor_of(info: oci.ManifestInfo) -> dict:
    return {"mediaType": info.media_type, "digest": info.digest, "size": info.size}


def build_artifact(artifact_type: str, subject: oci.ManifestInfo | None, layers: Sequence[tuple[str, bytes]],
                   *, annotations: dict[str, str] | None = None) -> Artifact:
    """An OCI 1.1 artifact manifest: `artifactType`, the empty config, `layers` as (media type, bytes)."""
    blobs = {oci.sha256_digest(EMPTY_CONFIG): EMPTY_CONFIG}
    doc: dict = {"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST, "artifactType": artifact_type,
                 "config": {"mediaType": EMPTY_CONFIG_TYPE, "digest": oci.sha256_digest(EMPTY_CONFIG),
                            "size": len(EMPTY_CONFIG), "data": "e30="},
                 "layers": []}
    for media_type, data in layers:
        digest = oci.sha256_digest(data)
        blobs[digest] = data
        doc["layers"].append({"mediaType": media_type, "digest": digest, "size": len(data)})
    if subject is not None:
        doc["subject"] = descriptor_of(subject)
    if annotations:
        doc["annotations"] = dict(annotations)
    body = _canonical(doc)
    return Artifact(body, oci.OCI_MANIFEST, oci.sha256_digest(body), blobs)


def cosign_signature_tag(digest: str, suffix: str = "sig") -> str:
    """`sha256-<hex>.sig` (`.att`, `.sbom`): where cosign keeps what refers to `digest`."""
    algorithm, _, encoded = digest.partition(":")
    return f"{algorithm}-{encoded}.{suffix}"


def build_cosign_signature(signed: oci.ManifestInfo, repository: str) -> Artifact:
    """A cosign-style signature manifest (image config, a simplesigning layer with a signature annotation)."""
    payload = _canonical({"critical": {"identity": {"docker-reference": repository},
                                       "image": {"docker-manifest-digest": signed.digest},
                                       "type": "cosign container image signature"}, "optional": None})
    config = _canonical({"architecture": "", "os": "", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [oci.sha256_digest(payload)]}})
    doc = {"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST,
           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                      "digest": oci.sha256_digest(config), "size": len(config)},
           "layers": [{"mediaType": COSIGN_SIMPLESIGNING, "digest": oci.sha256_digest(payload),
                       "size": len(payload),
                       "annotations": {"dev.cosignproject.cosign/signature": "c3RhbmQtaW4gc2lnbmF0dXJl"}}]}
    body = _canonical(doc)
    return Artifact(body, oci.OCI_MANIFEST, oci.sha256_digest(body),
                    {oci.sha256_digest(config): config, oci.sha256_digest(payload): payload})


def push_artifact(client: oci.RegistryClient, repo: str, artifact: Artifact, tag: str | None = None) -> str:
    """Blobs (skipping those present), then the manifest by `tag`, or by digest."""
    for digest, data in artifact.blobs.items():
        if not client.blob_exists(repo, digest):
            client.put_blob(repo, data, digest=digest)
    return client.put_manifest(repo, tag or artifact.digest, artifact.manifest, artifact.media_type)
