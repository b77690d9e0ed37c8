"""Signed images for the local stack: a multi-arch image with the supply-chain artifacts that refer to it
(issue 16), pushed with a client we did not write, `oras` (oras-py), so the app's referrer discovery and the
stand-ins' referrers API are checked against someone else's idea of an artifact with a `subject`.

What one signed image holds (`seed_signed`):

- an OCI index of linux/amd64 + linux/arm64 (dev.seed.build_image), tagged;
- a Notary Project signature on the index: artifactType `application/vnd.cncf.notary.signature`, the empty
  config `application/vnd.oci.empty.v1+json`, one `application/jose+json` layer (the envelope), as notation
  pushes it;
- an SPDX SBOM on the index (artifactType `application/spdx+json`) and a Notary signature on that SBOM
  (a referrer of a referrer);
- an in-toto attestation on the amd64 manifest (artifactType `application/vnd.in-toto+json`);
- cosign's tag convention: `sha256-<index hex>.sig` holding a simple-signing manifest (layer
  `application/vnd.dev.cosign.simplesigning.v1+json`, annotation `dev.cosignproject.cosign/signature`);
  and cosign's attestation under `sha256-<index hex>.att` (a DSSE envelope, layer
  `application/vnd.dsse.envelope.v1+json`); no `subject`: cosign finds them by the tag name alone.

Where the registry has no referrers API (the private registry and MCR: plain docker-registry 2.8) the referrers
tag schema is written too, as an OCI 1.1 client does on such a registry: per subject, a tag `sha256-<hex>`
holding an OCI index of its referrers' descriptors (with artifactType and annotations), merged with what the
tag already lists, no duplicates (OCI distribution-spec v1.1, "Pushing Manifests with Subject": on a registry
without the API the pushing client pulls the tag's index, appends the new descriptor unless it is there, and
pushes the index back; on the reading side, "If the referrers API returns a 404, the client MUST fallback to
pulling the referrers tag schema"; notation's `--force-referrers-tag` and go-containerregistry do the same).
Docker Hub (through dev/hub_front.py) and the ACR stand-in serve the API from what is stored.

The signatures are well-formed but not verifiable: no trust policy runs here and the app copies bytes; what
matters is that every artifact is deterministic (re-seeding adds nothing) and distinct per image.

oras-py 0.2.43, read from its source: `Registry.push()` takes a `subject` (oras.oci.Subject) but builds the
manifest itself, with no `artifactType` and a `org.opencontainers.image.title` annotation on every layer, from
files on disk; so manifests are built here and go up with its public `upload_blob` and `upload_manifest`
(which accepts any manifest dict its JSON schema allows, `artifactType` and `subject` included). It has no
index push (the tag schema), no blob delete and no referrers read: those few calls use dev/oci.py. Its token
backend keeps the first token it gets and resends it on a later 401 for a wider scope (auth/token.py,
`authenticate_request`), so it is handed a token for pull, push and delete up front, minted as dev.seed
does for the stack's own administration.
"""

from __future__ import annotations

import base64
import hashlib
import json
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import oras.container
import oras.provider

from dev import layout, oci, registries, seed, tokens

NOTARY_SIGNATURE = "application/vnd.cncf.notary.signature"
NOTARY_ENVELOPE = "application/jose+json"
SPDX = "application/spdx+json"
IN_TOTO = "application/vnd.in-toto+json"
COSIGN_SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
COSIGN_SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
COSIGN_ATTESTATION = "application/vnd.dsse.envelope.v1+json"
COSIGN_PREDICATE_ANNOTATION = "predicateType"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
EMPTY_JSON = b"{}"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
CREATED = "org.opencontainers.image.created"
NOTARY_THUMBPRINT = "io.cncf.notary.x509chain.thumbprint#S256"
PLATFORMS = ("linux/amd64", "linux/arm64")


@dataclass(frozen=True)
class Referrer:
    """One artifact that refers to a manifest of the image. `subject` is the digest it refers to; `tag` is set
    for cosign's tag convention (`sha256-<hex>.sig`), which has no `subject` field (`has_subject` False) and is
    found by its tag only, never by the referrers API."""

    digest: str
    artifact_type: str
    subject: str
    size: int
    tag: str | None = None
    has_subject: bool = True


