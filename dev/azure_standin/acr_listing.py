"""ACR's listing API on the login server: `GET /acr/v1/<repo>/_tags` and `GET /acr/v1/<repo>/_manifests`, what
`az acr repository show-tags` and `az acr manifest list-metadata` call (azure-cli 2.91 `acr/repository.py`
`_get_tag_path`/`_get_manifest_path`, `_obtain_data_from_registry`), built from the registry's storage.

Shapes follow ACR's answers as recorded by the azure-sdk-for-js container-registry tests
(`recordings/node/repository_and_artifact_tests/recording_should_list_registry_manifests.js` and the `_tags`
recordings beside it): `{"registry", "imageName", "tags": [{"name", "digest", "createdTime", "lastUpdateTime",
"signed", "changeableAttributes"}]}` sorted by name, and `{"registry", "imageName", "manifests": [{"digest",
"imageSize", "createdTime", "lastUpdateTime", "architecture", "os" (image manifests), "mediaType", "tags"
(when tagged), "changeableAttributes"}]}` sorted by digest; `imageSize` is the manifest's own length in those
recordings (525 for each single-platform hello-world manifest, whatever its layers). Paging: `n` (page size),
`last` (the name, or digest, after which to start), `orderby` (`timeasc`, `timedesc`); more left is a
`Link: </acr/v1/<repo>/_tags?last=<last>&n=<n>&orderby=<orderby>>; rel="next"` header, which az follows by
taking its query. Authorization as ACR: a registry token whose `access` holds `metadata_read` on the
repository, else 401 with `Bearer realm=...,service=...,scope="repository:<repo>:metadata_read"` and ACR's
body (`UNAUTHORIZED`, `detail` naming type, name and action), as recorded in the same tests. An unknown repository
is 404 `NAME_UNKNOWN` "repository name not known to registry" with `detail: {"name"}` (ACR's `/acr/v1` answer
quoted in Azure/acr#79).

The storage is the ACR's docker-registry, read from its filesystem driver (distribution's
`registry/storage/paths.go` layout under `<rootdirectory>/docker/registry/v2`: `repositories/<name>/_manifests/
revisions/sha256/<hex>/link` per manifest, `.../tags/<tag>/current/link` per tag, content in
`blobs/sha256/<xx>/<hex>/data`): the registry API cannot list untagged manifests nor say when something was
pushed, ACR's listing does both. Times are the link files' modification times.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import jwt

from dev import layout, registries, tokens
from dev.azure_standin.http_base import Request, Response

LISTING = re.compile(r"/acr/v1/(?P<repo>.+)/_(?P<kind>tags|manifests)/?")
ORDERS = {"": None, "timeasc": False, "timedesc": True}  # orderby -> newest first?
CHANGEABLE = {"deleteEnabled": True, "writeEnabled": True, "readEnabled": True, "listEnabled": True}
INDEX_TYPES = {"application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"}
METADATA_READ = "metadata_read"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY_NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")  # distribution's reference grammar


def storage_root(acr: layout.AcrSpec) -> Path:
    return registries.registry_dir(acr) / "data" / "docker" / "registry" / "v2"


def _error(status: int, code: str, message: str, detail: Any = None, headers: dict[str, str] | None = None) -> Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if detail is not None:
        error["detail"] = detail
    return Response(status, {"errors": [error]}, headers or {})


def _timestamp(path: Path) -> str:
    """ACR's form: UTC, seven fractional digits, `Z` (`2021-05-28T17:15:14.9483587Z`)."""
    moment = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


@dataclass
class _Manifest:
    digest: str
    link: Path
    raw: bytes


class Storage:
    """One repository of an ACR's docker-registry, as its files say."""

    def __init__(self, acr: layout.AcrSpec, repository: str) -> None:
        self.root = storage_root(acr)
        self.repository = repository
        self.manifests_dir = self.root / "repositories" / repository / "_manifests"

    def exists(self) -> bool:
        return self.manifests_dir.is_dir()

    def _blob(self, digest: str) -> bytes | None:
        algorithm, _, hexdigest = digest.partition(":")
        if algorithm != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", hexdigest):
            return None
        path = self.root / "blobs" / "sha256" / hexdigest[:2] / hexdigest / "data"
        return path.read_bytes() if path.is_file() else None

    def tags(self) -> dict[str, tuple[str, Path]]:
        """tag -> (digest, its link file)."""
        found = {}
        folder = self.manifests_dir / "tags"
        for entry in sorted(folder.iterdir()) if folder.is_dir() else ():
            link = entry / "current" / "link"
            if link.is_file():
                found[entry.name] = (link.read_text().strip(), link)
        return found

    def manifests(self) -> list[_Manifest]:
        found = []
        folder = self.manifests_dir / "revisions" / "sha256"
        for entry in sorted(folder.iterdir()) if folder.is_dir() else ():
            link = entry / "link"
            if not link.is_file():
                continue  # a deleted manifest: docker-registry removes its link
            digest = link.read_text().strip()
            raw = self._blob(digest)
            if raw is not None:
                found.append(_Manifest(digest, link, raw))
        return found

    def platform(self, manifest: dict) -> dict[str, str]:
        """architecture/os of an image manifest, from its config blob (ACR shows them for images only)."""
        config = manifest.get("config") or {}
        raw = self._blob(str(config.get("digest", "")))
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            return {}
        return {key: parsed[key] for key in ("architecture", "os") if isinstance(parsed, dict)
                and isinstance(parsed.get(key), str)}


