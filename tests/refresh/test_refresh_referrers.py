"""The refresh's planning with referrers: an unchanged digest is unchanged only when its referrers are too.

Planning logic only, over an in-memory registry reader (the same reads RegistryClient answers: HEAD and GET
of manifests, the referrers API, tag lists); the stack test in test_refresh_referrers_stack.py runs the same
path against real registries. The reader counts what it was asked, which is the point of the cache test."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter

from dev import layout
from shared.core.request import ImportRequest, validate_document
from shared.core.settings import load_settings
from shared.refresh.run import ERROR, REFERRERS, SKIPPED, UNCHANGED, plan_refresh, request_id, run_refresh
from shared.refresh.tracked import parse_config
from shared.registry.client import Descriptor, IdentityAuth, ManifestHead, RateLimited, RegistryError

HUB, TARGET = "docker.io", layout.TARGET_ACR.login_server
INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
SIGNATURE = "application/vnd.cncf.notary.signature"
SBOM = "application/spdx+json"


def digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


class Registries:
    """Repositories of several hosts in memory: manifests by digest, tags, and referrers by subject (served by
    the referrers API, or only by the tag schema when `api` is False for the host)."""

    def __init__(self) -> None:
        self.manifests: dict[tuple[str, str, str], tuple[str, dict]] = {}  # (host, repo, digest) -> (type, doc)
        self.tags: dict[tuple[str, str, str], str] = {}
        self.referrers_of: dict[tuple[str, str, str], list[Descriptor]] = {}
        self.no_api: set[str] = set()
        self.failing: dict[str, Exception] = {}  # host -> what its referrers reads raise
        self.asked: Counter = Counter()
        self._lock = threading.Lock()

    def _count(self, what: str) -> None:
        with self._lock:
            self.asked[what] += 1

    def image(self, host: str, repo: str, tag: str, name: str, platforms: int = 2) -> str:
        children = []
        for i in range(platforms):
            child = digest(f"{name}-platform-{i}")
            self.manifests[(host, repo, child)] = (MANIFEST, {"schemaVersion": 2})
            children.append({"mediaType": MANIFEST, "digest": child, "size": 1})
        index = digest(name)
        self.manifests[(host, repo, index)] = (INDEX, {"schemaVersion": 2, "manifests": children})
        self.tags[(host, repo, tag)] = index
        return index

    def attach(self, host: str, repo: str, subject: str, name: str, artifact_type: str) -> str:
        found = digest(name)
        self.manifests[(host, repo, found)] = (MANIFEST, {"artifactType": artifact_type, "subject": subject})
        self.referrers_of.setdefault((host, repo, subject), []).append(Descriptor(found, MANIFEST, artifact_type))
        if host in self.no_api:  # the tag schema: an index under sha256-<hex> listing the referrers
            listed = [{"mediaType": d.media_type, "digest": d.digest, "size": 1, "artifactType": d.artifact_type}
                      for d in self.referrers_of[(host, repo, subject)]]
            schema = digest(json.dumps(listed))
            self.manifests[(host, repo, schema)] = (INDEX, {"schemaVersion": 2, "manifests": listed})
            self.tags[(host, repo, subject.replace(":", "-", 1))] = schema
        return found

    def copy(self, host: str, repo: str, found: str, to_host: str, to_repo: str) -> None:
        self.manifests[(to_host, to_repo, found)] = self.manifests[(host, repo, found)]

    def _resolve(self, host: str, repo: str, reference: str) -> str | None:
        found = reference if reference.startswith("sha256:") else self.tags.get((host, repo, reference))
        return found if found and (host, repo, found) in self.manifests else None

    # --- the reads the refresh makes (RegistryReader) ---
    def head_manifest(self, host, repository, reference, auth=None):
        self._count(f"HEAD {host}")
        found = self._resolve(host, repository, reference)
        return None if found is None else ManifestHead(found, self.manifests[(host, repository, found)][0], 1)

    def manifest(self, host, repository, reference, auth=None):
        self._count(f"GET {host}")
        found = self._resolve(host, repository, reference)
        if found is None:
            return None
        media_type, doc = self.manifests[(host, repository, found)]
        return ManifestHead(found, media_type, 1), doc

    def referrers(self, host, repository, subject, auth=None):
        self._count(f"referrers {host}")
        if host in self.failing:
            raise self.failing[host]
        if host in self.no_api:
            return None
        return list(self.referrers_of.get((host, repository, subject), []))

    def list_tags(self, host, repository, auth=None):
        return sorted(t for h, r, t in self.tags if (h, r) == (host, repository))

    def rate_limit(self, host):
        return None


def settings(**extra: str):
    return load_settings({"TARGET_REGISTRY": layout.TARGET_ACR.resource_id, "REFRESH_CONCURRENCY": "8",
                          "REFERRERS_COSIGN_TAGS": "false", **extra})


def plan(registries: Registries, *entries: dict, **extra: str):
    used = settings(**extra)
    config = parse_config(json.dumps({"images": list(entries)}), used)
    assert config.problems == (), config.problems
    return plan_refresh(list(config.images), registries, used, IdentityAuth(None))


def imported(registries: Registries, repo: str, tag: str, name: str, target_repo: str) -> str:
    """An image upstream that an earlier refresh imported: the same digest (and platforms) in the target."""
    index = registries.image(HUB, repo, tag, name)
    for (host, r, found) in list(registries.manifests):
        if (host, r) == (HUB, repo):
            registries.copy(HUB, repo, found, TARGET, target_repo)
    registries.tags[(TARGET, target_repo, tag)] = index
    return index


def test_an_unchanged_digest_whose_referrers_are_all_in_the_target_is_unchanged():
    registries = Registries()
    index = imported(registries, "library/app", "1.0", "app", "app")
    signature = registries.attach(HUB, "library/app", index, "sig", SIGNATURE)
    registries.copy(HUB, "library/app", signature, TARGET, "app")

    found = plan(registries, {"source": "docker.io/library/app", "tags": ["1.0"]})

    [check] = found.checks
    assert (check.status, found.imports) == (UNCHANGED, [])
    assert "1 referrer" in check.reason


def test_a_new_signature_on_an_unchanged_digest_is_enqueued_with_an_id_of_its_own():
    registries = Registries()
    index = imported(registries, "library/app", "1.0", "app", "app")
    entry = {"source": "docker.io/library/app", "tags": ["1.0"]}
    assert plan(registries, entry).count(UNCHANGED) == 1
    platform = digest("app-platform-1")
    signature = registries.attach(HUB, "library/app", index, "sig", SIGNATURE)
    attestation = registries.attach(HUB, "library/app", platform, "att", "application/vnd.in-toto+json")

    found = plan(registries, entry)

    [check] = found.checks
    assert check.status == REFERRERS and "lacks 2 of its 2 referrer(s)" in check.reason
    [planned] = found.imports
    document = planned.request
    assert document["mode"] == "IfChanged" and document["source"] == "docker.io/library/app:1.0"
    plain = request_id(layout.TARGET_ACR.resource_id, "app:1.0", index, index)
    assert document["id"] != plain  # the earlier request for these digests ended long ago
    assert isinstance(validate_document(document, settings()), ImportRequest)
    registries.copy(HUB, "library/app", signature, TARGET, "app")  # the worker imported the signature only
    again = plan(registries, entry)
    assert again.checks[0].status == REFERRERS and again.imports[0].request["id"] not in (plain, document["id"])
    registries.copy(HUB, "library/app", attestation, TARGET, "app")
    assert plan(registries, entry).checks[0].status == UNCHANGED


def test_the_tag_schema_fallback_and_a_filter_of_the_entry_decide_what_counts():
    registries = Registries()
    registries.no_api.add(HUB)
    index = imported(registries, "library/app", "1.0", "app", "app")
    registries.attach(HUB, "library/app", index, "sbom", SBOM)
    signature_only = {"source": "docker.io/library/app", "tags": ["1.0"],
                      "referrers": {"artifactTypes": [SIGNATURE]}}
    assert plan(registries, signature_only).checks[0].status == UNCHANGED  # the SBOM is not asked for
    registries.attach(HUB, "library/app", index, "sig", SIGNATURE)

    found = plan(registries, signature_only)

    assert found.checks[0].status == REFERRERS
    assert found.imports[0].request["referrers"] == {"artifactTypes": [SIGNATURE], "required": False}
    assert registries.asked[f"referrers {HUB}"] >= 1  # asked the API first; the 404 sent it to the tag schema


def test_a_referrers_read_error_costs_that_tag_and_the_refresh_goes_on():
    registries = Registries()
    imported(registries, "library/app", "1.0", "app", "app")
    imported(registries, "team/tool", "2.0", "tool", "tool")
    registries.image("registry.contoso.com", "team/tool", "2.0", "tool")
    registries.failing[HUB] = RegistryError(HUB, 500, "UNKNOWN", "the referrers listing failed")

    found = plan(registries, {"source": "docker.io/library/app", "tags": ["1.0"]},
                 {"source": "registry.contoso.com/team/tool", "tags": ["2.0"], "targetRepository": "tool"},
                 ALLOWED_SOURCE_REGISTRIES="docker.io,registry.contoso.com")

    failed, other = found.checks
    assert failed.status == ERROR and "referrers: not read" in failed.reason and "listing failed" in failed.reason
    assert other.status in (UNCHANGED, REFERRERS) and other.reason
    result = run_refresh(settings(ALLOWED_SOURCE_REGISTRIES="docker.io,registry.contoso.com"), registries,
                         IdentityAuth(None), dry_run=True, config_text=json.dumps({"images": [
                             {"source": "docker.io/library/app", "tags": ["1.0"]}]}))
    assert result.summary.errors == 1 and result.summary.checked == 1


def test_a_source_answering_429_to_the_referrers_reads_is_backed_off_not_counted_as_changed():
    registries = Registries()
    imported(registries, "library/app", "1.0", "app", "app")
    registries.failing[HUB] = RateLimited(HUB, 429, "TOOMANYREQUESTS", "slow down", retry_after=60)

    found = plan(registries, {"source": "docker.io/library/app", "tags": ["1.0"]})

    assert found.checks[0].status == SKIPPED and "429" in found.checks[0].reason
    assert HUB in found.backoff_until and found.imports == []


def test_a_thousand_tags_of_one_digest_cost_one_referrer_check():
    registries = Registries()
    tags = [f"1.{i}" for i in range(1000)]
    index = imported(registries, "library/app", tags[0], "app", "app")
    for tag in tags[1:]:
        registries.tags[(HUB, "library/app", tag)] = index
        registries.tags[(TARGET, "app", tag)] = index
    registries.attach(HUB, "library/app", index, "sig", SIGNATURE)

    found = plan(registries, {"source": "docker.io/library/app", "tags": tags})

    assert found.referrer_checks == 1 and found.count(REFERRERS) == 1000
    # the index, its two platforms and the signature (a signature on the signature would be found too), once
    assert registries.asked[f"referrers {HUB}"] == 4
    assert registries.asked[f"GET {TARGET}"] == 1     # the index read from the target, once
    assert len({p.request["id"] for p in found.imports}) == 1000  # one request per tag, each its own id


def test_referrers_none_costs_no_extra_request_and_the_entry_option_overrides_the_setting():
    registries = Registries()
    index = imported(registries, "library/app", "1.0", "app", "app")
    registries.attach(HUB, "library/app", index, "sig", SIGNATURE)
    entry = {"source": "docker.io/library/app", "tags": ["1.0"]}

    off = plan(registries, entry, REFERRERS="none")
    assert off.checks[0].status == UNCHANGED and off.referrer_checks == 0
    assert set(registries.asked) == {f"HEAD {HUB}", f"HEAD {TARGET}"}
    entry_on = plan(registries, {**entry, "referrers": "all"}, REFERRERS="none")
    assert entry_on.checks[0].status == REFERRERS and entry_on.imports[0].request["referrers"] == "all"
    entry_off = plan(registries, {**entry, "referrers": "none"})
    assert entry_off.checks[0].status == UNCHANGED and entry_off.referrer_checks == 0