@dataclass(frozen=True)
class SignedImage:
    """A signed multi-arch image as seeded: where it is, its digests and everything that refers to it."""

    registry: str           # as users write it: docker.io, registry.contoso.com, mysourceregistry.azurecr.io
    repo: str
    tag: str
    digest: str             # the index
    platforms: dict[str, str]  # "linux/amd64" -> that manifest's digest
    referrers: tuple[Referrer, ...]
    tag_schema: bool        # the registry has no referrers API: `sha256-<hex>` tags list the referrers

    @property
    def reference(self) -> str:
        return f"{self.registry}/{self.repo}:{self.tag}"

    @property
    def cosign_tag(self) -> str:
        """cosign's signature tag, `sha256-<index hex>.sig` (its attestation: `.att`)."""
        return cosign_tag(self.digest)

    @property
    def cosign_tags(self) -> list[str]:
        return [r.tag for r in self.referrers if r.tag]

    def referrers_of(self, subject: str) -> list[Referrer]:
        """What the referrers API (or the tag schema) lists for `subject`: artifacts with a `subject` only."""
        return [r for r in self.referrers if r.subject == subject and r.has_subject]

    def of_type(self, artifact_type: str) -> list[Referrer]:
        return [r for r in self.referrers if r.artifact_type == artifact_type]


@dataclass(frozen=True)
class SignedSpec:
    """A signed image to seed. `broken`: the SBOM's layer blob is deleted afterwards (through the registry API),
    so the referrers API still lists the SBOM while copying it fails."""

    registry: str
    repo: str
    tag: str = "1.0"
    broken: bool = False


SIGNED_IMAGES = (
    SignedSpec("docker.io", "acme/signed"),
    SignedSpec("registry.contoso.com", "team/signed"),
    SignedSpec(layout.SOURCE_ACR.login_server, "signed"),
    SignedSpec("docker.io", "acme/signed-broken", broken=True),
)


def tag_schema_tag(digest: str) -> str:
    """The referrers tag schema's tag for a subject: `<alg>-<hex>` (distribution-spec v1.1)."""
    algorithm, _, hexpart = digest.partition(":")
    return f"{algorithm}-{hexpart}"


def cosign_tag(digest: str, suffix: str = "sig") -> str:
    return f"{tag_schema_tag(digest)}.{suffix}"


def has_referrers_api(spec: registries.RegistrySpec) -> bool:
    """Docker Hub's front and the ACR stand-in serve `GET /v2/<repo>/referrers/<digest>`; the private registry
    and MCR are plain docker-registry 2.8, which has none."""
    return isinstance(spec, layout.AcrSpec) or spec is layout.DOCKERHUB


