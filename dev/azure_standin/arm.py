"""Azure Resource Manager as the ACR SDK and `az acr` use it: subscriptions, generic resources,
registries, importImage and its operation URLs, with ARM's authentication and authorization answers."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import jwt

from dev import layout, tokens
from dev.azure_standin import roles
from dev.azure_standin.data_plane import CopyJob, DataPlane, SourceAccess
from dev.azure_standin.errors import (
    ArmError,
    authorization_failed,
    invalid_parameters,
    linked_authorization_failed,
    missing_api_version,
)
from dev.azure_standin.http_base import Request, Response
from dev.azure_standin.import_params import ACR_ID_RE, parse_import_request
from dev.azure_standin.operations import start_import
from dev.azure_standin.throttling import REMAINING_PREFIX
from dev.azure_standin.throttling import kind_of as throttle_kind
from dev.azure_standin.world import Operation, World

ARM_AUDIENCES = {"https://management.core.windows.net/", "https://management.core.windows.net",
                 "https://management.azure.com/", "https://management.azure.com"}
REGISTRY_TYPE = "Microsoft.ContainerRegistry/registries"
SUBSCRIPTIONS = {layout.SUB_A: "Platform (local)", layout.SUB_B: "Other team (local)"}
RECORDED_HEADERS = ("user-agent", "content-type", "accept", "x-ms-client-request-id", "commandname",
                    "parametersetname")
CREATED = "2024-01-15T09:30:00.0000000Z"
SUBSCRIPTION_PATH = re.compile(r"/subscriptions/([^/]+)", re.I)


@dataclass(frozen=True)
class Caller:
    object_id: str
    client_id: str


def _challenge(error_description: str) -> dict[str, str]:
    return {"WWW-Authenticate": (f'Bearer authorization_uri="{layout.AAD_ENDPOINT}/{layout.TENANT_ID}", '
                                 f'error="invalid_token", error_description="{error_description}"')}


def authenticate(request: Request) -> Caller:
    """The caller behind the bearer token, or ARM's 401 with its WWW-Authenticate challenge."""
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("bearer "):
        raise ArmError(401, "AuthenticationFailed",
                       "Authentication failed. The 'Authorization' header is missing.",
                       _challenge("The authentication failed because of missing 'Authorization' header."))
    try:
        claims = tokens.verify_entra_token(header[7:].strip())
    except jwt.ExpiredSignatureError:
        raise ArmError(401, "ExpiredAuthenticationToken",
                       "The access token expiry UTC time is earlier than current UTC time.",
                       _challenge("The access token is expired.")) from None
    except jwt.PyJWTError:
        raise ArmError(401, "InvalidAuthenticationToken", "The access token is invalid.",
                       _challenge("The access token is invalid.")) from None
    if claims.get("aud") not in ARM_AUDIENCES:
        raise ArmError(401, "InvalidAuthenticationTokenAudience",
                       "The access token has been obtained for wrong audience or resource "
                       f"'{claims.get('aud')}'. "
                       "It should exactly match with one of the allowed audiences "
                       + ",".join(f"'{a}'" for a in sorted(ARM_AUDIENCES)) + ".",
                       _challenge("The access token has an invalid audience."))
    return Caller(claims["oid"], claims.get("appid", claims["oid"]))


# --- resource shapes ---------------------------------------------------------------------------
def subscription_json(sub: str) -> dict:
    return {"id": f"/subscriptions/{sub}", "authorizationSource": "RoleBased", "managedByTenants": [],
            "subscriptionId": sub, "tenantId": layout.TENANT_ID, "displayName": SUBSCRIPTIONS[sub],
            "state": "Enabled", "subscriptionPolicies": {"locationPlacementId": "Public_2014-09-01",
                                                         "quotaId": "PayAsYouGo_2014-09-01",
                                                         "spendingLimit": "Off"}}


