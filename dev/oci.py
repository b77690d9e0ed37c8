"""A small client for the distribution (OCI) API, and a byte-for-byte image copy built on it.

The stack uses it to seed registries and the ACR stand-in uses it to perform `importImage`, so it speaks
to real registries the way `docker`/`skopeo` do: Basic or Bearer challenges, tokens per scope, digests
checked on every read, cross-repository mounts within one registry.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import urljoin

import requests

from dev import layout

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
MANIFEST_ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
# Layers registries are not allowed to serve (Windows base layers in old images); references stay as they are.
FOREIGN_LAYER_MARKERS = ("foreign", "nondistributable")
DEFAULT_TOKEN_TTL = 60
CHUNK = 1 << 20


class RegistryError(Exception):
    """A registry (or its token server) refused or failed a request; `code` is the distribution error code."""

    def __init__(self, status: int, code: str | None, message: str):
        super().__init__(f"{code}: {message}" if code else message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Auth:
    """Credentials for a registry: Basic creds (sent to the registry, or to its token realm) or a callable
    that returns a registry token for a scope string such as `repository:app:pull,push`."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token_provider: Callable[[str], str] | None = field(default=None, repr=False)

    @property
    def has_basic(self) -> bool:
        return self.username is not None or self.password is not None


@dataclass(frozen=True)
class ManifestInfo:
    digest: str
    media_type: str
    size: int


class Manifest(NamedTuple):
    body: bytes
    media_type: str
    digest: str


@dataclass(frozen=True)
class _Challenge:
    scheme: str  # "basic" | "bearer"
    realm: str | None = None
    service: str | None = None
    scope: str | None = None


@dataclass
class _Token:
    value: str
    expires: float


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def is_digest(ref: str) -> bool:
    return ref.startswith("sha256:") or ref.startswith("sha512:")


def pull_scope(repo: str) -> str:
    return f"repository:{repo}:pull"


def push_scope(repo: str) -> str:
    return f"repository:{repo}:pull,push"


def parse_challenge(header: str) -> _Challenge | None:
    """The first Basic/Bearer challenge in a WWW-Authenticate header."""
    scheme, _, rest = header.strip().partition(" ")
    scheme = scheme.lower()
    if scheme not in ("basic", "bearer"):
        return None
    params = {k.lower(): v for k, v in re.findall(r'(\w+)="([^"]*)"', rest)}
    return _Challenge(scheme, params.get("realm"), params.get("service"), params.get("scope"))


def _merge_scopes(*scopes: str | None) -> str:
    seen: list[str] = []
    for scope in scopes:
        for part in (scope or "").split():
            if part not in seen:
                seen.append(part)
    return " ".join(seen)


def _error_from(response: requests.Response, what: str) -> RegistryError:
    code = message = None
    try:
        errors = response.json().get("errors") or []
        if errors:
            code, message = errors[0].get("code"), errors[0].get("message")
    except (ValueError, AttributeError):
        pass
    if code is None:
        code = {401: "UNAUTHORIZED", 403: "DENIED", 429: "TOOMANYREQUESTS"}.get(response.status_code)
    return RegistryError(response.status_code, code,
                         f"{what}: {message or response.reason or 'HTTP ' + str(response.status_code)}")


