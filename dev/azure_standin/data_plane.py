"""What an import needs from registries, behind one small interface, so the ARM side can be driven
with registries (`RegistryDataPlane`, the real copy) or without them (`MemoryDataPlane`, a catalog the
tests fill through the control endpoint). Both answer failures with the message ACR would give."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from dev import layout


@dataclass(frozen=True)
class SourceAccess:
    """How to reach the source: a host name as the request spelled it, plus what proves access."""

    host: str
    username: str | None = None
    password: str | None = None
    bearer_token: str | None = None  # minted by the stand-in for `resourceId` sources
    preauthorized: bool = False      # `resourceId`: ARM already checked the caller's pull role


@dataclass(frozen=True)
class CopyJob:
    source: SourceAccess
    repository: str
    reference: str                       # tag or digest
    target: layout.AcrSpec
    target_tags: tuple[tuple[str, str], ...]
    untagged_repositories: tuple[str, ...]


@dataclass(frozen=True)
class SourceImage:
    digest: str
    manifests: tuple[str, ...]  # every manifest digest the import copies (index first)


class CopyFailed(Exception):
    """A data-plane failure, carried to the operation as ARM's error code and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class DataPlane(Protocol):
    def inspect(self, job: CopyJob) -> SourceImage: ...
    def existing_tags(self, job: CopyJob) -> list[str]: ...
    def copy(self, job: CopyJob) -> str: ...


def unreachable(host: str) -> CopyFailed:
    return CopyFailed("InvalidParameters",
                      f"Error while resolving registry '{host}': dial tcp: lookup {host}: no such host")


def registry_error(code: str, message: str) -> CopyFailed:
    """ACR passes the source registry's own error through, e.g. `UNAUTHORIZED: authentication required`."""
    return CopyFailed("InvalidParameters", f"{code}: {message}")


def upstream_for_host(host: str) -> layout.UpstreamSpec | None:
    return next((u for u in layout.UPSTREAMS if host.lower() in u.hosts), None)


def acr_for_host(host: str) -> layout.AcrSpec | None:
    return next((a for a in layout.ACRS if a.login_server == host.lower()), None)


@dataclass
class MemoryDataPlane:
    """Registries as a dict: `images["host/repo:tag" or "host/repo@digest"] = SourceImage`.

    Access rules follow layout: upstream auth kinds and users, ACR login servers reachable with the
    service principal's secret (the caller's roles are checked by `can_pull`)."""

    can_pull: Callable[[str, str | None, layout.AcrSpec], bool] | None = None  # (app id, secret, acr)
    images: dict[str, SourceImage] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def put(self, ref: str, image: SourceImage) -> None:
        with self._lock:
            self.images[ref] = image

    def clear(self) -> None:
        with self._lock:
            self.images.clear()

    def _key(self, host: str, repo: str, ref: str) -> str:
        sep = "@" if ref.startswith("sha256:") else ":"
        return f"{host.lower()}/{repo}{sep}{ref}"

    def _check_access(self, job: CopyJob) -> None:
        src = job.source
        if src.preauthorized:
            return
        upstream = upstream_for_host(src.host)
        acr = acr_for_host(src.host)
        if upstream is None and acr is None:
            raise unreachable(src.host)
        denied = registry_error("UNAUTHORIZED", "authentication required")
        if acr is not None:
            if not (src.username and self.can_pull and self.can_pull(src.username, src.password, acr)):
                raise denied
            return
        if upstream.auth == "none":
            return
        if src.password is not None:
            if upstream.users.get(src.username or "") != src.password:
                raise denied
            return
        if not (upstream.auth == "token" and job.repository.startswith(upstream.anonymous_pull)):
            raise denied

    def inspect(self, job: CopyJob) -> SourceImage:
        self._check_access(job)
        host = job.source.host
        if upstream_for_host(host) is not None:
            host = upstream_for_host(host).hosts[0]
        with self._lock:
            image = self.images.get(self._key(host, job.repository, job.reference))
        if image is None:
            raise registry_error("MANIFEST_UNKNOWN", "manifest unknown")
        return image

    def existing_tags(self, job: CopyJob) -> list[str]:
        with self._lock:
            return [f"{repo}:{tag}" for repo, tag in job.target_tags
                    if self._key(job.target.login_server, repo, tag) in self.images]

    def copy(self, job: CopyJob) -> str:
        image = self.inspect(job)
        with self._lock:
            for repo, tag in job.target_tags:
                self.images[self._key(job.target.login_server, repo, tag)] = image
            for repo in (*{r for r, _ in job.target_tags}, *job.untagged_repositories):
                self.images[self._key(job.target.login_server, repo, image.digest)] = image
        return image.digest
