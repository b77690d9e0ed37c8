"""Real, tiny container images built without Docker, and the scenarios the stack's registries start with.

Content is deterministic per (name, platform, version): the same call always yields the same digests,
and bumping `version` gives an upstream a "new digest" to notice.
"""

from __future__ import annotations

import gzip
import io
import json
import sys
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dev import layout, oci, registries, tokens

FIXED_TIME = "2024-01-01T00:00:00Z"
STACK_ADMIN = "stack-admin"

FLAVOURS = {
    "oci": {"index": oci.OCI_INDEX, "manifest": oci.OCI_MANIFEST,
            "config": "application/vnd.oci.image.config.v1+json",
            "layer": "application/vnd.oci.image.layer.v1.tar+gzip"},
    "docker": {"index": oci.DOCKER_LIST, "manifest": oci.DOCKER_MANIFEST,
               "config": "application/vnd.docker.container.image.v1+json",
               "layer": "application/vnd.docker.image.rootfs.diff.tar.gzip"},
}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        """`linux/amd64`, `linux/arm64/v8`, `windows/amd64:10.0.20348.2700`."""
        name, _, os_version = text.partition(":")
        parts = name.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"platform {text!r} is not os/arch[/variant][:os.version]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None, os_version or None)

    def as_oci(self) -> dict[str, str]:
        doc = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            doc["variant"] = self.variant
        if self.os_version:
            doc["os.version"] = self.os_version
        return doc

    def __str__(self) -> str:
        return oci.platform_name(self.as_oci())


@dataclass(frozen=True)
class BuiltImage:
    """An image ready to push: `children` (by digest) and `blobs` must exist before `manifest` is tagged."""

    manifest: bytes
    media_type: str
    digest: str
    platforms: list[str]
    blobs: dict[str, bytes] = field(repr=False)
    children: list[oci.Manifest] = field(default_factory=list, repr=False)


