"""The import engine's decisions: which source the ACR import API gets, and the exact body it is sent.

Pure functions over a validated request; the ARM adapter performs them. Queue, timer, Event Grid, CLI and
dry run all end here, so what a dry run prints is what the worker sends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from shared.core.request import ImportRequest
from shared.core.resource_ids import RegistryId
from shared.registry.client import Auth, IdentityAuth, source_auth

# (subscription, login server) -> the registry with that login server in that subscription, if any
RegistryLookup = Callable[[str, str], RegistryId | None]


def source_access(request: ImportRequest, identity: IdentityAuth, *, suffix: str) -> tuple[str, Auth]:
    """Where the app itself reads the request's source (digests, referrers), and with what: the source ACR's
    login server with the app's identity, or the source's host with the request's credentials."""
    host = request.source_registry.login_server(suffix) if request.source_registry else request.source.registry
    credentials = request.credentials
    return host, source_auth(host, credentials.username if credentials else None,
                             credentials.password if credentials else None, identity, suffix)


def resolve_source_registry(request: ImportRequest, lookup: RegistryLookup, *, suffix: str) -> RegistryId | None:
    """The source ACR to import by resource id (the app's own identity), or None for registryUri.

    Like `az acr import`: an ACR login server in the target's subscription is imported by resource id;
    one found nowhere goes by registryUri. Unlike it, credentials are never dropped silently: a request
    that names a credential set is imported with those credentials through registryUri.
    """
    if request.source_registry:
        return request.source_registry
    if request.credentials or not request.source.registry.endswith(f".{suffix}"):
        return None
    return lookup(request.target.subscription, request.source.registry)


def referrer_parameters(request: ImportRequest, source_registry: RegistryId | None, digest: str, repository: str,
                        tag: str = "") -> dict[str, Any]:
    """The body that imports one referrer of the request's image: from the same source (the same identity or
    credentials), by digest, into `repository`: untagged, or under cosign's `tag` (which moves as signatures
    are added: Force)."""
    body = import_parameters(request, source_registry, force=bool(tag),
                             source_image=replace(request.source, tag=None, digest=digest).source_image)
    body.pop("targetTags", None)
    body.pop("untaggedTargetRepositories", None)
    if tag:
        body["targetTags"] = [f"{repository}:{tag}"]
    else:
        body["untaggedTargetRepositories"] = [repository]
    return body


def import_parameters(request: ImportRequest, source_registry: RegistryId | None, *,
                      force: bool | None = None, source_image: str | None = None) -> dict[str, Any]:
    """The ImportImageParameters body (ARM JSON names). `force` overrides the request's mode."""
    source: dict[str, Any] = {"sourceImage": source_image or request.source.source_image}
    if source_registry:
        source["resourceId"] = str(source_registry)
    else:
        source["registryUri"] = request.source.registry
        if request.credentials:
            credentials = {"password": request.credentials.password.reveal()}
            if request.credentials.username:
                credentials["username"] = request.credentials.username
            source["credentials"] = credentials
    body: dict[str, Any] = {"source": source}
    if request.target_tags:
        body["targetTags"] = [str(t) for t in request.target_tags]
    if request.untagged_target_repositories:
        body["untaggedTargetRepositories"] = list(request.untagged_target_repositories)
    if force is None:
        force = request.mode in ("Force", "IfChanged")
    body["mode"] = "Force" if force else "NoForce"
    return body


def backup_parameters(target: RegistryId, repository: str, old_digest: str, backup_tag: str) -> dict[str, Any]:
    """The ImportImageParameters body that keeps `repository@old_digest` as `repository:backup_tag` inside the
    target registry before a tag moves (BACKUP_TAG_TEMPLATE).

    The source is the target itself by `resourceId`: the app's identity needs nothing beyond what its imports
    already need (importImage, and read + pull on the source registry, here the target), no push rights.
    By digest, so what is kept is the image the tag held when it was read, whatever moves it meanwhile.
    `Force`: a backup tag that exists already is the same old image again (a redelivery) or one kept under
    the same name earlier; the ACR REST API's ImportMode says Force overwrites existing target tags. The
    copy is manifest-only: every blob is already in the registry.
    (learn.microsoft.com/rest/api/containerregistry/registries/import-image: `sourceImage` may name a digest,
    `repo@sha256:...`, and `resourceId` is the source ACR's resource id.)"""
    return {"source": {"resourceId": str(target), "sourceImage": f"{repository}@{old_digest}"},
            "targetTags": [f"{repository}:{backup_tag}"], "mode": "Force"}