class RegistryClient:
    """One registry, as seen by one set of credentials."""

    def __init__(self, base_url: str, auth: Auth | None = None, *, verify: str | bool = str(layout.CA_CERT),
                 timeout: float = 60.0, session: requests.Session | None = None):
        self.base_url = base_url.rstrip("/")
        self.auth = auth or Auth()
        self.timeout = timeout
        self.session = session or requests.Session()
        self.verify = verify  # per request: requests lets REQUESTS_CA_BUNDLE override Session.verify
        self._challenge: _Challenge | None = None
        self._tokens: dict[str, _Token] = {}
        self.token_fetches = 0

    def __repr__(self) -> str:
        return f"RegistryClient({self.base_url!r}, {self.auth!r})"

    # --- authentication ---------------------------------------------------------------------------
    def _fetch_token(self, scope: str) -> _Token:
        self.token_fetches += 1
        if self.auth.token_provider is not None:
            return _Token(self.auth.token_provider(scope), time.monotonic() + DEFAULT_TOKEN_TTL)
        assert self._challenge is not None and self._challenge.realm
        params: list[tuple[str, str]] = []
        if self._challenge.service:
            params.append(("service", self._challenge.service))
        params.extend(("scope", part) for part in scope.split())
        basic = (self.auth.username or "", self.auth.password or "") if self.auth.has_basic else None
        try:
            answer = self.session.get(self._challenge.realm, params=params, auth=basic, timeout=self.timeout,
                                      verify=self.verify)
        except requests.RequestException as exc:
            raise RegistryError(0, None, f"token server unreachable: {type(exc).__name__}") from None
        if answer.status_code != 200:
            raise RegistryError(answer.status_code, "UNAUTHORIZED" if answer.status_code in (401, 403) else None,
                                f"token server refused the request for {scope or 'no scope'} "
                                f"(HTTP {answer.status_code})")
        body = answer.json()
        value = body.get("token") or body.get("access_token")
        if not value:
            raise RegistryError(answer.status_code, None, "token server answered without a token")
        ttl = int(body.get("expires_in") or DEFAULT_TOKEN_TTL)
        return _Token(value, time.monotonic() + max(ttl - 10, 1))

    def _auth_headers(self, scope: str | None) -> dict[str, str]:
        challenge = self._challenge
        if challenge is None:
            return {}
        if challenge.scheme == "basic":
            if not self.auth.has_basic:
                return {}
            return {"Authorization": requests.auth._basic_auth_str(self.auth.username or "",
                                                                   self.auth.password or "")}
        key = scope or ""
        token = self._tokens.get(key)
        if token is None or token.expires <= time.monotonic():
            token = self._tokens[key] = self._fetch_token(key)
        return {"Authorization": f"Bearer {token.value}"}

    def _learn_challenge(self, response: requests.Response, scope: str | None) -> str | None:
        """Adopt the registry's challenge; returns the scope to ask for next, or None when hopeless."""
        challenge = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if challenge is None:
            return None
        if challenge.scheme == "basic" and not self.auth.has_basic:
            return None
        if challenge.scheme == "bearer" and not challenge.realm and self.auth.token_provider is None:
            return None
        self._challenge = challenge
        merged = _merge_scopes(scope, challenge.scope)
        self._tokens.pop(merged, None)
        return merged

    def _request(self, method: str, url: str, scope: str | None, what: str, *,
                 ok: tuple[int, ...] = (200,), quiet: tuple[int, ...] = (), **kwargs: Any) -> requests.Response:
        """Send with credentials for `scope`, answering one auth challenge; raise RegistryError unless the
        status is in `ok` or `quiet` (quiet statuses are returned for the caller to interpret)."""
        if not url.startswith("http"):
            url = self.base_url + url
        headers = dict(kwargs.pop("headers", None) or {})
        retryable = not isinstance(kwargs.get("data"), Iterator)
        for attempt in range(2):
            try:
                response = self.session.request(method, url, headers={**headers, **self._auth_headers(scope)},
                                                timeout=self.timeout, verify=self.verify, **kwargs)
            except requests.exceptions.SSLError:
                raise RegistryError(0, None, f"{what}: TLS verification of {self.base_url} failed against "
                                             f"{self.verify} (a server from another CA on that port?)") from None
            except requests.RequestException as exc:
                raise RegistryError(0, None, f"{what}: {type(exc).__name__} talking to {self.base_url}") from None
            if response.status_code != 401 or attempt == 1 or not retryable:
                break
            next_scope = self._learn_challenge(response, scope)
            if next_scope is None:
                break
            scope = next_scope or scope
        if response.status_code in ok or response.status_code in quiet:
            return response
        raise _error_from(response, what)

    # --- manifests ----------------------------------------------------------------------------------
    def head_manifest(self, repo: str, ref: str) -> ManifestInfo | None:
        """Digest, media type and size of a manifest; None when the repository or reference is unknown.
        HEAD requests are not counted as pulls by Docker Hub."""
        response = self._request("HEAD", f"/v2/{repo}/manifests/{ref}", pull_scope(repo),
                                 f"HEAD manifest {repo}:{ref}", quiet=(404,),
                                 headers={"Accept": MANIFEST_ACCEPT})
        if response.status_code == 404:
            return None
        digest = response.headers.get("Docker-Content-Digest")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        if not digest:
            manifest = self.get_manifest(repo, ref)
            return ManifestInfo(manifest.digest, manifest.media_type, len(manifest.body))
        return ManifestInfo(digest, media_type, int(response.headers.get("Content-Length") or 0))

    def get_manifest(self, repo: str, ref: str) -> Manifest:
        response = self._request("GET", f"/v2/{repo}/manifests/{ref}", pull_scope(repo),
                                 f"GET manifest {repo}:{ref}", headers={"Accept": MANIFEST_ACCEPT})
        body = response.content
        digest = sha256_digest(body)
        if is_digest(ref) and ref != digest:
            raise RegistryError(response.status_code, "DIGEST_INVALID",
                                f"GET manifest {repo}@{ref}: content hashes to {digest}")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        if media_type not in INDEX_TYPES | MANIFEST_TYPES:
            media_type = json.loads(body).get("mediaType") or media_type
        return Manifest(body, media_type, digest)

    def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        response = self._request("PUT", f"/v2/{repo}/manifests/{ref}", push_scope(repo),
                                 f"PUT manifest {repo}:{ref}", ok=(200, 201, 202),
                                 data=body, headers={"Content-Type": media_type})
        return response.headers.get("Docker-Content-Digest") or sha256_digest(body)

    def delete_manifest(self, repo: str, digest: str) -> None:
        self._request("DELETE", f"/v2/{repo}/manifests/{digest}", f"repository:{repo}:delete",
                      f"DELETE manifest {repo}@{digest}", ok=(200, 202))

    def list_tags(self, repo: str, *, page_size: int = 100) -> list[str]:
        """Every tag, following `Link: <...>; rel="next"` pagination."""
        tags: list[str] = []
        url: str | None = f"{self.base_url}/v2/{repo}/tags/list?n={page_size}"
        while url:
            response = self._request("GET", url, pull_scope(repo), f"list tags of {repo}")
            tags.extend(response.json().get("tags") or [])
            url = _next_link(response, url)
        return tags

    # --- blobs --------------------------------------------------------------------------------------
    def blob_exists(self, repo: str, digest: str) -> bool:
        response = self._request("HEAD", f"/v2/{repo}/blobs/{digest}", pull_scope(repo),
                                 f"HEAD blob {repo}@{digest}", quiet=(404,))
        return response.status_code == 200

    def open_blob(self, repo: str, digest: str) -> requests.Response:
        """A streaming response for the blob; close it (it is a context manager)."""
        return self._request("GET", f"/v2/{repo}/blobs/{digest}", pull_scope(repo),
                             f"GET blob {repo}@{digest}", stream=True)

    def get_blob(self, repo: str, digest: str) -> bytes:
        with self.open_blob(repo, digest) as response:
            data = response.content
        if sha256_digest(data) != digest:
            raise RegistryError(200, "DIGEST_INVALID", f"GET blob {repo}@{digest}: content does not match")
        return data

    def put_blob(self, repo: str, data: bytes | Iterable[bytes], *, digest: str | None = None) -> str:
        """Upload a blob; bytes go up in one PUT, an iterable is streamed (then `digest` is required)."""
        if isinstance(data, bytes | bytearray):
            digest = digest or sha256_digest(bytes(data))
        elif digest is None:
            raise ValueError("streamed uploads need the digest up front")
        started = self._request("POST", f"/v2/{repo}/blobs/uploads/", push_scope(repo),
                                f"start upload to {repo}", ok=(202,))
        location = urljoin(started.url, started.headers["Location"])
        if not isinstance(data, bytes | bytearray):
            patched = self._request("PATCH", location, push_scope(repo), f"upload {digest} to {repo}",
                                    ok=(202,), data=iter(data),
                                    headers={"Content-Type": "application/octet-stream"})
            location = urljoin(patched.url, patched.headers["Location"])
            data = b""
        separator = "&" if "?" in location else "?"
        self._request("PUT", f"{location}{separator}digest={digest}", push_scope(repo),
                      f"finish upload of {digest} to {repo}", ok=(201, 204), data=bytes(data),
                      headers={"Content-Type": "application/octet-stream"})
        return digest

    def delete_blob(self, repo: str, digest: str) -> None:
        """Unlink a blob from a repository (docker-registry with delete enabled): the manifests naming it stay."""
        self._request("DELETE", f"/v2/{repo}/blobs/{digest}", f"repository:{repo}:delete",
                      f"DELETE blob {repo}@{digest}", ok=(202,))

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> bool:
        """Link a blob from another repository of this registry without copying; False when refused."""
        scope = f"{push_scope(repo)} {pull_scope(from_repo)}"
        response = self._request("POST", f"/v2/{repo}/blobs/uploads/", scope, f"mount {digest} into {repo}",
                                 ok=(201, 202), params={"mount": digest, "from": from_repo})
        if response.status_code == 201:
            return True
        location = response.headers.get("Location")
        if location:  # the registry opened an ordinary upload instead: abandon it
            self._request("DELETE", urljoin(response.url, location), push_scope(repo),
                          "cancel upload", ok=(204,), quiet=(404,))
        return False


