"""Adapter to Azure Resource Manager: the ACR import API and registry look-ups, with managed identity.

The Azure SDK modules are imported on first use: they cost more start-up time than everything else in
the app together (see docs/benchmarks.md), and a rejected request never needs them.

The import is started with the SDK (`begin_import_image`, polling off) and its operation URL is then
polled here, not by the SDK's poller, because a long import must be handed over between invocations:
the SDK's continuation token is a pickled HTTP exchange that holds the request body (source credentials
included) and would be unpickled from a queue message anyone with queue access can write. An operation
URL is plain data: it is checked to be on ARM_ENDPOINT, in the target's subscription, before the app
sends its token there.

An operation URL is only ever taken from ARM's own answer to the POST and kept on the status row, never
from a queue message; even so it is checked against the one shape ARM returns for importImage
(`<ARM>/subscriptions/<sub>/providers/Microsoft.ContainerRegistry/locations/<loc>/operationResults/<id>
?api-version=<v>`, or `operationStatuses` in an Azure-AsyncOperation header) and rebuilt from its parts
before any token goes to it: no `..`, no percent-encoding, no user info, no other host, port, scheme,
subscription, query or fragment.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from shared.azure.arm_budget import BOOK, Budget
from shared.azure.deadlines import arm_client_options, identity_options
from shared.azure.transport import client_options
from shared.core.failures import IdentityUnreachable, parse_retry_after
from shared.core.resource_ids import RegistryId, parse_registry_id
from shared.core.settings import Settings

if TYPE_CHECKING:
    from azure.core.credentials import AccessToken, TokenCredential
    from azure.core.exceptions import HttpResponseError
    from azure.core.pipeline import PipelineResponse
    from azure.core.rest import HttpResponse
    from azure.identity import ManagedIdentityCredential
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient

REGISTRY_CACHE_SECONDS = 300.0
MAX_OPERATION_URL = 2048
_OPERATION_PATH = re.compile(
    r"/subscriptions/(?P<sub>[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12})"
    r"/providers/Microsoft\.ContainerRegistry/locations/(?P<loc>[A-Za-z0-9]{1,64})"
    r"/(?P<kind>operationResults|operationStatuses)/(?P<op>[A-Za-z0-9][A-Za-z0-9_-]{0,127})", re.IGNORECASE)
_API_VERSION = re.compile(r"api-version=(?P<v>[0-9]{4}-[0-9]{2}-[0-9]{2}(?:-preview)?)")


@dataclass(frozen=True)
class OperationStatus:
    """One look at a running import: finished or not, when to look again, manifests still pending."""

    done: bool
    retry_after: float | None = None
    pending: int | None = None
    failed_with: str | None = None  # the look itself failed (e.g. "HTTP 503"): no news about the import
    throttled: bool = False  # ARM answered 429 (its read bucket is empty): wait `retry_after`, nothing failed


class OperationUrlRejected(ValueError):
    """An operation URL that is not ARM's: the app never sends its token to it."""


def make_credential(settings: Settings) -> _NamedEndpoint:
    """The app's managed identity: user-assigned when AZURE_CLIENT_ID is set, else system-assigned."""
    from azure.identity import ManagedIdentityCredential

    options = client_options(identity_options())  # proxies and CA bundle read once (shared/azure/transport.py)
    if settings.azure_client_id:
        return _NamedEndpoint(ManagedIdentityCredential(client_id=settings.azure_client_id, **options))
    return _NamedEndpoint(ManagedIdentityCredential(**options))


class _NamedEndpoint:
    """The credential, with "the identity endpoint does not answer" told apart from "ARM does not answer":
    both are a ServiceRequestError to azure-core, but only the first is a configuration that cannot work
    (shared/core/failures.py `configuration_failure`). An endpoint that answers with an error stays as it was."""

    def __init__(self, inner: ManagedIdentityCredential) -> None:
        self._inner = inner

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        from azure.core.exceptions import ServiceRequestError

        try:
            token: AccessToken = self._inner.get_token(*scopes, **kwargs)
            return token
        except ServiceRequestError as exc:
            raise IdentityUnreachable(identity_endpoint(), exc) from exc

    def close(self) -> None:
        self._inner.close()

    def __enter__(self) -> _NamedEndpoint:
        self._inner.__enter__()
        return self

    def __exit__(self, *args: Any) -> None:
        self._inner.__exit__(*args)


def identity_endpoint() -> str:
    """Where azure-identity asks for tokens, as it decides (App Service / Functions variables, else IMDS)."""
    return ((os.environ.get("IDENTITY_ENDPOINT") and "IDENTITY_ENDPOINT=" + os.environ["IDENTITY_ENDPOINT"])
            or (os.environ.get("MSI_ENDPOINT") and "MSI_ENDPOINT=" + os.environ["MSI_ENDPOINT"])
            or "IMDS (IDENTITY_ENDPOINT is not set)")


