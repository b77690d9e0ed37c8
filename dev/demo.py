"""`make demo`: the main job end to end on the local stack, checked against the target registry.

Starts the stack (or reuses a running one), seeds the upstream images, runs the app's own functions
through the local runner, enqueues every scenario of the seed document, waits for each to end, then
reads the target ACR to prove that every platform arrived with the source's digest. Exits 1 otherwise.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass

from dev import layout, oci, seed, signed, stack
from dev.app_settings import create_app_queues, local_app_settings

WAIT_SECONDS = 180


@dataclass(frozen=True)
class Scenario:
    name: str
    request: dict
    source: tuple[str, str, str]           # (registry host, repository, tag) of what should arrive
    target: tuple[str, str]                # (repository, tag or digest) in the target ACR
    signed: signed.SignedSpec | None = None  # a signed image: its referrers must arrive too


def scenarios(seeded: list[seed.Seeded]) -> list[Scenario]:
    by_ref = {(s.registry, s.repo, s.tag): s for s in seeded}
    aci = by_ref[(layout.SOURCE_ACR.login_server, "aci-helloworld", "latest")]
    mode = {"mode": "Force"}  # the demo can run again on the same stack
    return [
        Scenario("Docker Hub official image (multi-arch)",
                 {"source": "docker.io/library/hello-world:latest", "targetTags": ["hello-world:latest"], **mode},
                 ("docker.io", "library/hello-world", "latest"), ("hello-world", "latest")),
        Scenario("Docker Hub namespaced image",
                 {"source": "docker.io/tensorflow/tensorflow:latest-gpu", "targetTags": ["tensorflow:latest-gpu"],
                  **mode},
                 ("docker.io", "tensorflow/tensorflow", "latest-gpu"), ("tensorflow", "latest-gpu")),
        Scenario("Docker Hub short name, default target",
                 {"source": "nginx:1.27", **mode}, ("docker.io", "library/nginx", "1.27"), ("nginx", "1.27")),
        Scenario("MCR (Windows)",
                 {"source": "mcr.microsoft.com/windows/servercore:ltsc2022", "targetTags": ["servercore:ltsc2022"],
                  **mode},
                 ("mcr.microsoft.com", "windows/servercore", "ltsc2022"), ("servercore", "ltsc2022")),
        Scenario("ACR, same subscription",
                 {"source": f"{layout.SOURCE_ACR.login_server}/aci-helloworld:latest",
                  "targetTags": ["hello-world:v1"], **mode},
                 (layout.SOURCE_ACR.login_server, "aci-helloworld", "latest"), ("hello-world", "v1")),
        Scenario("ACR, other subscription (resource id)",
                 {"source": "aci-helloworld:latest", "sourceRegistry": layout.OTHER_SUB_ACR.resource_id,
                  "targetTags": ["hello-world:other-sub"], **mode},
                 (layout.OTHER_SUB_ACR.login_server, "aci-helloworld", "latest"), ("hello-world", "other-sub")),
        Scenario("private Docker Hub repo, credential set",
                 {"source": "docker.io/myrepo/image:tag", "targetTags": ["privateimage:tag"],
                  "credential": "dockerhub", **mode},
                 ("docker.io", "myrepo/image", "tag"), ("privateimage", "tag")),
        Scenario("private registry, credential set",
                 {"source": "registry.contoso.com/sourcerepo/image:tag", "targetTags": ["contoso/image:tag"],
                  "credential": "contoso", **mode},
                 ("registry.contoso.com", "sourcerepo/image", "tag"), ("contoso/image", "tag")),
        Scenario("ACR with a service principal",
                 {"source": f"{layout.OTHER_SUB_ACR.login_server}/sourcerepo/image:tag", "targetTags": ["image:tag"],
                  "credential": "sp", **mode},
                 (layout.OTHER_SUB_ACR.login_server, "sourcerepo/image", "tag"), ("image", "tag")),
        Scenario("signed multi-arch image with referrers",
                 {"source": "docker.io/acme/signed:1.0", "targetTags": ["signed:1.0"], "credential": "dockerhub",
                  **mode},
                 ("docker.io", "acme/signed", "1.0"), ("signed", "1.0"), signed.SignedSpec("docker.io", "acme/signed")),
        Scenario("digest import (untagged)",
                 {"source": f"{layout.SOURCE_ACR.login_server}/aci-helloworld@{aci.digest}"},
                 (layout.SOURCE_ACR.login_server, "aci-helloworld", "latest"), ("aci-helloworld", aci.digest)),
    ]


def enqueue_all(queue_name: str, items: list[Scenario]) -> dict[str, Scenario]:
    """Base64 messages, as the Functions default encoding and most tools write them."""
    from azure.storage.queue import QueueClient

    client = QueueClient.from_connection_string(layout.AZURITE_CONNECTION_STRING, queue_name)
    sent = {}
    for scenario in items:
        request_id = f"demo-{uuid.uuid4().hex[:8]}"
        body = json.dumps({"id": request_id, **scenario.request})
        client.send_message(base64.b64encode(body.encode()).decode())
        sent[request_id] = scenario
    return sent


def wait_for(store, ids: list[str], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    records: dict = {}
    while time.monotonic() < deadline:
        records = {i: store.get(i) for i in ids}
        if all(r is not None and r.state.terminal for r in records.values()):
            break
        time.sleep(0.5)
    return records


def check(scenario: Scenario, record) -> tuple[str, str, str, bool]:
    """(digest, platforms, problem) read back from the target registry; ok when it matches the source."""
    source = oci.inspect_image(seed.admin_client(scenario.source[0]), scenario.source[1], scenario.source[2])
    if record is None or record.state.value != "succeeded":
        return "", "", (record.reason if record else "no status: still queued?"), False
    try:
        target = oci.inspect_image(seed.admin_client(layout.TARGET_ACR.login_server), *scenario.target)
    except oci.RegistryError as err:
        return "", "", f"not in the target registry: {err}", False
    if target.digest != source.digest or sorted(target.platforms) != sorted(source.platforms):
        return target.digest, ", ".join(target.platforms), f"differs from the source ({source.digest})", False
    return target.digest, ", ".join(target.platforms), "", True


def main() -> int:
    from dev.runner import Runner
    from shared import app_context

    print("Starting the local stack (registries, Azure stand-in, Azurite)...", flush=True)
    started = stack.up()
    runner = None
    try:
        seeded = seed.seed_world()
        run = uuid.uuid4().hex[:6]
        settings = local_app_settings(queue=f"demo-imports-{run}", table=f"demostatus{run}")
        os.environ.update(settings)
        create_app_queues(settings["IMPORT_QUEUE"])  # as the deployment does: the host never creates them
        runner = Runner("function_app", env=settings).start()
        items = scenarios(seeded)
        print(f"Enqueued {len(items)} import requests on queue {settings['IMPORT_QUEUE']}; "
              "the local Functions runner is importing...", flush=True)
        sent = enqueue_all(settings["IMPORT_QUEUE"], items)
        records = wait_for(app_context.status_store(app_context.app_settings(settings)), list(sent),
                           WAIT_SECONDS)
        ok_all = True
        rows = []
        for request_id, scenario in sent.items():
            record = records.get(request_id)
            digest, platforms, problem, ok = check(scenario, record)
            ok_all &= ok
            repo, ref = scenario.target
            target = f"{layout.TARGET_ACR.login_server}/{repo}" + (
                f"@{ref[:19]}…" if ref.startswith("sha256:") else f":{ref}")
            rows.append((scenario.name, record.state.value if record else "missing", target,
                         digest[:19] + "…" if digest else "-", platforms or problem))
        print_table(("request", "state", "target", "digest", "platforms copied"), rows)
        for request_id, scenario in sent.items():
            if scenario.signed is not None:
                ok_all &= show_referrers(scenario, records.get(request_id))
        print("\nAll imports verified against the target registry." if ok_all else
              "\nSome imports did not arrive as expected (see above).")
        return 0 if ok_all else 1
    finally:
        if runner is not None:
            runner.stop()
        stack.down(started)


def show_referrers(scenario: Scenario, record) -> bool:
    """The referrers that came along with a signed image, read back from the target; True when all did."""
    assert scenario.signed is not None
    image = signed.seed_signed(scenario.signed)  # already there: describes what the source holds
    target = seed.admin_client(layout.TARGET_ACR.login_server)
    repository = scenario.target[0]
    kinds = {signed.NOTARY_SIGNATURE: "the signature", signed.SPDX: "the SBOM", signed.IN_TOTO: "the attestation"}
    names = {image.digest: "the index", **{d: p for p, d in image.platforms.items()},
             **{r.digest: kinds.get(r.artifact_type, r.artifact_type) for r in image.referrers}}
    rows, arrived = [], True
    for referrer in image.referrers:
        head = target.head_manifest(repository, referrer.tag or referrer.digest)
        here = head is not None and head.digest == referrer.digest
        arrived &= here
        rows.append((referrer.artifact_type, referrer.digest[:19] + "…", names.get(referrer.subject, "?"),
                     _short_tag(referrer.tag) if referrer.tag else "(untagged)", "yes" if here else "MISSING"))
    print(f"\nReferrers that came along with {scenario.request['source']} "
          f"(the ACR import API copies none of them; the app imported each):")
    print_table(("artifact type", "digest", "refers to", "tag", "in target"), rows)
    if record is not None:
        print(f"status row: referrers: {record.referrers or '-'}")
    return arrived


def _short_tag(tag: str) -> str:
    """cosign's `sha256-<64 hex>.sig`, shortened to show which subject and which suffix."""
    stem, _, suffix = tag.rpartition(".")
    return f"{stem[:19]}….{suffix}"


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    print()
    print(line.format(*header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line.format(*row))


if __name__ == "__main__":
    sys.exit(main())