# --- oras ------------------------------------------------------------------------------------------------
class _Pusher:
    """One repository of one registry, through oras-py (blobs, manifests) and dev/oci.py (the rest)."""

    def __init__(self, registry: str, repo: str) -> None:
        self.spec = registries.spec_named(registry)
        self.registry_name, self.repo = registry, repo
        self.host = f"{layout.HOST}:{registries.listen_port(self.spec)}"
        self.oci = seed.admin_client(self.spec)
        self.folder = Path(tempfile.mkdtemp(prefix="signed-seed-"))
        if isinstance(self.spec, layout.UpstreamSpec) and self.spec.auth == "basic":
            self.oras = oras.provider.Registry(hostname=self.host, tls_verify=str(layout.CA_CERT),
                                               auth_backend="basic")
            user, password = next(iter(self.spec.users.items()))
            self.oras.auth.set_basic_auth(user, password)
        else:
            self.oras = oras.provider.Registry(hostname=self.host, tls_verify=str(layout.CA_CERT))
            if isinstance(self.spec, layout.AcrSpec) or self.spec.auth == "token":
                service = self.spec.login_server if isinstance(self.spec, layout.AcrSpec) \
                    else layout.DOCKERHUB_SERVICE
                self.oras.auth.set_token_auth(tokens.mint_registry_token(
                    subject=seed.STACK_ADMIN, service=service, ttl=3600,
                    access=[{"type": "repository", "name": repo, "actions": ["pull", "push", "delete"]}]))

    def container(self, ref: str) -> oras.container.Container:
        separator = "@" if oci.is_digest(ref) else ":"
        return self.oras.get_container(f"{self.host}/{self.repo}{separator}{ref}")

    def blob(self, data: bytes, media_type: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
        """Upload a blob with oras (skipped when present); returns its descriptor."""
        digest = oci.sha256_digest(data)
        path = self.folder / digest.replace(":", "-")
        path.write_bytes(data)
        descriptor: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": len(data)}
        response = self.oras.upload_blob(str(path), self.container(digest), descriptor)
        if response.status_code not in (200, 201, 202):
            raise oci.RegistryError(response.status_code, None, f"oras upload of {digest} to {self.repo} failed")
        if annotations:
            descriptor["annotations"] = annotations
        return descriptor

    def manifest(self, manifest: dict[str, Any], tag: str | None = None) -> tuple[str, int]:
        """Upload a manifest with oras, by digest (or by `tag`); returns its digest and size as stored.

        oras-py sends it with requests' `json=`, so the bytes are `json.dumps(manifest)`: the digest is known
        before the PUT (a registry refuses a body that does not hash to the digest in the URL)."""
        body = json.dumps(manifest, allow_nan=False).encode()
        digest = oci.sha256_digest(body)
        response = self.oras.upload_manifest(manifest, self.container(tag or digest))
        if response.status_code not in (200, 201):
            raise oci.RegistryError(response.status_code, None,
                                    f"oras manifest push to {self.repo}: {response.text[:300]}")
        stored = response.headers.get("Docker-Content-Digest", digest)
        if stored != digest:
            raise oci.RegistryError(response.status_code, "DIGEST_INVALID", f"{self.repo}: stored as {stored}")
        return digest, len(body)

    def merge_tag_schema(self, subject: str, descriptors: list[dict[str, Any]]) -> None:
        """Add referrer descriptors to the subject's `sha256-<hex>` index (dev/oci.py: oras-py pushes no index)."""
        tag = tag_schema_tag(subject)
        listed: list[dict[str, Any]] = []
        if self.oci.head_manifest(self.repo, tag) is not None:
            listed = list(json.loads(self.oci.get_manifest(self.repo, tag).body).get("manifests") or [])
        known = {d.get("digest") for d in listed}
        merged = listed + [d for d in descriptors if d["digest"] not in known]
        if len(merged) == len(listed) and listed:
            return
        body = seed._canonical({"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": merged})
        self.oci.put_manifest(self.repo, tag, body, oci.OCI_INDEX)


# --- artifacts ------------------------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _subject(digest: str, size: int, media_type: str) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest, "size": size}


def _notary_envelope(subject: dict[str, Any], serial: int) -> bytes:
    """A JWS envelope shaped as notation writes it (payload: the target descriptor); the signature is a
    deterministic stand-in, not a verifiable one."""
    protected = seed._canonical({"alg": "PS256", "crit": ["io.cncf.notary.signingScheme"],
                                 "cty": "application/vnd.cncf.notary.payload.v1+json",
                                 "io.cncf.notary.signingScheme": "notary.x509",
                                 "io.cncf.notary.signingTime": f"2024-01-01T00:00:{serial:02d}Z"})
    payload = seed._canonical({"targetArtifact": subject})
    signed = f"{_b64(protected)}.{_b64(payload)}".encode()
    return seed._canonical({"payload": _b64(payload), "protected": _b64(protected),
                            "header": {"x5c": [_b64(b"acr-importer local stack: no certificate")]},
                            "signature": _b64(hashlib.sha512(signed + str(serial).encode()).digest())})


def _artifact(pusher: _Pusher, artifact_type: str, layer: bytes, layer_type: str, subject: dict[str, Any],
              annotations: dict[str, str]) -> Referrer:
    config = pusher.blob(EMPTY_JSON, EMPTY_CONFIG)
    manifest = {"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST, "artifactType": artifact_type,
                "config": config, "layers": [pusher.blob(layer, layer_type)], "subject": subject,
                "annotations": annotations}
    digest, size = pusher.manifest(manifest)
    return Referrer(digest, artifact_type, subject["digest"], size)


def _signature(pusher: _Pusher, subject: dict[str, Any], serial: int = 1) -> Referrer:
    return _artifact(pusher, NOTARY_SIGNATURE, _notary_envelope(subject, serial), NOTARY_ENVELOPE, subject,
                     {CREATED: seed.FIXED_TIME, NOTARY_THUMBPRINT: '["' + "a" * 64 + '"]'})


def _sbom(pusher: _Pusher, reference: str, subject: dict[str, Any]) -> Referrer:
    document = seed._canonical({
        "spdxVersion": "SPDX-2.3", "dataLicense": "CC0-1.0", "SPDXID": "SPDXRef-DOCUMENT",
        "name": reference, "documentNamespace": f"https://acr-importer.local/spdx/{subject['digest']}",
        "creationInfo": {"created": seed.FIXED_TIME, "creators": ["Tool: acr-importer-seed"]},
        "packages": [{"SPDXID": "SPDXRef-hello", "name": "hello", "versionInfo": "1",
                      "downloadLocation": "NOASSERTION"}]})
    return _artifact(pusher, SPDX, document, SPDX, subject, {CREATED: seed.FIXED_TIME})


def _attestation(pusher: _Pusher, reference: str, subject: dict[str, Any]) -> Referrer:
    statement = seed._canonical({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": reference, "digest": {"sha256": subject["digest"].partition(":")[2]}}],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {"buildDefinition": {"buildType": "https://acr-importer.local/seed"},
                      "runDetails": {"builder": {"id": "acr-importer-seed"}}}})
    return _artifact(pusher, IN_TOTO, statement, IN_TOTO, subject, {CREATED: seed.FIXED_TIME})