def registry_json(acr: layout.AcrSpec, location: str) -> dict:
    return {
        "sku": {"name": "Premium", "tier": "Premium"}, "type": REGISTRY_TYPE, "id": acr.resource_id,
        "name": acr.name, "location": location, "tags": {},
        "systemData": {"createdBy": "local-stack", "createdByType": "Application", "createdAt": CREATED,
                       "lastModifiedBy": "local-stack", "lastModifiedByType": "Application",
                       "lastModifiedAt": CREATED},
        "properties": {
            "loginServer": acr.login_server, "creationDate": CREATED, "provisioningState": "Succeeded",
            "adminUserEnabled": False, "dataEndpointEnabled": False, "dataEndpointHostNames": [],
            "privateEndpointConnections": [], "publicNetworkAccess": "Enabled",
            "networkRuleBypassOptions": "AzureServices", "zoneRedundancy": "Disabled",
            "anonymousPullEnabled": False, "encryption": {"status": "disabled"},
            "policies": {"quarantinePolicy": {"status": "disabled"},
                         "trustPolicy": {"type": "Notary", "status": "disabled"},
                         "retentionPolicy": {"days": 7, "status": "disabled"},
                         "exportPolicy": {"status": "enabled"},
                         "azureADAuthenticationAsArmPolicy": {"status": "enabled"}},
        },
    }


def generic_resource_json(acr: layout.AcrSpec, location: str) -> dict:
    return {"id": acr.resource_id, "name": acr.name, "type": REGISTRY_TYPE,
            "sku": {"name": "Premium", "tier": "Premium"}, "location": location, "tags": {}}


def cloud_metadata() -> dict:
    """`/metadata/endpoints` for `az cloud register`: one cloud object pointing everything here."""
    arm = layout.ARM_ENDPOINT + "/"
    return {
        "name": "Local", "portal": arm, "resourceManager": arm, "galleryEndpoint": arm,
        "graphEndpoint": "https://graph.windows.net/", "graphAudience": "https://graph.windows.net/",
        "microsoftGraphResourceId": "https://graph.microsoft.com/", "sqlManagement": arm, "batch": arm,
        "media": arm, "vmImageAliasDoc": arm, "activeDirectoryDataLake": arm,
        "appInsightsResourceId": arm, "appInsightsTelemetryChannelResourceId": arm,
        "synapseAnalyticsResourceId": arm, "logAnalyticsResourceId": arm, "ossrDbmsResourceId": arm,
        "attestationResourceId": arm,
        "authentication": {"loginEndpoint": layout.AAD_ENDPOINT, "audiences": [layout.ARM_RESOURCE],
                           "tenant": "common", "identityProvider": "AAD"},
        "suffixes": {"acrLoginServer": "azurecr.io", "keyVaultDns": "vault.azure.net",
                     "storage": "core.windows.net", "sqlServerHostname": "database.windows.net",
                     "azureDataLakeStoreFileSystem": "azuredatalakestore.net",
                     "azureDataLakeAnalyticsCatalogAndJob": "azuredatalakeanalytics.net",
                     "mhsmDns": "managedhsm.azure.net", "mysqlServerEndpoint": "mysql.database.azure.com",
                     "postgresqlServerEndpoint": "postgres.database.azure.com",
                     "mariadbServerEndpoint": "mariadb.database.azure.com",
                     "synapseAnalytics": "dev.azuresynapse.net", "attestationEndpoint": "attest.azure.net"},
    }


def find_acr(subscription: str, resource_group: str | None, name: str | None) -> layout.AcrSpec | None:
    for acr in layout.ACRS:
        if (acr.subscription == subscription
                and (resource_group is None or acr.resource_group.lower() == resource_group.lower())
                and (name is None or acr.name.lower() == name.lower())):
            return acr
    return None


def acr_by_id(resource_id: str) -> layout.AcrSpec | None:
    match = ACR_ID_RE.fullmatch(resource_id)
    return find_acr(*match.groups()) if match else None


# --- the ARM application -----------------------------------------------------------------------
SUB = r"/subscriptions/(?P<sub>[^/]+)"
RG = SUB + r"/resourceGroups/(?P<rg>[^/]+)"
PROVIDER = r"/providers/Microsoft\.ContainerRegistry"
REG = RG + PROVIDER + r"/registries/(?P<name>[^/]+)"
OPS = SUB + PROVIDER + r"/locations/(?P<loc>[^/]+)/(?P<kind>operationResults|operationStatuses)/(?P<op>[^/]+)"