def _canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _layer_tar(name: str, platform: Platform, version: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        files = {"etc/image-release": f"name={name}\nplatform={platform}\nversion={version}\n",
                 "hello": f"Hello from {name} ({platform}), version {version}\n"}
        for path, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(path)
            info.size, info.mtime, info.mode = len(data), 1704067200, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _single_manifest(name: str, platform: Platform, flavour: str, version: int,
                     blobs: dict[str, bytes]) -> oci.Manifest:
    types = FLAVOURS[flavour]
    tar = _layer_tar(name, platform, version)
    layer = gzip.compress(tar, compresslevel=6, mtime=0)
    config = _canonical({
        **platform.as_oci(),
        "created": FIXED_TIME,
        "config": {"Cmd": ["/hello"], "Labels": {"org.opencontainers.image.title": name,
                                                   "org.opencontainers.image.version": str(version)}},
        "rootfs": {"type": "layers", "diff_ids": [oci.sha256_digest(tar)]},
        "history": [{"created": FIXED_TIME, "created_by": f"acr-importer seed {name} v{version}"}],
    })
    blobs[oci.sha256_digest(config)] = config
    blobs[oci.sha256_digest(layer)] = layer
    body = _canonical({
        "schemaVersion": 2, "mediaType": types["manifest"],
        "config": {"mediaType": types["config"], "digest": oci.sha256_digest(config), "size": len(config)},
        "layers": [{"mediaType": types["layer"], "digest": oci.sha256_digest(layer), "size": len(layer)}],
    })
    return oci.Manifest(body, types["manifest"], oci.sha256_digest(body))


def build_image(name: str, platforms: Sequence[str], *, flavour: str = "oci", version: int = 1,
                index: bool | None = None) -> BuiltImage:
    """A real image for `platforms`; an index (OCI) or manifest list (Docker) when there are several
    platforms or `index` is True, else a single manifest."""
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {sorted(FLAVOURS)}")
    parsed = [Platform.parse(p) for p in platforms]
    if not parsed:
        raise ValueError("an image needs at least one platform")
    blobs: dict[str, bytes] = {}
    children = [_single_manifest(name, p, flavour, version, blobs) for p in parsed]
    names = [str(p) for p in parsed]
    if not (index if index is not None else len(parsed) > 1):
        only = children[0]
        return BuiltImage(only.body, only.media_type, only.digest, names, blobs)
    types = FLAVOURS[flavour]
    body = _canonical({
        "schemaVersion": 2, "mediaType": types["index"],
        "manifests": [{"mediaType": child.media_type, "digest": child.digest, "size": len(child.body),
                       "platform": p.as_oci()} for child, p in zip(children, parsed, strict=True)],
    })
    return BuiltImage(body, types["index"], oci.sha256_digest(body), names, blobs, children)


def push_image(client: oci.RegistryClient, repo: str, tag: str | None, image: BuiltImage) -> str:
    """Push blobs (skipping those present), children by digest, then the top manifest by tag (or digest)."""
    for digest, data in image.blobs.items():
        if not client.blob_exists(repo, digest):
            client.put_blob(repo, data, digest=digest)
    for child in image.children:
        client.put_manifest(repo, child.digest, child.body, child.media_type)
    return client.put_manifest(repo, tag or image.digest, image.manifest, image.media_type)


# --- admin access to the stack's registries --------------------------------------------------------
def _access_for(scope: str) -> list[dict[str, Any]]:
    access = []
    for part in scope.split():
        kind, _, rest = part.partition(":")
        name, _, actions = rest.rpartition(":")
        if kind and name:
            access.append({"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]})
    return access


def acr_admin_token_provider(acr: layout.AcrSpec):
    """Mints registry tokens for an ACR data plane directly: the stack is its own administrator."""
    def provide(scope: str) -> str:
        return tokens.mint_registry_token(subject=STACK_ADMIN, service=acr.login_server, access=_access_for(scope))
    return provide


def admin_auth(spec: registries.RegistrySpec) -> oci.Auth | None:
    if isinstance(spec, layout.AcrSpec):
        return oci.Auth(token_provider=acr_admin_token_provider(spec))
    if spec.users:
        username, password = next(iter(spec.users.items()))
        return oci.Auth(username, password)
    return None


def admin_client(host_or_spec: str | registries.RegistrySpec) -> oci.RegistryClient:
    """A client with full rights on one of the stack's registries (by spec, name, host or login server)."""
    spec = registries.spec_named(host_or_spec) if isinstance(host_or_spec, str) else host_or_spec
    return oci.RegistryClient(registries.base_url(spec), admin_auth(spec))


# --- the seed scenarios ------------------------------------------------------------------------------
WINDOWS_2022 = "windows/amd64:10.0.20348.2700"


@dataclass(frozen=True)
class SeedImage:
    registry: str  # host as users write it: docker.io, mcr.microsoft.com, myregistry.azurecr.io
    repo: str
    tags: tuple[str, ...]
    platforms: tuple[str, ...]
    flavour: str


@dataclass(frozen=True)
class Seeded:
    registry: str
    repo: str
    tag: str
    digest: str
    media_type: str
    platforms: list[str]

    @property
    def reference(self) -> str:
        return f"{self.registry}/{self.repo}:{self.tag}"


SEED_IMAGES = (
    SeedImage("docker.io", "library/hello-world", ("latest",),
              ("linux/amd64", "linux/arm64/v8", "linux/arm/v7", WINDOWS_2022), "docker"),
    SeedImage("docker.io", "library/nginx", ("latest", "1.27"), ("linux/amd64", "linux/arm64/v8"), "oci"),
    SeedImage("docker.io", "tensorflow/tensorflow", ("latest-gpu",), ("linux/amd64",), "docker"),
    SeedImage("docker.io", "bitnami/redis", ("7",), ("linux/amd64", "linux/arm64"), "oci"),
    SeedImage("docker.io", "myrepo/image", ("tag",), ("linux/amd64",), "docker"),
    SeedImage("mcr.microsoft.com", "windows/servercore", ("latest", "ltsc2022"), (WINDOWS_2022,), "oci"),
    SeedImage("registry.contoso.com", "sourcerepo/image", ("tag",), ("linux/amd64", "linux/arm64"), "oci"),
    SeedImage(layout.SOURCE_ACR.login_server, "aci-helloworld", ("latest",), ("linux/amd64",), "docker"),
    SeedImage(layout.OTHER_SUB_ACR.login_server, "aci-helloworld", ("latest",), ("linux/amd64",), "docker"),
    SeedImage(layout.OTHER_SUB_ACR.login_server, "sourcerepo/image", ("tag",),
              ("linux/amd64", "linux/arm64"), "oci"),
)


def seed_image(item: SeedImage, *, version: int = 1) -> list[Seeded]:
    """Push one seed scenario; the MCR servercore is always an index, as it is on MCR."""
    image = build_image(item.repo, item.platforms, flavour=item.flavour, version=version,
                        index=True if item.registry == "mcr.microsoft.com" else None)
    client = admin_client(item.registry)
    return [Seeded(item.registry, item.repo, tag, push_image(client, item.repo, tag, image), image.media_type,
                   image.platforms) for tag in item.tags]


def seed_world() -> list[Seeded]:
    """Push every seed scenario and the signed images with their referrers (dev/signed.py), idempotent: the
    content is deterministic. A signed image appears here by its tag and index digest; `signed.seed_signed`
    returns its referrers too."""
    from dev import signed  # it builds on this module

    plain = [seeded for item in SEED_IMAGES for seeded in seed_image(item)]
    return plain + [Seeded(image.registry, image.repo, image.tag, image.digest, oci.OCI_INDEX,
                           list(image.platforms)) for image in signed.seed_signed_world()]


def main() -> int:
    try:
        pushed = seed_world()
    except oci.RegistryError as exc:
        print(f"seeding failed: {exc} (is `python -m dev.stack up` running?)", file=sys.stderr)
        return 1
    for seeded in pushed:
        print(f"{seeded.reference:60} {seeded.digest}  {', '.join(seeded.platforms)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
