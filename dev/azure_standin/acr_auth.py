"""ACR's data-plane token service (`/oauth2/exchange`, `/oauth2/token`), so real registry clients reach
the ACR registries with an Entra token or a service principal, and get only what their roles allow.
Served on each registry's login server (dev/azure_standin/login_server.py), as ACR serves it."""

from __future__ import annotations

import base64
import binascii

import jwt

from dev import layout, tokens
from dev.azure_standin import roles
from dev.azure_standin.arm import ARM_AUDIENCES
from dev.azure_standin.http_base import Request, Response
from dev.azure_standin.world import World

ACR_AUDIENCES = ARM_AUDIENCES | {"https://containerregistry.azure.net", "https://containerregistry.azure.net/"}
REFRESH_TTL = 3 * 3600
ACCESS_TTL = 300
NULL_USER = "00000000-0000-0000-0000-000000000000"  # docker login with an ACR refresh token as password
# `metadata_read` (what az's listing commands ask: azure-cli 2.91 `acr/_docker_utils.py`
# `RepoAccessTokenPermission.METADATA_READ`) comes with pull: the ACR built-in roles reference gives AcrPull
# "pull artifacts, and read repositories, tags and manifests (metadata)"; a non-ABAC registry has no separate
# data action for it.
ACTION_NEEDS = {"pull": roles.PULL_ACTION, "push": roles.PUSH_ACTION, "delete": roles.DELETE_ACTION,
                "metadata_read": roles.PULL_ACTION}


def _unauthorized(message: str, acr: layout.AcrSpec | None = None) -> Response:
    headers = {}
    if acr is not None:
        headers["WWW-Authenticate"] = f'Basic realm="{layout.acr_token_realm(acr)}"'
    return Response(401, {"errors": [{"code": "UNAUTHORIZED", "message": message}]}, headers)


def _identity_by_object_id(object_id: str) -> layout.Identity | None:
    return next((i for i in layout.IDENTITIES if i.object_id == object_id), None)


def granted_access(world: World, principal_id: str, acr: layout.AcrSpec, scopes: list[str]) -> list[dict]:
    """The `access` claim: requested repository actions the principal's roles cover on this registry."""
    access = []
    for scope in " ".join(scopes).split():
        parts = scope.split(":")
        if len(parts) < 3 or parts[0] != "repository":
            continue
        name, actions = ":".join(parts[1:-1]), parts[-1].split(",")
        if "*" in actions:
            actions = list(ACTION_NEEDS)
        allowed = [a for a in actions if a in ACTION_NEEDS
                   and world.is_allowed(principal_id, ACTION_NEEDS[a], acr.resource_id)]
        if allowed:
            access.append({"type": "repository", "name": name, "actions": allowed})
    return access


def service_principal_login(username: str | None, password: str | None,
                            acr: layout.AcrSpec) -> str | None:
    """The object id behind app id + secret (or the null user + an ACR refresh token), if valid."""
    if username == NULL_USER and password:
        try:
            return tokens.verify_entra_token(password, audience=acr.login_server)["oid"]
        except jwt.PyJWTError:
            return None
    sp = next((i for i in layout.IDENTITIES if i.client_id == username and i.secret is not None), None)
    if sp is None or password != sp.secret:
        return None
    return sp.object_id


def sp_can_pull(world: World, username: str, password: str | None, acr: layout.AcrSpec) -> bool:
    principal = service_principal_login(username, password, acr)
    return principal is not None and world.is_allowed(principal, roles.PULL_ACTION, acr.resource_id)


def _basic(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


def serve_acr_auth(world: World, request: Request, acr: layout.AcrSpec, endpoint: str) -> Response:
    """`endpoint` is `exchange` or `token`, as the login server's path names it."""
    fields = {k: v for k, v in request.form().items()} if request.method == "POST" else request.query
    first = {k: v[0] for k, v in fields.items()}
    world.record({"kind": "acr", "registry": acr.name, "method": request.method, "path": request.path,
                  "grant_type": first.get("grant_type"), "service": first.get("service"),
                  "scope": fields.get("scope", [])})
    if first.get("service") not in (None, acr.login_server):
        return _unauthorized(f"service must be {acr.login_server}", acr)
    if endpoint == "exchange":
        return _exchange(acr, first)
    if request.method == "POST" and first.get("grant_type") == "refresh_token":
        try:
            principal = tokens.verify_entra_token(first.get("refresh_token", ""), audience=acr.login_server)["oid"]
        except jwt.PyJWTError:
            return _unauthorized("invalid refresh token", acr)
    else:
        credentials = _basic(request)
        if request.method == "POST" and first.get("grant_type") == "password":
            credentials = (first.get("username"), first.get("password"))
        principal = service_principal_login(*credentials, acr) if credentials else None
        if principal is None:
            return _unauthorized("authentication required", acr)
    access = granted_access(world, principal, acr, fields.get("scope", []))
    token = tokens.mint_registry_token(subject=principal, service=acr.login_server, access=access, ttl=ACCESS_TTL)
    return Response(200, {"access_token": token, "token": token, "expires_in": ACCESS_TTL})


def _exchange(acr: layout.AcrSpec, form: dict[str, str]) -> Response:
    if form.get("grant_type") != "access_token" or not form.get("access_token"):
        return Response(400, {"errors": [{"code": "UNSUPPORTED", "message":
                                          "grant_type must be access_token, with an access_token"}]})
    try:
        claims = tokens.verify_entra_token(form["access_token"])
    except jwt.PyJWTError:
        return _unauthorized("invalid access token", acr)
    if claims.get("aud") not in ACR_AUDIENCES or claims.get("tid") != layout.TENANT_ID:
        return _unauthorized("access token audience or tenant is not accepted", acr)
    identity = _identity_by_object_id(claims["oid"])
    if identity is None:
        return _unauthorized("unknown principal", acr)
    refresh = tokens.mint_entra_token(identity, acr.login_server, ttl=REFRESH_TTL)
    return Response(200, {"refresh_token": refresh})
