"""Refresh of 1,000 tracked tags, all current, against the local registries, beside a `skopeo inspect` loop.

Both read Docker Hub through the stack's Docker Hub front, which counts every request; the target
registry's requests come from its access log. The refresh runs as the timer does (tag list from the
tracked-images config, HEAD upstream and target with REFRESH_CONCURRENCY), as a dry run so nothing could be
enqueued even by mistake. The skopeo loop is what people script today: one `skopeo inspect` per tag,
upstream only (reading the target too would double its cost; the ratio is in skopeo's favour).
`skopeo sync --dry-run` needs skopeo 1.14; Debian's is older, so it is left out.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections import Counter

TITLE = "Refresh: 1,000 tracked tags, all current"
TAGS = int(os.environ.get("BENCH_REFRESH_TAGS", "1000"))
REPO = "library/bench-refresh"
TARGET_REPO = "bench-refresh"
ACCESS = re.compile(r'"(HEAD|GET|PUT|POST|PATCH|DELETE) (/v2/\S*) HTTP')


def _tags() -> list[str]:
    return [f"1.{i // 100}.{i % 100}" for i in range(TAGS)]


def _ensure_images(tags: list[str]) -> str:
    """The same multi-arch index under every tag, upstream and in the target (so everything is current)."""
    from dev import layout, seed

    image = seed.build_image(REPO, ["linux/amd64", "linux/arm64/v8"], flavour="oci")
    for host, repo in (("docker.io", REPO), (layout.TARGET_ACR.login_server, TARGET_REPO)):
        client = seed.admin_client(host)
        present = set(client.list_tags(repo)) if client.head_manifest(repo, tags[0]) else set()
        missing = [t for t in tags if t not in present]
        if missing:
            seed.push_image(client, repo, missing[0], image)
            for tag in missing[1:]:
                client.put_manifest(repo, tag, image.manifest, image.media_type)
    return image.digest


def _target_log_offset() -> int:
    from dev import layout

    path = layout.STATE_DIR / "logs" / "acr-myregistry.log"
    return path.stat().st_size if path.exists() else 0


def _target_requests(offset: int) -> Counter:
    from dev import layout

    with open(layout.STATE_DIR / "logs" / "acr-myregistry.log", "rb") as log:
        log.seek(offset)
        text = log.read().decode(errors="replace")
    return Counter(f"{m.group(1)} {'manifests' if '/manifests/' in m.group(2) else 'other'}"
                   for m in ACCESS.finditer(text))


def _ours(tags: list[str]) -> dict:
    from dev import hub_front
    from shared.arm import make_credential
    from shared.refresh import run_refresh
    from shared.registry_client import IdentityAuth, LazyCredential, RegistryClient
    from shared.settings import load_settings

    settings = load_settings()
    config = json.dumps({"images": [{"source": f"docker.io/{REPO}", "tags": tags}]})
    front = hub_front.FrontControl()
    front.reset()
    offset = _target_log_offset()
    reader = RegistryClient(endpoints=settings.registry_endpoints)
    identity = IdentityAuth(LazyCredential(lambda: make_credential(settings)))
    began = time.perf_counter()
    result = run_refresh(settings, reader, identity, dry_run=True, config_text=config)
    seconds = time.perf_counter() - began
    return {"seconds": seconds, "upstream": front.stats(), "target": _target_requests(offset),
            "summary": result.summary, "imports": len(result.plan.imports), "client": reader.requests_sent}


def _skopeo(tags: list[str], digest: str) -> dict:
    from dev import hub_front

    front = hub_front.FrontControl()
    front.reset()
    host = hub_front.base_url().removeprefix("https://")
    began = time.perf_counter()
    wrong = 0
    for tag in tags:
        out = subprocess.run(["skopeo", "inspect", "--format", "{{.Digest}}", f"docker://{host}/{REPO}:{tag}"],
                             capture_output=True, text=True, check=True).stdout.strip()
        wrong += out != digest
    return {"seconds": time.perf_counter() - began, "upstream": front.stats(), "wrong": wrong}


def _per_tag(counts: dict, n: int) -> str:
    return ", ".join(f"{k} {v / n:.2f}" for k, v in sorted(counts.items())) or "none"


def _row(name: str, measured: dict, n: int) -> str:
    target = _per_tag(measured["target"], n) if "target" in measured else "not read"
    return (f"| {name} | {measured['seconds']:.2f} | {measured['seconds'] / n * 1000:.1f} | "
            f"{_per_tag(measured['upstream'], n)} | {target} |")


def run() -> str:
    from dev import layout
    from dev import stack as local_stack
    from dev.app_settings import local_app_settings

    if shutil.which("skopeo") is None:
        raise RuntimeError("skopeo is not installed (make system-deps)")
    os.environ.update({k: v for k, v in local_app_settings().items()})
    tags = _tags()
    with local_stack.running():
        digest = _ensure_images(tags)
        _ours(tags[:20])  # warm: connections, tokens; the timer's process keeps them between runs
        ours = _ours(tags)
        skopeo = _skopeo(tags, digest)
    n = len(tags)
    concurrency = os.environ.get("REFRESH_CONCURRENCY", "16")
    s = ours["summary"]
    ratio = skopeo["seconds"] / ours["seconds"]
    heads_up = ours["upstream"].get("HEAD manifests", 0)
    heads_target = ours["target"].get("HEAD manifests", 0)
    gets = ours["upstream"].get("GET manifests", 0) + ours["target"].get("GET manifests", 0)
    return f"""{n} tags of `docker.io/{REPO}` (one OCI index, two platforms) tracked by an explicit list, all
already in the target `{layout.TARGET_ACR.login_server}/{TARGET_REPO}`. Same run, same machine; Docker Hub
is read through the stack's Docker Hub front (TLS, token auth), which counts requests.

| | wall time (s) | per tag (ms) | upstream requests per tag | target requests per tag |
|---|---|---|---|---|
{_row(f"`refresh_tracked_images` planning (REFRESH_CONCURRENCY={concurrency})", ours, n)}
{_row('`skopeo inspect` loop (upstream only)', skopeo, n)}

- Ratio: the refresh is **{ratio:.0f}x** faster than the skopeo loop (aim: at least 20x).
- Refresh: {heads_up} upstream HEADs and {heads_target} target HEADs for {n} tags; {gets} manifest GETs;
  {ours['imports']} imports planned (checked {s.checked}, unchanged {s.unchanged}, errors {s.errors});
  Docker Hub ratelimit-remaining seen: {s.rate_limit_remaining.get('docker.io')}.
- Token requests (warm process): {sum(v for (h, m, k), v in ours['client'].items() if k == 'token')};
  the warm-up run fetched them, as the timer's long-lived process does.
- skopeo: every `inspect` GETs the index, the platform manifest and the config blob, and fetches a token
  (Docker Hub counts each manifest GET as a pull); digests that differed from the pushed one: {skopeo['wrong']}.
"""
