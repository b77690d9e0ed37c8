"""The app's settings when it runs against the local stack (tests, demo, benchmarks, local.settings.json).

The credential-set passwords are the stack's throwaway test values from `dev/layout.py`.
"""

from __future__ import annotations

import json
from pathlib import Path

from dev import layout


def local_app_settings(*, queue: str = "acr-import-requests", table: str = "importstatus") -> dict[str, str]:
    return {
        **layout.stack_env(),
        "FUNCTIONS_WORKER_RUNTIME": "python",
        "PYTHON_THREADPOOL_THREAD_COUNT": "32",  # what infra/main.bicep deploys (see the comment there)
        "IMPORT_QUEUE": queue,
        "IMPORT_STATUS_TABLE": table,
        "ALLOWED_SOURCE_REGISTRIES": "docker.io,mcr.microsoft.com,*.azurecr.io,registry.contoso.com",
        "SOURCE_CREDENTIALS__DOCKERHUB__USERNAME": "dockeruser",
        "SOURCE_CREDENTIALS__DOCKERHUB__PASSWORD": layout.DOCKERHUB.users["dockeruser"],
        "SOURCE_CREDENTIALS__DOCKERHUB__REGISTRIES": "docker.io",
        "SOURCE_CREDENTIALS__CONTOSO__USERNAME": "contoso",
        "SOURCE_CREDENTIALS__CONTOSO__PASSWORD": layout.PRIVATE.users["contoso"],
        "SOURCE_CREDENTIALS__CONTOSO__REGISTRIES": "registry.contoso.com",
        "SOURCE_CREDENTIALS__SP__USERNAME": layout.SERVICE_PRINCIPAL.client_id,
        "SOURCE_CREDENTIALS__SP__PASSWORD": layout.SERVICE_PRINCIPAL.secret or "",
        "SOURCE_CREDENTIALS__SP__REGISTRIES": layout.OTHER_SUB_ACR.login_server,
        "IMPORT_POLL_INTERVAL_SECONDS": "0.2",
        "REGISTRY_ENDPOINTS": ",".join(f"{host}={url}" for host, url in layout.registry_endpoints().items()),
        "REFRESH_SCHEDULE": "0 0 0 1 1 *",  # once a year: locally the refresh runs when triggered
    }


def write_local_settings(path: Path = layout.REPO_ROOT / "local.settings.json") -> Path:
    """A local.settings.json for the stack (what Core Tools would read; our runner reads it too)."""
    path.write_text(json.dumps({"IsEncrypted": False, "Values": local_app_settings()}, indent=2) + "\n")
    return path


def create_app_queues(queue: str, connection_string: str = layout.AZURITE_CONNECTION_STRING) -> None:
    """Create the request queue and its `-rejected` and `-poison` queues, as the deployment does
    (infra/main.bicep): the Functions host waits for a trigger's queue and never creates it."""
    import contextlib

    from azure.core.exceptions import ResourceExistsError
    from azure.storage.queue import QueueServiceClient

    options = {"connection_verify": str(layout.CA_CERT)} if connection_string.startswith(
        "DefaultEndpointsProtocol=https") else {}
    service = QueueServiceClient.from_connection_string(connection_string, **options)
    for name in (queue, f"{queue}-rejected", f"{queue}-poison"):
        with contextlib.suppress(ResourceExistsError):
            service.create_queue(name)


def identity_storage_settings(client_id: str | None = layout.USER_ASSIGNED_IDENTITY.client_id) -> dict[str, str]:
    """`AzureWebJobsStorage__*` as the templates deploy them (infra/main.bicep), pointed at the stack's HTTPS
    Azurite with OAuth; tokens come from the identity endpoint (IDENTITY_ENDPOINT / IDENTITY_HEADER)."""
    settings = {f"AzureWebJobsStorage__{service}ServiceUri": uri
                for service, uri in layout.AZURITE_IDENTITY_URIS.items()}
    settings["AzureWebJobsStorage__credential"] = "managedidentity"
    if client_id:
        settings["AzureWebJobsStorage__clientId"] = client_id
    return settings