def _next_link(response: requests.Response, current: str) -> str | None:
    match = re.search(r'<([^>]+)>\s*;\s*rel="?next"?', response.headers.get("Link", ""))
    return urljoin(current, match.group(1)) if match else None


# --- copying ----------------------------------------------------------------------------------------
@dataclass
class CopyResult:
    digest: str
    media_type: str
    manifests: int
    platforms: list[str]
    blobs_copied: int = 0
    blobs_mounted: int = 0
    blobs_skipped: int = 0
    bytes_copied: int = 0


def platform_name(platform: dict[str, Any]) -> str:
    """`linux/arm64/v8`, `windows/amd64:10.0.20348.2700` (the form ACR and `docker manifest` show)."""
    name = f"{platform.get('os', 'unknown')}/{platform.get('architecture', 'unknown')}"
    if platform.get("variant"):
        name += f"/{platform['variant']}"
    if platform.get("os.version"):
        name += f":{platform['os.version']}"
    return name


@dataclass
class _Plan:
    manifests: dict[str, Manifest] = field(default_factory=dict)  # children first, top last
    blobs: dict[str, str] = field(default_factory=dict)            # digest -> media type
    platforms: list[str] = field(default_factory=list)


IMAGE_CONFIG_TYPES = frozenset({"application/vnd.oci.image.config.v1+json",
                                "application/vnd.docker.container.image.v1+json"})