def _cosign(pusher: _Pusher, image: str, index: dict[str, Any]) -> Referrer:
    """cosign's simple-signing payload under `sha256-<hex>.sig` (cosign's `sign`, no subject)."""
    payload = seed._canonical({"critical": {"identity": {"docker-reference": image},
                                            "image": {"docker-manifest-digest": index["digest"]},
                                            "type": "cosign container image signature"}, "optional": None})
    config = pusher.blob(seed._canonical({
        "architecture": "", "os": "", "created": "0001-01-01T00:00:00Z", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [oci.sha256_digest(payload)]},
        "history": [{"created": "0001-01-01T00:00:00Z"}]}), OCI_CONFIG)
    layer = pusher.blob(payload, COSIGN_SIMPLESIGNING,
                        {COSIGN_SIGNATURE_ANNOTATION: _b64(hashlib.sha256(payload).digest())})
    tag = cosign_tag(index["digest"])
    digest, size = pusher.manifest({"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST, "config": config,
                                    "layers": [layer]}, tag=tag)
    return Referrer(digest, COSIGN_SIMPLESIGNING, index["digest"], size, tag=tag, has_subject=False)


def _cosign_attestation(pusher: _Pusher, image: str, index: dict[str, Any]) -> Referrer:
    """cosign's `attest`: an in-toto statement in a DSSE envelope under `sha256-<hex>.att` (no subject)."""
    statement = seed._canonical({
        "_type": "https://in-toto.io/Statement/v1", "predicateType": "https://slsa.dev/provenance/v1",
        "subject": [{"name": image, "digest": {"sha256": index["digest"].partition(":")[2]}}],
        "predicate": {"buildDefinition": {"buildType": "https://acr-importer.local/seed"}}})
    envelope = seed._canonical({"payloadType": "application/vnd.in-toto+json", "payload": _b64(statement),
                                "signatures": [{"keyid": "", "sig": _b64(hashlib.sha256(statement).digest())}]})
    config = pusher.blob(seed._canonical({
        "architecture": "", "os": "", "created": "0001-01-01T00:00:00Z", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [oci.sha256_digest(envelope)]},
        "history": [{"created": "0001-01-01T00:00:00Z"}]}), OCI_CONFIG)
    layer = pusher.blob(envelope, COSIGN_ATTESTATION,
                        {COSIGN_PREDICATE_ANNOTATION: "https://slsa.dev/provenance/v1"})
    tag = cosign_tag(index["digest"], "att")
    digest, size = pusher.manifest({"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST, "config": config,
                                    "layers": [layer]}, tag=tag)
    return Referrer(digest, COSIGN_ATTESTATION, index["digest"], size, tag=tag, has_subject=False)