class Arm:
    def __init__(self, world: World, data_plane: Callable[[], DataPlane]) -> None:
        self.world = world
        self.data_plane = data_plane
        route = Callable[[Request, Caller, dict[str, str]], Response]
        self.routes: list[tuple[str, re.Pattern[str], route]] = [
            ("GET", re.compile(r"/subscriptions", re.I), self.list_subscriptions),
            ("GET", re.compile(SUB, re.I), self.get_subscription),
            ("GET", re.compile(SUB + r"/resources", re.I), self.list_resources),
            ("GET", re.compile(RG, re.I), self.get_resource_group),
            ("GET", re.compile(SUB + PROVIDER + r"/registries", re.I), self.list_registries),
            ("GET", re.compile(RG + PROVIDER + r"/registries", re.I), self.list_registries),
            ("GET", re.compile(REG, re.I), self.get_registry),
            ("POST", re.compile(REG + r"/importImage", re.I), self.import_image),
            ("GET", re.compile(OPS, re.I), self.get_operation),
        ]

    def __call__(self, request: Request) -> Response:
        caller: Caller | None = None
        try:
            if request.path.rstrip("/").lower() == "/metadata/endpoints":
                response = Response(200, cloud_metadata())
            else:
                caller = authenticate(request)
                response = self._throttled(request, caller)
        except ArmError as err:
            response = Response(err.status, err.envelope(), err.headers)
        self._record(request, caller, response)
        return response

    def _throttled(self, request: Request, caller: Caller) -> Response:
        """Count the request against the caller's buckets (setting `throttling`), answer 429 when one is
        empty, else dispatch; every answer carries the remaining counts, as ARM's do."""
        if not self.world.setting("throttling"):
            return self._dispatch(request, caller)
        match = SUBSCRIPTION_PATH.match(request.path)
        verdict = self.world.throttle.take(caller.object_id, match.group(1) if match else None, request.method)
        if verdict.error is not None:
            raise verdict.error
        try:
            response = self._dispatch(request, caller)
        except ArmError as err:
            err.headers = {**verdict.headers, **err.headers}
            raise
        response.headers = {**verdict.headers, **response.headers}
        return response

    def _record(self, request: Request, caller: Caller | None, response: Response) -> None:
        try:
            body = request.json()
        except ValueError:
            body = request.body.decode(errors="replace")
        self.world.record({
            "kind": "arm", "time": time.time(), "method": request.method, "path": request.path,
            "query": {k: v[0] for k, v in request.query.items()},
            "headers": {h: request.headers[h] for h in RECORDED_HEADERS if h in request.headers},
            "principal": caller.object_id if caller else None, "body": body, "status": response.status,
            # what ARM counted the request as, and what its answer said was left (when throttling is on)
            "rate_kind": throttle_kind(request.method),
            "remaining": {h.lower(): int(v) for h, v in response.headers.items()
                          if h.lower().startswith(REMAINING_PREFIX) and str(v).isdigit()},
            "retry_after": response.headers.get("Retry-After"),
        })

    def _dispatch(self, request: Request, caller: Caller) -> Response:
        path = request.path.rstrip("/")
        known_path = False
        for method, pattern, handler in self.routes:
            match = pattern.fullmatch(path)
            if match:
                known_path = True
                if method == request.method:
                    if not request.param("api-version"):
                        raise missing_api_version()
                    return handler(request, caller, match.groupdict())
        if known_path:
            raise ArmError(405, "MethodNotAllowed",
                           f"The requested method '{request.method}' is not allowed.")
        raise ArmError(404, "InvalidResourceType",
                       f"The resource type could not be found for the request path '{request.path}'.")

    # --- reads: each needs its read action at the scope (lists show only the resources the caller may read)
    def _require_subscription(self, sub: str) -> None:
        if sub not in SUBSCRIPTIONS:
            raise ArmError(404, "SubscriptionNotFound", f"The subscription '{sub}' could not be found.")

    def _visible(self, caller: Caller, acr: layout.AcrSpec) -> bool:
        """ARM filters a collection read to the resources the caller holds the type's read action on."""
        return self.world.is_allowed(caller.object_id, roles.READ_ACTION, acr.resource_id)

    def _read_check(self, caller: Caller, scope: str, action: str) -> None:
        """A subscription is readable by every principal holding some role in it (ARM lists and shows a
        subscription to anyone with an assignment at or below it)."""
        if not self.world.has_any_role(caller.object_id, scope):
            raise authorization_failed(caller.object_id, caller.client_id, action, scope)

    def list_subscriptions(self, request: Request, caller: Caller, _: dict) -> Response:
        subs = [s for s in SUBSCRIPTIONS if self.world.has_any_role(caller.object_id, f"/subscriptions/{s}")]
        return Response(200, {"value": [subscription_json(s) for s in subs],
                              "count": {"type": "Total", "value": len(subs)}})

    def get_subscription(self, request: Request, caller: Caller, p: dict) -> Response:
        self._require_subscription(p["sub"])
        self._read_check(caller, f"/subscriptions/{p['sub']}", "Microsoft.Resources/subscriptions/read")
        return Response(200, subscription_json(p["sub"]))

    def get_resource_group(self, request: Request, caller: Caller, p: dict) -> Response:
        self._require_subscription(p["sub"])
        acr = find_acr(p["sub"], p["rg"], None)
        if acr is None:
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{p['rg']}' could not be found.")
        scope = f"/subscriptions/{p['sub']}/resourceGroups/{acr.resource_group}"
        action = "Microsoft.Resources/subscriptions/resourceGroups/read"
        if not self.world.is_allowed(caller.object_id, action, scope):
            raise authorization_failed(caller.object_id, caller.client_id, action, scope)
        return Response(200, {"id": scope, "name": acr.resource_group,
                              "type": "Microsoft.Resources/resourceGroups",
                              "location": self.world.setting("location"),
                              "properties": {"provisioningState": "Succeeded"}})

    def list_resources(self, request: Request, caller: Caller, p: dict) -> Response:
        self._require_subscription(p["sub"])
        wanted_type = wanted_name = None
        for clause in re.split(r"\s+and\s+", request.param("$filter") or "", flags=re.I):
            match = re.fullmatch(r"\s*(resourceType|name)\s+eq\s+'([^']*)'\s*", clause, re.I)
            if match and match.group(1).lower() == "resourcetype":
                wanted_type = match.group(2)
            elif match:
                wanted_name = match.group(2)
        location = self.world.setting("location")
        value = [generic_resource_json(a, location) for a in layout.ACRS
                 if a.subscription == p["sub"] and self._visible(caller, a)
                 and (wanted_type is None or wanted_type.lower() == REGISTRY_TYPE.lower())
                 and (wanted_name is None or wanted_name.lower() == a.name.lower())]
        return Response(200, {"value": value})

    def list_registries(self, request: Request, caller: Caller, p: dict) -> Response:
        self._require_subscription(p["sub"])
        if p.get("rg") and find_acr(p["sub"], p["rg"], None) is None:
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{p['rg']}' could not be found.")
        location = self.world.setting("location")
        value = [registry_json(a, location) for a in layout.ACRS
                 if a.subscription == p["sub"] and self._visible(caller, a)
                 and (p.get("rg") is None or a.resource_group.lower() == p["rg"].lower())]
        return Response(200, {"value": value})

    def _registry(self, caller: Caller, p: dict, action: str) -> layout.AcrSpec:
        self._require_subscription(p["sub"])
        if find_acr(p["sub"], p["rg"], None) is None:
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{p['rg']}' could not be found.")
        acr = find_acr(p["sub"], p["rg"], p["name"])
        scope = acr.resource_id if acr else (f"/subscriptions/{p['sub']}/resourceGroups/{p['rg']}"
                                            f"/providers/{REGISTRY_TYPE}/{p['name']}")
        if not self.world.is_allowed(caller.object_id, action, scope):
            raise authorization_failed(caller.object_id, caller.client_id, action, scope)
        if acr is None:
            raise ArmError(404, "ResourceNotFound",
                           f"The Resource '{REGISTRY_TYPE}/{p['name']}' under resource group '{p['rg']}' "
                           "was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix")
        return acr

    def get_registry(self, request: Request, caller: Caller, p: dict) -> Response:
        acr = self._registry(caller, p, roles.READ_ACTION)
        return Response(200, registry_json(acr, self.world.setting("location")))

    # --- importImage ---------------------------------------------------------------------------
    def import_image(self, request: Request, caller: Caller, p: dict) -> Response:
        fault = self.world.next_fault("import")
        if fault:
            status = int(fault.get("status", 500))
            headers = {"Retry-After": str(fault["retry_after"])} if "retry_after" in fault else {}
            default_code = "TooManyRequests" if status == 429 else "InternalServerError"
            raise ArmError(status, fault.get("code", default_code),
                           fault.get("message", "The request was throttled." if status == 429
                                     else "Encountered internal server error. Please try again."), headers)
        target = self._registry(caller, p, roles.IMPORT_ACTION)
        if (self.world.in_authorization_outage()
                or not self.world.is_allowed(caller.object_id, roles.IMPORT_ACTION, target.resource_id)):
            raise authorization_failed(caller.object_id, caller.client_id, roles.IMPORT_ACTION,
                                       target.resource_id)
        try:
            body = request.json()
        except ValueError:
            raise invalid_parameters("The request body is not valid JSON.") from None
        params = parse_import_request(body)
        source = self._source_access(caller, params, target)
        job = CopyJob(source, params.source_image.repository, params.source_image.reference, target,
                      params.target_tags, params.untagged_repositories)
        op = self.world.new_operation(target.resource_id, p["sub"])
        start_import(self.world, self.data_plane(), op, job, force=params.mode == "Force")
        return Response(202, None, self._operation_headers(op, request.param("api-version")))

    def _source_access(self, caller: Caller, params, target: layout.AcrSpec) -> SourceAccess:
        if params.registry_uri is not None:
            return SourceAccess(params.registry_uri, params.username, params.password)
        source = acr_by_id(params.resource_id)
        # A resource-id source is a linked scope: ARM checks the caller's access to it before accepting
        # the import. The ACR docs ask for Reader on the source ("permissions to read from the source
        # registry (Reader role)", azure-docs container-registry-import-images.md), and ARM's answer when
        # it is missing is LinkedAuthorizationFailed naming the source (azure-docs issue #33442 shows it
        # for importImage). So the source needs registries/read and pull/read: Reader or the template's
        # source role, not AcrPull alone.
        linked_scope = source.resource_id if source else params.resource_id
        for needed in (roles.READ_ACTION, roles.PULL_ACTION):
            if not self.world.is_allowed(caller.object_id, needed, linked_scope):
                raise linked_authorization_failed(caller.object_id, caller.client_id, roles.IMPORT_ACTION,
                                                  target.resource_id, needed, linked_scope)
        if source is None:
            raise invalid_parameters(f"The source registry '{params.resource_id}' could not be found.")
        token = tokens.mint_registry_token(
            subject=caller.object_id, service=source.login_server,
            access=[{"type": "repository", "name": params.source_image.repository, "actions": ["pull"]}])
        return SourceAccess(source.login_server, bearer_token=token, preauthorized=True)

    def _operation_url(self, op: Operation, kind: str, api_version: str | None) -> str:
        return (f"{layout.ARM_ENDPOINT}/subscriptions/{op.subscription}/providers/Microsoft.ContainerRegistry"
                f"/locations/{self.world.setting('location')}/{kind}/{op.id}?api-version={api_version}")

    def _operation_headers(self, op: Operation, api_version: str | None) -> dict[str, str]:
        headers = {"Location": self._operation_url(op, "operationResults", api_version),
                   "Retry-After": str(self.world.setting("retry_after"))}
        if self.world.setting("azure_async_operation"):
            headers["Azure-AsyncOperation"] = self._operation_url(op, "operationStatuses", api_version)
        return headers

    def get_operation(self, request: Request, caller: Caller, p: dict) -> Response:
        op = self.world.operation(p["op"])
        if op is None or op.subscription.lower() != p["sub"].lower():
            raise ArmError(404, "OperationNotFound", f"The operation '{p['op']}' could not be found.")
        fault = self.world.next_fault("poll")  # one scripted answer per look, the operation runs on meanwhile
        if fault:
            status = int(fault.get("status", 500))
            raise ArmError(status, fault.get("code", "InternalServerError"),
                           fault.get("message", "The server encountered an internal error."),
                           {"Retry-After": str(fault["retry_after"])} if "retry_after" in fault else {})
        retry = {"Retry-After": str(self.world.setting("retry_after"))}
        if p["kind"].lower() == "operationstatuses":
            return Response(200, self._status_body(op), {} if op.ended else retry)
        if op.status == "InProgress":
            body = {"status": "Accepted", **{digest: "Pending" for digest in op.pending}}
            location = self._operation_url(op, "operationResults", request.param("api-version"))
            return Response(202, body, {"Location": location, **retry})
        if op.status == "Failed" and op.error is not None:
            return Response(op.error.status, op.error.envelope())
        return Response(200, {"status": "Succeeded"})

    def _status_body(self, op: Operation) -> dict:
        def stamp(t: float) -> str:
            return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")

        body = {"id": f"/subscriptions/{op.subscription}/providers/Microsoft.ContainerRegistry/locations/"
                      f"{self.world.setting('location')}/operationStatuses/{op.id}",
                "name": op.id, "status": op.status, "startTime": stamp(op.started)}
        if op.ended:
            body["endTime"] = stamp(op.ended)
        if op.error is not None:
            body["error"] = op.error.envelope()["error"]
        return body
