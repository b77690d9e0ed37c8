"""Azurite, the storage emulator, as the stack and the tests start it.

`command()` is what `dev/stack.py` runs as a managed process; `is_ready()` is its readiness probe. Both use
the ports and the connection string from `dev/layout.py`, so `UseDevelopmentStorage=true` reaches it.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from dev import layout

AZURITE_JS = layout.REPO_ROOT / "dev" / "node_modules" / "azurite" / "dist" / "src" / "azurite.js"
# Azurite 3.35 decodes each chunk of a request body on its own (`segments.join("")` over Buffers), so a
# multi-byte UTF-8 character that straddles two chunks is stored as U+FFFD replacement characters: a queue
# message or table entity with non-ASCII text comes back changed, at random (Azurite issue #2670; Azure
# Storage does not do this). Until a release fixes it, the stack joins the bytes before decoding them.
_SPLIT_DECODE = 'const joined = segments.join("");'
_WHOLE_DECODE = ('const joined = segments.every(s => Buffer.isBuffer(s)) ? Buffer.concat(segments).toString("utf8") '
                 ': segments.join(""); // acr-importer: Azurite #2670')
_SERIALIZERS = [AZURITE_JS.parent / service / "generated" / "utils" / "serializer.js"
                for service in ("blob", "queue", "table")]


def node_binary() -> str:
    """The Node.js interpreter: `NODE` if set, else the one on PATH (Azurite 3.35 runs on Node 20)."""
    node = os.environ.get("NODE") or shutil.which("node")
    if not node:
        raise RuntimeError("node is not installed; run `make node-deps` after installing Node.js 20")
    return node


def fix_request_body_decoding() -> None:
    """Apply the #2670 fix to the installed Azurite (idempotent; a no-op once a release has no such line)."""
    for serializer in _SERIALIZERS:
        text = serializer.read_text()
        if _SPLIT_DECODE in text:
            serializer.write_text(text.replace(_SPLIT_DECODE, _WHOLE_DECODE))


def command(state_dir: Path = layout.STATE_DIR) -> list[str]:
    """argv that runs Azurite in the foreground with blob, queue and table services on loopback.

    `--skipApiVersionCheck` because the newest azure-storage-* clients send API versions newer than
    Azurite knows; `--loose` so headers Azurite does not implement are ignored instead of refused;
    `--disableTelemetry` because Azurite otherwise phones Application Insights (unreachable here).
    """
    if not AZURITE_JS.exists():
        raise RuntimeError(f"Azurite is not installed at {AZURITE_JS}; run `make node-deps`")
    fix_request_body_decoding()
    location = Path(state_dir) / "azurite"
    location.mkdir(parents=True, exist_ok=True)
    return [
        node_binary(), str(AZURITE_JS),
        "--silent", "--skipApiVersionCheck", "--loose", "--disableProductStyleUrl", "--disableTelemetry",
        "--location", str(location),
        "--blobHost", layout.HOST, "--blobPort", str(layout.AZURITE_BLOB_PORT),
        "--queueHost", layout.HOST, "--queuePort", str(layout.AZURITE_QUEUE_PORT),
        "--tableHost", layout.HOST, "--tablePort", str(layout.AZURITE_TABLE_PORT),
    ]


def identity_command(state_dir: Path = layout.STATE_DIR) -> list[str]:
    """argv of the second Azurite: HTTPS with the stack's certificate and `--oauth basic`, for identity-based
    storage settings. Azurite's OAuth needs HTTPS (its README, "OAuth Configuration"); at level `basic` it
    checks a bearer token's issuer, audience (https://storage.azure.com[/] or the account's own) and lifetime,
    not its signature or any role. Its own folder: it shares no state with the connection-string instance."""
    argv = command(state_dir)
    location = Path(state_dir) / "azurite-identity"
    location.mkdir(parents=True, exist_ok=True)
    ports = {"--blobPort": layout.AZURITE_IDENTITY_BLOB_PORT, "--queuePort": layout.AZURITE_IDENTITY_QUEUE_PORT,
             "--tablePort": layout.AZURITE_IDENTITY_TABLE_PORT, "--location": location}
    for flag, value in ports.items():
        argv[argv.index(flag) + 1] = str(value)
    return [*argv, "--oauth", "basic", "--cert", str(layout.SERVER_CERT), "--key", str(layout.SERVER_KEY)]


def is_ready(timeout: float = 2.0, connection_string: str = layout.AZURITE_CONNECTION_STRING) -> bool:
    """True when the queue and table services answer a real SDK call (not only an open port)."""
    from azure.core.exceptions import AzureError
    from azure.data.tables import TableServiceClient
    from azure.storage.queue import QueueServiceClient

    options = {"connection_timeout": timeout, "read_timeout": timeout, "retry_total": 0}
    if connection_string.startswith("DefaultEndpointsProtocol=https"):
        options["connection_verify"] = str(layout.CA_CERT)
    try:
        queues = QueueServiceClient.from_connection_string(connection_string, **options)
        queues.get_service_properties()
        tables = TableServiceClient.from_connection_string(connection_string, **options)
        next(iter(tables.list_tables(results_per_page=1)), None)
    except (AzureError, OSError):
        return False
    return True


def identity_is_ready(timeout: float = 2.0) -> bool:
    return is_ready(timeout, layout.AZURITE_IDENTITY_CONNECTION_STRING)


def main() -> int:
    argv = command()
    print(f"azurite: blob {layout.AZURITE_BLOB_PORT}, queue {layout.AZURITE_QUEUE_PORT}, "
          f"table {layout.AZURITE_TABLE_PORT} on {layout.HOST}; Ctrl-C stops", file=sys.stderr)
    os.execv(argv[0], argv)
    return 0  # pragma: no cover - execv does not return


if __name__ == "__main__":
    raise SystemExit(main())
