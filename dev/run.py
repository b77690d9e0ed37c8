"""`make run` (`python -m dev.run`): the app on the local stack, in the foreground, ready for your requests.

Starts the stack (or reuses the running one), seeds the sample upstream images, writes the stack's
`local.settings.json` (only when there is none, or with `--force-settings`), creates the app's queues as the
deployment does, then runs the app's functions through the local runner with its HTTP endpoints until Ctrl-C
or SIGTERM. The stack keeps running (and its data in the stack folder persists) until `make stack-down`.

Honours ACR_IMPORTER_STACK_DIR and ACR_IMPORTER_PORT_OFFSET (dev/layout.py), so a test runs its own stack.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from dev import layout, oci, seed, stack
from dev.app_settings import create_app_queues, local_app_settings

LOCAL_TRACKED_IMAGES = "dev/tracked-images.local.json"  # names only what dev.seed pushes
# Machines often point these at the system bundle; the stack's TLS needs its own CA, so for these two the
# stack's value (from the settings file) beats the environment, and `make run` says so. Any other setting the
# environment overrides, the runner names at start (dev/runner/config.py `setting_layers`, the one rule).
STACK_CA_SETTINGS = ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")
READY = "Ready:"  # the line tests and scripts wait for


def run_settings() -> dict[str, str]:
    """The settings `make run` writes: the stack's, with a tracked-images file the stack can serve."""
    return {**local_app_settings(), "TRACKED_IMAGES": LOCAL_TRACKED_IMAGES}


def settings_file(path: Path, *, force: bool) -> tuple[dict[str, str], str]:
    """The Values to run with and a sentence saying where they came from; writes `path` only when asked
    or when there is none, so a user's own local.settings.json is never overwritten behind their back."""
    if path.exists() and not force:
        values = json.loads(path.read_text()).get("Values", {}) or {}
        return ({str(k): str(v) for k, v in values.items()},
                f"using your existing {path} (not overwritten; `make run FORCE_SETTINGS=1` rewrites it)")
    values = run_settings()
    path.write_text(json.dumps({"IsEncrypted": False, "Values": values}, indent=2) + "\n")
    return values, f"wrote the local stack's settings to {path}" + (" (replacing the old one)" if force else "")


def _display(path: Path) -> str:
    """A path as short as the user can type it from where they ran `make run`."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def next_steps(values: dict[str, str], settings_path: Path, http_port: int) -> str:
    """What a user needs next: how to send a request, where its status is (and the status page), how to stop."""
    base = f"http://{layout.HOST}:{http_port}/api"
    settings_option = "" if settings_path.resolve() == (Path.cwd() / "local.settings.json").resolve() else (
        f"--settings {_display(settings_path)} ")
    key = ("$RUNNER_FUNCTION_KEY" if values.get("RUNNER_FUNCTION_KEY") or os.environ.get("RUNNER_FUNCTION_KEY")
           else f"$(cat {_display(layout.STATE_DIR / 'runner' / 'function-key')})")
    return "\n".join([
        f"{READY} acr-importer runs locally (queue {values.get('IMPORT_QUEUE')}, HTTP API {base}).",
        "",
        "Send an import request, from another terminal in this folder:",
        f"  bin/acr-import {settings_option}import -n myregistry --source docker.io/library/hello-world:latest "
        "-t hello-world:mine",
        f"  curl -s -X POST {base}/imports -H \"x-functions-key: {key}\" -H 'Content-Type: application/json' \\",
        "       -d '{\"source\": \"docker.io/library/nginx:1.27\", \"targetTags\": [\"nginx:1.27\"]}'",
        "Its status:",
        f"  bin/acr-import {settings_option}status <id>      (or: bin/acr-import {settings_option}list)",
        f"  curl -s {base}/imports/<id> -H \"x-functions-key: {key}\"",
        f"The status page: open {base}/ui in a browser and give it the function key when it asks, or open",
        f"  the address this prints (the page moves the key out of the address bar): echo \"{base}/ui?code={key}\"",
        "Stop: Ctrl-C stops the app; the stack keeps running with its data "
        f"({_display(layout.STATE_DIR)}) until `make stack-down`.",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dev.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", type=Path, default=Path("local.settings.json"),
                        help="the settings file to use, written when missing (default ./local.settings.json)")
    parser.add_argument("--force-settings", action="store_true",
                        help="rewrite the settings file with the stack's settings even if it exists")
    args = parser.parse_args(argv)
    force = args.force_settings or os.environ.get("FORCE_SETTINGS", "") not in ("", "0")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="[%(asctime)s] %(message)s", datefmt="%Y-%m-%dT%H:%M:%S")
    for noisy in ("azure", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    print(f"Starting the local stack (registries, Azure stand-in, Azurite) in {_display(layout.STATE_DIR)}...",
          flush=True)
    try:
        stack.up()
        seeded = seed.seed_world()
    except (stack.StackError, oci.RegistryError) as err:
        print(f"error: the local stack did not come up: {err}", file=sys.stderr)
        return 1
    print(f"Seeded {len(seeded)} sample upstream images (python -m dev.seed lists them).", flush=True)
    values, said = settings_file(args.settings, force=force)
    print(f"Settings: {said}.", flush=True)
    from dev.runner.config import setting_layers

    # The stack's CA beats a machine-wide bundle in the environment (else nothing on the stack verifies):
    # passed as the runner's `env=`, which wins; every other override the runner itself names at start.
    stack_ca = {name: values[name] for name in STACK_CA_SETTINGS
                if name in os.environ and os.environ[name] != values.get(name) == str(layout.CA_CERT)}
    for name, value in stack_ca.items():
        print(f"note: {name} is set in your environment; the app uses the stack's CA ({value}) instead",
              file=sys.stderr, flush=True)
    effective = setting_layers(values, os.environ, stack_ca).effective
    queue = effective.get("IMPORT_QUEUE", "")
    if queue:
        create_app_queues(queue, effective.get("AzureWebJobsStorage", layout.AZURITE_CONNECTION_STRING))

    from dev.runner import Runner

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with Runner("function_app", root=layout.REPO_ROOT, env=stack_ca, http_port=layout.RUNNER_PORT,
                settings_file=args.settings) as runner:
        print(next_steps(effective, args.settings, runner.http_port or layout.RUNNER_PORT), flush=True)
        while not stop.wait(1.0):
            pass
        print("Stopping: finishing the imports in flight (the stack keeps running; `make stack-down` stops it)",
              flush=True)
    print("Stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