def authorize(request: Request, acr: layout.AcrSpec, repository: str, action: str = METADATA_READ) -> Response | None:
    """None when the bearer registry token grants `action` (`metadata_read` for the listing, `pull` for the
    referrers API) on the repository, else ACR's 401."""
    scope = f"repository:{repository}:{action}"
    challenge = {"WWW-Authenticate": f'Bearer realm="{layout.acr_token_realm(acr)}",service="{acr.login_server}",'
                                     f'scope="{scope}"'}
    detail = [{"Type": "repository", "Name": repository, "Action": action}]
    header = request.headers.get("authorization", "")
    if header[:7].lower() != "bearer ":
        return _error(401, "UNAUTHORIZED", "authentication required, visit https://aka.ms/acr/authorization for "
                      "more information.", detail, challenge)
    try:
        claims = tokens.verify_registry_token(header[7:].strip(), service=acr.login_server)
    except jwt.PyJWTError:
        return _error(401, "UNAUTHORIZED", "authentication required, visit https://aka.ms/acr/authorization for "
                      "more information.", detail, challenge)
    for grant in claims.get("access") or []:
        if (grant.get("type") == "repository" and grant.get("name") == repository
                and action in (grant.get("actions") or [])):
            return None
    challenge["WWW-Authenticate"] += ',error="insufficient_scope"'
    return _error(401, "UNAUTHORIZED", "authentication required, visit https://aka.ms/acr/authorization for "
                  "more information.", detail, challenge)


def _page(request: Request, items: list[dict], key: str, kind: str, repository: str,
          ) -> tuple[list[dict], dict[str, str]] | Response:
    """ACR's paging: order, skip past `last`, cut at `n`, and a `Link` to the rest."""
    orderby = (request.param("orderby") or "").lower()
    if orderby not in ORDERS:
        return _error(400, "BAD_REQUEST", f"orderby must be timeasc or timedesc, not {orderby!r}")
    raw_n = request.param("n")
    if raw_n is not None and (not raw_n.isdigit() or int(raw_n) < 1):
        return _error(400, "BAD_REQUEST", f"n must be a positive integer, not {raw_n!r}")
    newest_first = ORDERS[orderby]
    if newest_first is None:
        items = sorted(items, key=lambda item: item[key])
    else:
        items = sorted(items, key=lambda item: (item["lastUpdateTime"], item[key]), reverse=newest_first)
    last = request.param("last")
    if last:
        if newest_first is None:
            items = [item for item in items if item[key] > last]
        else:
            position = next((i for i, item in enumerate(items) if item[key] == last), len(items) - 1)
            items = items[position + 1:]
    if raw_n is None or len(items) <= int(raw_n):
        return items, {}
    page = items[:int(raw_n)]
    link = (f"</acr/v1/{repository}/_{kind}?last={quote(page[-1][key], safe='')}&n={raw_n}&orderby={orderby}>; "
            f'rel="next"')
    return page, {"Link": link}


def serve_listing(request: Request, acr: layout.AcrSpec) -> Response:
    """`/acr/v1/...` on a login server."""
    match = LISTING.fullmatch(unquote(request.path))
    if match is None:
        return _error(404, "UNSUPPORTED", "the stand-in serves only GET /acr/v1/<repository>/_tags and "
                      "/acr/v1/<repository>/_manifests of ACR's API")
    if request.method not in ("GET", "HEAD"):
        return _error(405, "UNSUPPORTED", f"{request.method} is not served on {match.group(0)} by the stand-in")
    repository, kind = match.group("repo"), match.group("kind")
    if not REPOSITORY_NAME.fullmatch(repository):  # also keeps the storage path inside the repositories folder
        return _error(400, "NAME_INVALID", "invalid repository name", {"name": repository})
    refused = authorize(request, acr, repository)
    if refused is not None:
        return refused
    storage = Storage(acr, repository)
    if not storage.exists():
        return _error(404, "NAME_UNKNOWN", "repository name not known to registry", {"name": repository})
    tags = storage.tags()
    if kind == "tags":
        items = [{"name": tag, "digest": digest, "createdTime": _timestamp(link), "lastUpdateTime": _timestamp(link),
                  "signed": False, "changeableAttributes": dict(CHANGEABLE)} for tag, (digest, link) in tags.items()]
        key = "name"
    else:
        items = _manifest_items(storage, tags)
        key = "digest"
    paged = _page(request, items, key, kind, repository)
    if isinstance(paged, Response):
        return paged
    page, headers = paged
    return Response(200, {"registry": acr.login_server, "imageName": repository, kind: page}, headers)


def _manifest_items(storage: Storage, tags: dict[str, tuple[str, Path]]) -> list[dict]:
    tags_of: dict[str, list[str]] = {}
    for tag, (digest, _) in tags.items():
        tags_of.setdefault(digest, []).append(tag)
    items = []
    for manifest in storage.manifests():
        try:
            parsed = json.loads(manifest.raw)
        except ValueError:
            parsed = {}
        parsed = parsed if isinstance(parsed, dict) else {}
        media_type = str(parsed.get("mediaType") or "application/vnd.oci.image.manifest.v1+json")
        item: dict[str, Any] = {"digest": manifest.digest, "imageSize": len(manifest.raw),
                                "createdTime": _timestamp(manifest.link), "lastUpdateTime": _timestamp(manifest.link)}
        if media_type not in INDEX_TYPES:
            item |= storage.platform(parsed)
        item["mediaType"] = media_type
        if manifest.digest in tags_of:
            item["tags"] = sorted(tags_of[manifest.digest])
        item["changeableAttributes"] = dict(CHANGEABLE)
        items.append(item)
    return items
