"""The real data plane: resolve the source the way ACR would (host -> the stack's registry, with the
request's credentials or a token the stand-in mints for the caller) and copy with `dev.oci.copy_image`."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import requests

from dev import layout, oci, tokens
from dev.azure_standin.data_plane import CopyFailed, CopyJob, SourceImage, registry_error, unreachable

IMPORTER_SUBJECT = "acr-import-service"


def _scope_access(scope: str) -> list[dict]:
    access = []
    for part in scope.split():
        kind, _, rest = part.partition(":")
        name, _, actions = rest.rpartition(":")
        if kind == "repository" and name:
            access.append({"type": "repository", "name": name, "actions": actions.split(",")})
    return access


def push_token_provider(acr: layout.AcrSpec) -> Callable[[str], str]:
    """ACR's import service writes into its own registry: tokens for whatever scope the copy asks."""
    return lambda scope: tokens.mint_registry_token(subject=IMPORTER_SUBJECT, service=acr.login_server,
                                                   access=_scope_access(scope))


def _session() -> requests.Session:
    """A session that trusts the stack's CA even when REQUESTS_CA_BUNDLE names another bundle."""
    session = requests.Session()
    session.trust_env = False
    return session


def _failure(err: oci.RegistryError, host: str) -> CopyFailed:
    if err.status == 0:
        return unreachable(host)
    return registry_error(err.code or "UNKNOWN", err.message)


class RegistryDataPlane:
    def source_client(self, job: CopyJob) -> oci.RegistryClient:
        port = layout.registry_port_for_host(job.source.host)
        if port is None:
            raise unreachable(job.source.host)
        src = job.source
        if src.bearer_token is not None:
            token = src.bearer_token
            auth = oci.Auth(token_provider=lambda _scope: token)
        else:
            # Credentials go through whatever challenge the registry answers, as a registry client sends
            # them: a password without a username is Basic `:password`, which registries refuse (no
            # registry takes a bare password as a bearer token).
            auth = oci.Auth("" if src.password is not None and src.username is None else src.username,
                            src.password)
        return oci.RegistryClient(f"https://{layout.HOST}:{port}", auth, session=_session())

    def target_client(self, job: CopyJob) -> oci.RegistryClient:
        # ACR's import service writes into the registry's storage, not through its login server.
        return oci.RegistryClient(f"https://{layout.HOST}:{job.target.storage_port}",
                                  oci.Auth(token_provider=push_token_provider(job.target)), session=_session())

    def inspect(self, job: CopyJob) -> SourceImage:
        try:
            top = self.source_client(job).get_manifest(job.repository, job.reference)
        except oci.RegistryError as err:
            raise _failure(err, job.source.host) from None
        children = [m["digest"] for m in json.loads(top.body).get("manifests", [])]
        return SourceImage(top.digest, (top.digest, *children))

    def existing_tags(self, job: CopyJob) -> list[str]:
        dst = self.target_client(job)
        try:
            return [f"{repo}:{tag}" for repo, tag in job.target_tags if dst.head_manifest(repo, tag) is not None]
        except oci.RegistryError as err:
            raise _failure(err, job.target.login_server) from None

    def copy(self, job: CopyJob) -> str:
        src, dst = self.source_client(job), self.target_client(job)
        by_repo: dict[str, list[str]] = {}
        for repo, tag in job.target_tags:
            by_repo.setdefault(repo, []).append(tag)
        for repo in job.untagged_repositories:
            by_repo.setdefault(repo, [])
        digest = ""
        try:
            for repo, tags in by_repo.items():
                digest = _copy_racing_writers(src, job.repository, job.reference, dst, repo, tags)
        except oci.RegistryError as err:
            raise _failure(err, job.source.host) from None
        return digest



# What docker-registry's filesystem storage answers when two writers race on one repository (ACR does not):
# a half-written file read back, an upload another writer's commit moved, a manifest whose blob is mid-commit.
RACING_WRITER_CODES = frozenset({"DIGEST_INVALID", "BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN",
                                 "MANIFEST_BLOB_UNKNOWN"})  # all answers of the target: a source's are not races


def _copy_racing_writers(src, src_repo: str, ref: str, dst, dst_repo: str, tags: list[str], attempts: int = 10) -> str:
    """docker-registry's filesystem storage can fail concurrent writes of the same blob or manifest into one
    repository (referrers share their empty config blob; images their layers); ACR does not. A copy is
    idempotent, so the stand-in copies again, keeping imports concurrent as they are on ACR. A blob missing in
    the source (BLOB_UNKNOWN) is not a race: it ends the copy at once."""
    for attempt in range(1, attempts + 1):
        try:
            return oci.copy_image(src, src_repo, ref, dst, dst_repo, tags=tags).digest
        except oci.RegistryError as err:
            if err.code not in RACING_WRITER_CODES or attempt == attempts:
                raise
            time.sleep(0.1 * attempt)
    raise AssertionError("unreachable")