class AcrManagement:
    """ARM calls for one app: a client per subscription, registry look-ups cached for a few minutes."""

    def __init__(self, settings: Settings, credential: TokenCredential | None = None) -> None:
        self._settings = settings
        self._credential = credential
        self._clients: dict[str, ContainerRegistryManagementClient] = {}
        self._registries: dict[str, tuple[float, dict[str, RegistryId]]] = {}
        self._lock = threading.Lock()
        BOOK.set_limits(settings.arm_request_limits)  # ARM_REQUEST_LIMITS, else ARM's documented buckets

    def _client(self, subscription: str) -> ContainerRegistryManagementClient:
        with self._lock:
            if subscription not in self._clients:
                from azure.mgmt.containerregistry import ContainerRegistryManagementClient

                if self._credential is None:
                    self._credential = make_credential(self._settings)
                endpoint = self._settings.arm_endpoint
                # No SDK retries: transient failures go back to the queue with backoff, so no thread
                # sleeps through a Retry-After and every attempt is counted and visible in the status.
                self._clients[subscription] = ContainerRegistryManagementClient(
                    self._credential, subscription, base_url=endpoint,
                    credential_scopes=[f"{self._settings.arm_audience}/.default"], retry_total=0,
                    # every call ends inside functionTimeout (shared/azure/deadlines.py); proxies and CA
                    # bundle read once (shared/azure/transport.py)
                    **client_options(arm_client_options()))
            return self._clients[subscription]

    def registry_by_login_server(self, subscription: str, login_server: str) -> RegistryId | None:
        """The ACR in `subscription` whose login server is `login_server` (as `az acr import` looks it up)."""
        now = time.monotonic()
        cached = self._registries.get(subscription)
        if cached is None or now - cached[0] > REGISTRY_CACHE_SECONDS:
            found = {}
            for registry in self._client(subscription).registries.list():
                server = (getattr(registry, "login_server", None) or "").lower()
                if server and registry.id:
                    found[server] = parse_registry_id(registry.id)
            cached = (now, found)
            self._registries[subscription] = cached
        return cached[1].get(login_server.lower())

    def budget_key(self, subscription: str) -> str:
        """Whose ARM budget a call in `subscription` spends: ARM counts per identity and subscription
        (shared/azure/arm_budget.py)."""
        return f"{self._settings.arm_endpoint}|{self._settings.azure_client_id or 'system'}|{subscription.lower()}"

    def budget(self, target: RegistryId, kind: str, *, take: bool = False) -> Budget:
        """What this process last heard ARM say is left of `kind` for the app's identity in `target`'s
        subscription, estimated now (`take`: spend one token of the estimate when there is one)."""
        return BOOK.budget(self.budget_key(target.subscription), kind, take=take)

    def watching(self, target: RegistryId) -> contextlib.AbstractContextManager[None]:
        """Count the calling thread among this process's watchers of imports in `target`'s subscription."""
        return BOOK.watching(self.budget_key(target.subscription))

    def _observe(self, subscription: str, response: Any) -> None:
        """Keep ARM's remaining-request headers (and a 429's Retry-After) of one answer in the process's book."""
        headers = response.headers
        BOOK.observe(self.budget_key(subscription), response.request.method, response.status_code, headers,
                     parse_retry_after(headers.get("Retry-After")) if response.status_code == 429 else None)

    def start_import(self, target: RegistryId, parameters: dict[str, Any]) -> tuple[str | None, float | None]:
        """POST importImage. Returns the operation URL to poll (None when ARM finished it at once) and
        the Retry-After ARM asked for. Errors of the POST raise as the SDK maps them (a 429 included: its
        remaining-writes headers and Retry-After are kept in the budget book first)."""
        answer: dict[str, Any] = {}

        def keep_initial_answer(pipeline_response: PipelineResponse[Any, Any]) -> None:
            response = pipeline_response.http_response
            if response.request.method == "POST":
                answer["status"], answer["headers"] = response.status_code, dict(response.headers)
                self._observe(target.subscription, response)

        self._client(target.subscription).registries.begin_import_image(
            target.resource_group, target.name, parameters, polling=False, raw_response_hook=keep_initial_answer)
        headers = {k.lower(): v for k, v in answer.get("headers", {}).items()}
        if answer.get("status") == 200:
            return None, None
        url = headers.get("azure-asyncoperation") or headers.get("location")
        if not url:
            raise OperationUrlRejected("ARM accepted the import but named no operation to poll")
        return self.check_operation_url(target, url), parse_retry_after(headers.get("retry-after"))

    def check_operation_url(self, target: RegistryId, url: str) -> str:
        """The operation URL in its one normal form, when it is ARM's own for an import into `target`'s
        subscription; else OperationUrlRejected (the app's token never goes to it)."""
        return operation_url(url, self._settings.arm_endpoint, target.subscription)

    def operation_status(self, target: RegistryId, url: str) -> OperationStatus:
        """One GET of the operation. A failed import raises HttpResponseError with ARM's code and message,
        exactly as the SDK's poller would. A look ARM throttles (429) is no news: `throttled`, with its
        Retry-After; its headers, like every answer's, go to the budget book."""
        from azure.core.exceptions import HttpResponseError, map_error
        from azure.core.rest import HttpRequest
        from azure.mgmt.core.exceptions import ARMErrorFormat

        url = self.check_operation_url(target, url)
        response = self._client(target.subscription).send_request(HttpRequest("GET", url))
        self._observe(target.subscription, response)
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if response.status_code == 429:
            return OperationStatus(False, retry_after, failed_with="HTTP 429", throttled=True)
        body = _json(response)
        if response.status_code >= 400:
            map_error(status_code=response.status_code, response=response, error_map=_error_map())
            raise HttpResponseError(response=response, error_format=ARMErrorFormat)
        status = str(body.get("status", "")).lower() if isinstance(body, dict) else ""
        if status in ("failed", "canceled", "cancelled"):  # Azure-AsyncOperation style
            raise HttpResponseError(response=response, error_format=ARMErrorFormat)
        pending = sum(1 for v in body.values() if v == "Pending") if isinstance(body, dict) else None
        if response.status_code == 202 or status in ("inprogress", "accepted", "running"):
            return OperationStatus(False, retry_after, pending)
        return OperationStatus(True)