def _descriptor(pusher: _Pusher, referrer: Referrer) -> dict[str, Any]:
    """A referrer as the referrers API and the tag schema list it: with artifactType and its annotations."""
    manifest = json.loads(pusher.oci.get_manifest(pusher.repo, referrer.digest).body)
    descriptor = {"mediaType": oci.OCI_MANIFEST, "digest": referrer.digest, "size": referrer.size,
                  "artifactType": referrer.artifact_type}
    if manifest.get("annotations"):
        descriptor["annotations"] = manifest["annotations"]
    return descriptor


def _write_tag_schema(pusher: _Pusher, referrers: list[Referrer]) -> None:
    by_subject: dict[str, list[dict[str, Any]]] = {}
    for referrer in referrers:
        if referrer.has_subject:
            by_subject.setdefault(referrer.subject, []).append(_descriptor(pusher, referrer))
    for subject, descriptors in by_subject.items():
        pusher.merge_tag_schema(subject, descriptors)


# --- seeding ---------------------------------------------------------------------------------------------
def seed_signed(spec: SignedSpec) -> SignedImage:
    """Push one signed image and its referrers (idempotent: every artifact is deterministic)."""
    pusher = _Pusher(spec.registry, spec.repo)
    image = seed.build_image(spec.repo.rsplit("/", 1)[-1], PLATFORMS)
    seed.push_image(pusher.oci, spec.repo, spec.tag, image)
    reference = f"{spec.registry}/{spec.repo}"
    index = _subject(image.digest, len(image.manifest), image.media_type)
    amd64 = image.children[0]
    signature = _signature(pusher, index)
    sbom = _sbom(pusher, reference, index)
    sbom_signature = _signature(pusher, _subject(sbom.digest, sbom.size, oci.OCI_MANIFEST))
    attestation = _attestation(pusher, reference, _subject(amd64.digest, len(amd64.body), amd64.media_type))
    cosigned = _cosign(pusher, reference, index)
    cosign_attested = _cosign_attestation(pusher, reference, index)
    referrers = [signature, sbom, sbom_signature, attestation, cosigned, cosign_attested]
    tag_schema = not has_referrers_api(pusher.spec)
    if tag_schema:
        _write_tag_schema(pusher, referrers)
    if spec.broken:
        layer = json.loads(pusher.oci.get_manifest(spec.repo, sbom.digest).body)["layers"][0]["digest"]
        if pusher.oci.blob_exists(spec.repo, layer):
            pusher.oci.delete_blob(spec.repo, layer)
    platforms = {name: child.digest for name, child in zip(image.platforms, image.children, strict=True)}
    return SignedImage(spec.registry, spec.repo, spec.tag, image.digest, platforms, tuple(referrers), tag_schema)


def seed_signed_world() -> list[SignedImage]:
    """Every signed image of SIGNED_IMAGES (run by dev.seed.seed_world)."""
    return [seed_signed(spec) for spec in SIGNED_IMAGES]


def add_signature(image: SignedImage, *, subject: str | None = None, serial: int = 2) -> SignedImage:
    """One more Notary signature on `subject` (default: the index) of an already-seeded image, its digests
    unchanged: "a new signature on an unchanged digest". Each `serial` gives another signature (the same serial
    twice adds nothing new). Updates the subject's tag-schema index where the registry has no referrers API.
    Returns the image with the new referrer added."""
    pusher = _Pusher(image.registry, image.repo)
    target = subject or image.digest
    info = pusher.oci.head_manifest(image.repo, target)
    if info is None:
        raise oci.RegistryError(404, "MANIFEST_UNKNOWN", f"{image.repo}@{target} is not in {image.registry}")
    media_type = info.media_type or pusher.oci.get_manifest(image.repo, target).media_type
    signature = _signature(pusher, _subject(target, info.size, media_type), serial)
    if image.tag_schema:
        _write_tag_schema(pusher, [signature])
    if any(r.digest == signature.digest for r in image.referrers):
        return image
    return replace(image, referrers=(*image.referrers, signature))


def read_tag_schema(client: oci.RegistryClient, repo: str, subject: str) -> list[dict[str, Any]]:
    """The descriptors a subject's `sha256-<hex>` tag lists ([] when there is no such tag)."""
    tag = tag_schema_tag(subject)
    if client.head_manifest(repo, tag) is None:
        return []
    return list(json.loads(client.get_manifest(repo, tag).body).get("manifests") or [])
