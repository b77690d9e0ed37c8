"""The App Service managed-identity endpoint (api-version 2019-08-01), as azure-identity and the Azure
CLI call it: `GET ?api-version&resource[&client_id|principal_id]` with the `X-IDENTITY-HEADER` secret."""

from __future__ import annotations

import time

from dev import layout, tokens
from dev.azure_standin.http_base import Request, Response
from dev.azure_standin.world import World

MANAGED_IDENTITIES = (layout.APP_IDENTITY, layout.USER_ASSIGNED_IDENTITY, layout.NO_ROLE_IDENTITY)
TOKEN_TTL = 3600


def _error(status: int, message: str) -> Response:
    return Response(status, {"statusCode": status, "message": message, "correlationId": "local-stack"})


def select_identity(client_id: str | None, principal_id: str | None) -> layout.Identity | None:
    """No selector means the system-assigned identity; a selector must name a managed identity."""
    if client_id is None and principal_id is None:
        return layout.APP_IDENTITY
    for identity in MANAGED_IDENTITIES:
        if client_id in (identity.client_id,) or principal_id in (identity.object_id,):
            return identity
    return None


def serve_identity(world: World, request: Request) -> Response:
    world.record({"kind": "identity", "method": request.method, "path": request.path,
                  "query": {k: v[0] for k, v in request.query.items()},
                  "has_identity_header": "x-identity-header" in request.headers})
    if request.method != "GET" or request.path.rstrip("/") != "/msi/token":
        return _error(404, "Not found.")
    if request.headers.get("x-identity-header") != layout.IDENTITY_HEADER:
        return _error(401, "The X-IDENTITY-HEADER header is missing or wrong.")
    if request.param("api-version") != "2019-08-01":
        return _error(400, "The api-version is missing or not supported; use 2019-08-01.")
    resource = request.param("resource")
    if not resource:
        return _error(400, "The resource parameter is required.")
    if request.param("mi_res_id"):
        return _error(400, "Unable to load the proper Managed Identity.")
    identity = select_identity(request.param("client_id"), request.param("principal_id"))
    if identity is None:
        return _error(400, "Unable to load the proper Managed Identity.")
    return Response(200, {
        "access_token": tokens.mint_entra_token(identity, resource, ttl=TOKEN_TTL),
        "expires_on": str(int(time.time()) + TOKEN_TTL),
        "resource": resource,
        "token_type": "Bearer",
        "client_id": identity.client_id,
    })