def _config_platform(src: RegistryClient, repo: str, config: dict[str, Any]) -> dict[str, Any]:
    """os/architecture from an image config; an artifact's config (the empty `{}` of OCI 1.1 artifacts, or
    any media type a tool chose, JSON or not) names no platform and is not read."""
    if config.get("mediaType") not in IMAGE_CONFIG_TYPES:
        return {}
    try:
        parsed = json.loads(src.get_blob(repo, config["digest"]))
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _plan_copy(src: RegistryClient, repo: str, top: Manifest, max_manifests: int | None) -> _Plan:
    plan = _Plan()

    def visit(manifest: Manifest, platform: dict[str, Any] | None) -> None:
        doc = json.loads(manifest.body)
        if manifest.media_type in INDEX_TYPES or "manifests" in doc:
            for child in doc.get("manifests", []):
                if child["digest"] not in plan.manifests:
                    visit(src.get_manifest(repo, child["digest"]), child.get("platform"))
        else:
            config = doc["config"]
            plan.blobs.setdefault(config["digest"], config.get("mediaType", ""))
            for layer in doc.get("layers", []):
                plan.blobs.setdefault(layer["digest"], layer.get("mediaType", ""))
            if platform is None:
                platform = _config_platform(src, repo, config)
            if platform.get("os") and platform.get("architecture"):  # attestations and artifacts carry none
                plan.platforms.append(platform_name(platform))
        plan.manifests[manifest.digest] = manifest
        if max_manifests is not None and len(plan.manifests) > max_manifests:
            raise RegistryError(400, "TOO_MANY_MANIFESTS",
                                f"{repo}@{top.digest} has more than {max_manifests} manifests")

    visit(top, None)
    return plan


def _copy_blob(src: RegistryClient, src_repo: str, dst: RegistryClient, dst_repo: str, digest: str,
               media_type: str, result: CopyResult) -> None:
    if dst.blob_exists(dst_repo, digest):
        result.blobs_skipped += 1
        return
    if src.base_url == dst.base_url and dst.mount_blob(dst_repo, digest, src_repo):
        result.blobs_mounted += 1
        return
    if any(marker in media_type for marker in FOREIGN_LAYER_MARKERS) and not src.blob_exists(src_repo, digest):
        return
    size = 0

    def counted(chunks: Iterable[bytes]) -> Iterator[bytes]:
        nonlocal size
        for chunk in chunks:
            size += len(chunk)
            yield chunk

    with src.open_blob(src_repo, digest) as response:
        dst.put_blob(dst_repo, counted(response.iter_content(CHUNK)), digest=digest)
    result.blobs_copied += 1
    result.bytes_copied += size


@dataclass(frozen=True)
class ImageSummary:
    digest: str
    media_type: str
    manifests: int
    platforms: list[str]


def inspect_image(client: RegistryClient, repo: str, ref: str) -> ImageSummary:
    """What an image is: its digest, how many manifests it has and the platforms they are for."""
    top = client.get_manifest(repo, ref)
    plan = _plan_copy(client, repo, top, None)
    return ImageSummary(top.digest, top.media_type, len(plan.manifests), plan.platforms)


def copy_image(src: RegistryClient, src_repo: str, src_ref: str, dst: RegistryClient, dst_repo: str, *,
               tags: list[str], max_manifests: int | None = None) -> CopyResult:
    """Copy the manifest or index at `src_ref`, every child manifest and every blob, byte for byte.

    Children are pushed by digest before their parent, so a tag never points at something incomplete;
    the top manifest is pushed once per tag, or by digest when `tags` is empty. The manifest count is
    checked before anything is written.
    """
    top = src.get_manifest(src_repo, src_ref)
    plan = _plan_copy(src, src_repo, top, max_manifests)
    result = CopyResult(top.digest, top.media_type, len(plan.manifests), plan.platforms)
    for digest, media_type in plan.blobs.items():
        _copy_blob(src, src_repo, dst, dst_repo, digest, media_type, result)
    for digest, manifest in plan.manifests.items():
        if digest != top.digest:
            dst.put_manifest(dst_repo, digest, manifest.body, manifest.media_type)
    for ref in tags or [top.digest]:
        dst.put_manifest(dst_repo, ref, top.body, top.media_type)
    return result
