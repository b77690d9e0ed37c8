"""`import`: `az acr import`'s flags, but through the app's queue, so the import is retried, allowlisted,
recorded, and followed to its end (or left to run with `--no-wait`, and looked up later with `status`).

`--name` is a registry name or a resource id. A name is looked up among TARGET_REGISTRY and
ALLOWED_TARGET_REGISTRIES (the only registries the app may import into anyway), not in a subscription:
the CLI never calls ARM, so it needs no Azure role beyond storage.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import uuid
from typing import Any

from cli.connection import queue_service
from cli.status import EXIT_TIMEOUT, EXIT_USAGE, CliError, Follower, exit_code, status_store, summary_lines
from cli.terminal import printable
from shared.core.request import Rejected, parse_request
from shared.core.resource_ids import parse_registry_id
from shared.core.settings import Settings, load_settings
from shared.imports.claims import reserved_prefix, submit_new

# The Azure SDK is imported where it is used: `--help` and mistakes in the arguments answer without it.


def resolve_target(name: str, settings: Settings) -> str:
    """A registry resource id from `--name`: an id as given, or the configured target with that name."""
    if name.strip().lower().startswith("/subscriptions/"):
        return name.strip()
    wanted = name.strip().lower().removesuffix("." + settings.acr_login_server_suffix)
    known = dict.fromkeys(filter(None, (settings.target_registry, *settings.allowed_target_registries)))
    matches = []
    for resource_id in known:
        try:
            if parse_registry_id(resource_id).name.lower() == wanted:
                matches.append(resource_id)
        except ValueError:
            continue
    if len(matches) == 1:
        return matches[0]
    if not matches:
        names = ", ".join(sorted({r.rsplit("/", 1)[-1] for r in known})) or "none configured"
        raise CliError(f"--name {name!r}: no registry of that name in TARGET_REGISTRY or ALLOWED_TARGET_REGISTRIES "
                       f"({names}); give its resource id instead")
    raise CliError(f"--name {name!r} matches several allowed registries ({', '.join(matches)}); give the resource id")


def request_document(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """The queue message `az acr import`'s flags stand for (field names of the request schema)."""
    document: dict[str, Any] = {"id": args.id or f"cli-{uuid.uuid4().hex}", "source": args.source,
                                "target": resolve_target(args.name, settings)}
    if args.registry:
        document["sourceRegistry"] = args.registry
    if args.credential:
        document["credential"] = args.credential
    if args.image:
        document["targetTags"] = args.image
    if args.repository:
        document["untaggedTargetRepositories"] = args.repository
    mode = "Force" if args.force else args.mode
    if mode:
        document["mode"] = mode
    return document


def run_import(args: argparse.Namespace) -> int:

    if args.username or args.password:
        raise CliError("--username/--password are not accepted: a password on a command line lands in shell "
                       "history and on the queue. Name a credential set configured in the app with --credential "
                       "NAME (SOURCE_CREDENTIALS__<NAME>__USERNAME/__PASSWORD, which may be Key Vault references)")
    settings = load_settings()
    document = request_document(args, settings)
    parsed = parse_request(json.dumps(document), settings)
    if isinstance(parsed, Rejected):
        print("error: the app would reject this request:", file=sys.stderr)
        for problem in parsed.problems:
            print(f"  {printable(problem)}", file=sys.stderr)
        return EXIT_USAGE
    if reserved_prefix(parsed.id):
        raise CliError(f"--id {parsed.id!r} starts with {reserved_prefix(parsed.id)!r}, which only the app's own "
                       "requests use; omit --id for a new one")
    store = status_store()
    queue = queue_service().get_queue_client(settings.import_queue)
    submitted = submit_new(store, parsed, lambda document: queue.send_message(
        base64.b64encode(json.dumps(document).encode()).decode()).id, "queued by the CLI",
        queue=settings.import_queue)
    if submitted.failure is not None:
        raise CliError(submitted.failure.message)
    if not submitted.sent:
        state = submitted.record.state if submitted.record else "gone"
        raise CliError(f"--id {parsed.id!r} is taken by a request that is {state}; "
                       "omit --id for a new one, or `status` it")
    targets = ", ".join([*map(str, parsed.target_tags),
                         *(f"{r}@<digest>" for r in parsed.untagged_target_repositories)])
    # with --no-wait, stdout carries only the id (`id=$(acr-import import --no-wait ...)`); the rest is stderr
    progress = sys.stderr if args.no_wait else sys.stdout
    print(f"queued {parsed.id}: {parsed.source} -> {parsed.target.login_server(settings.acr_login_server_suffix)} "
          f"{targets} ({parsed.mode})", file=progress, flush=True)
    if args.no_wait:
        print(f"not waiting; follow it with: status {parsed.id} --wait", file=sys.stderr)
        print(parsed.id, flush=True)
        return 0
    try:
        record = Follower().follow(store, parsed.id, timeout=args.timeout)
    except KeyboardInterrupt:
        print(f"\nstopped following; the import goes on. Follow it again with: status {parsed.id} --wait")
        return 130
    if record is None:
        print(f"still not finished after {args.timeout:g} s; the import goes on. Look again with: "
              f"status {parsed.id} --wait")
        return EXIT_TIMEOUT
    print("\n".join(summary_lines(record)))
    return exit_code(record.state)


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = commands.add_parser(
        "import", help="import an image into an ACR through the app (flags as az acr import)",
        description="Queue an import request for the app and follow it until it ends. Exit 0 when it "
                    "succeeded (or was skipped), 1 when it failed or was rejected, 2 for bad input, 3 when "
                    "--timeout passed first.")
    run.add_argument("-n", "--name", required=True,
                     help="target registry: a name in TARGET_REGISTRY/ALLOWED_TARGET_REGISTRIES, or a resource id")
    run.add_argument("--source", required=True,
                     help="source image: nginx:1.27, docker.io/library/hello-world:latest, mcr.microsoft.com/..., "
                          "or repo:tag of the --registry ACR")
    run.add_argument("-t", "--image", action="append", metavar="REPO:TAG",
                     help="target repo:tag (repeatable; default: the source's repo:tag)")
    run.add_argument("--repository", action="append", metavar="REPO",
                     help="target repository to receive the manifest untagged (repeatable)")
    run.add_argument("-r", "--registry", metavar="SOURCE_RESOURCE_ID",
                     help="resource id of a source ACR (imported with the app's identity)")
    run.add_argument("--credential", metavar="NAME", help="credential set for a private source registry")
    modes = run.add_mutually_exclusive_group()
    modes.add_argument("--force", action="store_true", help="overwrite existing target tags (mode Force)")
    modes.add_argument("--mode", choices=("NoForce", "Force", "IfChanged"),
                       help="NoForce (default), Force, or IfChanged (skip when the target already has the digest)")
    run.add_argument("--no-wait", action="store_true", help="queue it and return; look it up later with `status`")
    run.add_argument("--timeout", type=float, help="stop following after this many seconds (exit 3)")
    run.add_argument("--id", help="request id (default: a new one); must not be in use")
    run.add_argument("-u", "--username", help=argparse.SUPPRESS)
    run.add_argument("-p", "--password", help=argparse.SUPPRESS)
    run.set_defaults(handler=run_import)