def operation_url(url: Any, arm_endpoint: str, subscription: str) -> str:
    """`url` rebuilt from its checked parts on `arm_endpoint`, or OperationUrlRejected naming the rule.

    Strict on purpose: the URL is matched as the characters ARM sends (nothing decoded, nothing resolved),
    so `%2F`, `%2e%2e`, `..`, `\\`, `@` and the like never get as far as a client that would interpret them."""
    text = url if isinstance(url, str) else ""
    shown = repr(text[:200])

    def refuse(rule: str) -> OperationUrlRejected:
        return OperationUrlRejected(f"operation URL {shown} {rule}; only ARM's own importImage operation URLs "
                                    f"on {arm_endpoint} in subscription {subscription} are polled")

    if not text or len(text) > MAX_OPERATION_URL or not text.isascii() or not text.isprintable() or " " in text:
        raise refuse("is empty, too long, or not printable ASCII")
    if any(c in text for c in "\\%@#"):
        raise refuse("holds a backslash, a percent-encoding, user info or a fragment")
    parts, arm = urlsplit(text), urlsplit(arm_endpoint)
    try:
        port, arm_port = parts.port or 443, arm.port or 443
    except ValueError:
        raise refuse("has an invalid port") from None
    if parts.scheme != "https" or arm.scheme != "https":
        raise refuse("is not https")
    if (parts.hostname or "") != (arm.hostname or "").lower() or port != arm_port:
        raise refuse("is not on ARM_ENDPOINT")
    match = _OPERATION_PATH.fullmatch(parts.path)
    if match is None:
        raise refuse("is not .../providers/Microsoft.ContainerRegistry/locations/<location>/operationResults/<id>")
    if match["sub"].lower() != subscription.lower():
        raise refuse("names another subscription")
    version = _API_VERSION.fullmatch(parts.query)
    if version is None:
        raise refuse("must have exactly one query parameter, api-version=<date>")
    kind = "operationResults" if match["kind"].lower() == "operationresults" else "operationStatuses"
    base = f"{arm.scheme}://{arm.hostname}" + (f":{arm.port}" if arm.port else "")
    return (f"{base}/subscriptions/{subscription.lower()}/providers/Microsoft.ContainerRegistry/locations/"
            f"{match['loc']}/{kind}/{match['op']}?api-version={version['v']}")


def _json(response: HttpResponse) -> Any:
    try:
        return response.json() if response.content else {}
    except ValueError:
        return {}


def _error_map() -> dict[int, type[HttpResponseError]]:
    from azure.core.exceptions import ClientAuthenticationError, ResourceExistsError, ResourceNotFoundError

    return {401: ClientAuthenticationError, 404: ResourceNotFoundError, 409: ResourceExistsError}
