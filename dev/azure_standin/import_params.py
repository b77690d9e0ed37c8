"""Strict parsing of an importImage body (ImportImageParameters), so a client's mistake surfaces as the
400 `InvalidParameters` it would cause in Azure, naming the field, instead of a silent default."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from dev.azure_standin.errors import ArmError, invalid_parameters

REPO_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
TAG_RE = re.compile(r"[\w][\w.-]{0,127}")
DIGEST_RE = re.compile(r"sha256:[a-f0-9]{64}")
HOST_RE = re.compile(r"[A-Za-z0-9.-]+(?::\d{1,5})?")
ACR_ID_RE = re.compile(r"/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/"
                       r"Microsoft\.ContainerRegistry/registries/([^/]+)", re.IGNORECASE)

TOP_FIELDS = {"source", "targetTags", "untaggedTargetRepositories", "mode"}
SOURCE_FIELDS = {"resourceId", "registryUri", "credentials", "sourceImage"}
CREDENTIAL_FIELDS = {"username", "password"}
MODES = ("NoForce", "Force")


@dataclass(frozen=True)
class ImageRef:
    repository: str
    tag: str | None
    digest: str | None

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"


@dataclass(frozen=True)
class ImportRequest:
    source_image: ImageRef
    resource_id: str | None
    registry_uri: str | None
    username: str | None
    password: str | None
    target_tags: tuple[tuple[str, str], ...]     # (repository, tag)
    untagged_repositories: tuple[str, ...]
    mode: str

    @property
    def has_credentials(self) -> bool:
        return self.password is not None


def _unknown(fields: dict, allowed: set[str], where: str) -> None:
    extra = sorted(set(fields) - allowed)
    if extra:
        raise invalid_parameters(f"Unknown parameter '{where}{extra[0]}' in ImportImageParameters.")


def _string(value: Any, name: str, *, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise invalid_parameters(f"The parameter '{name}' is required.")
        return None
    if not isinstance(value, str) or not value:
        raise invalid_parameters(f"The parameter '{name}' must be a non-empty string.")
    return value


def _string_list(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise invalid_parameters(f"The parameter '{name}' must be a list of non-empty strings.")
    return value


def parse_image(text: str, name: str = "source.sourceImage") -> ImageRef:
    repo, digest, tag = text, None, None
    if "@" in repo:
        repo, digest = repo.split("@", 1)
        if not DIGEST_RE.fullmatch(digest):
            raise invalid_parameters(f"The parameter '{name}' has an invalid digest: '{text}'.")
    if ":" in repo:
        repo, tag = repo.rsplit(":", 1)
        if not TAG_RE.fullmatch(tag):
            raise invalid_parameters(f"The parameter '{name}' has an invalid tag: '{text}'.")
    if not REPO_RE.fullmatch(repo):
        raise invalid_parameters(f"The parameter '{name}' has an invalid repository name: '{text}'.")
    return ImageRef(repo, tag, digest)


def parse_import_request(body: Any) -> ImportRequest:
    """The validated request, or an ArmError 400 InvalidParameters naming the offending field."""
    if not isinstance(body, dict):
        raise invalid_parameters("The request body must be a JSON object (ImportImageParameters).")
    _unknown(body, TOP_FIELDS, "")
    source = body.get("source")
    if source is None:
        raise invalid_parameters("The parameter 'source' is required.")
    if not isinstance(source, dict):
        raise invalid_parameters("The parameter 'source' must be an object.")
    _unknown(source, SOURCE_FIELDS, "source.")
    image = parse_image(_string(source.get("sourceImage"), "source.sourceImage", required=True))
    resource_id = _string(source.get("resourceId"), "source.resourceId")
    registry_uri = _string(source.get("registryUri"), "source.registryUri")
    if (resource_id is None) == (registry_uri is None):
        raise invalid_parameters("Exactly one of 'source.resourceId' and 'source.registryUri' must be given.")
    if resource_id is not None and not ACR_ID_RE.fullmatch(resource_id):
        raise invalid_parameters(f"The parameter 'source.resourceId' is not a registry resource id: "
                                 f"'{resource_id}'.")
    if registry_uri is not None and not HOST_RE.fullmatch(registry_uri):
        raise invalid_parameters(f"The parameter 'source.registryUri' must be a registry host name: "
                                 f"'{registry_uri}'.")
    username = password = None
    credentials = source.get("credentials")
    if credentials is not None:
        if not isinstance(credentials, dict):
            raise invalid_parameters("The parameter 'source.credentials' must be an object.")
        _unknown(credentials, CREDENTIAL_FIELDS, "source.credentials.")
        username = _string(credentials.get("username"), "source.credentials.username")
        password = _string(credentials.get("password"), "source.credentials.password", required=True)
        if resource_id is not None:
            raise invalid_parameters("The parameter 'source.credentials' can only be used with "
                                     "'source.registryUri'.")
    mode = body.get("mode", "NoForce")
    if mode not in MODES:
        raise invalid_parameters(f"The parameter 'mode' has an invalid value '{mode}'. "
                                 f"Allowed values: {', '.join(MODES)}.")
    tags = []
    for entry in _string_list(body.get("targetTags"), "targetTags"):
        target = parse_image(entry, "targetTags")
        if target.digest:
            raise invalid_parameters(f"The parameter 'targetTags' cannot name a digest: '{entry}'.")
        tags.append((target.repository, target.tag or image.tag or "latest"))
    untagged = []
    for entry in _string_list(body.get("untaggedTargetRepositories"), "untaggedTargetRepositories"):
        if not REPO_RE.fullmatch(entry):
            raise invalid_parameters(f"The parameter 'untaggedTargetRepositories' has an invalid "
                                     f"repository name: '{entry}'.")
        untagged.append(entry)
    if not tags and not untagged:
        if image.tag or not image.digest:
            tags.append((image.repository, image.tag or "latest"))
        else:
            untagged.append(image.repository)
    return ImportRequest(image, resource_id, registry_uri, username, password,
                         tuple(tags), tuple(untagged), mode)


__all__ = ["ArmError", "ImageRef", "ImportRequest", "parse_image", "parse_import_request"]
