"""The local stack in one place: ports, folders, the test CA, and the fake Azure world it serves.

Every stand-in, test, benchmark and the demo read this module, so a port or a name changes here only.
All secrets below are throwaway test values for loopback services; none is ever used outside the stack.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = Path(os.environ.get("ACR_IMPORTER_STACK_DIR", REPO_ROOT / ".stack"))
"""Everything the stack writes (CA, configs, registry data, pid files, logs). Safe to delete when down."""

HOST = "127.0.0.1"

# --- test CA (trustme) -------------------------------------------------------------------------
CA_CERT = STATE_DIR / "ca" / "ca.pem"          # trust this (REQUESTS_CA_BUNDLE, SSL_CERT_FILE)
CA_KEY = STATE_DIR / "ca" / "ca.key"
SERVER_CERT = STATE_DIR / "ca" / "server.pem"  # leaf for localhost / 127.0.0.1, signed by the CA
SERVER_KEY = STATE_DIR / "ca" / "server.key"
TOKEN_SIGNING_CERT = STATE_DIR / "ca" / "token-signing.pem"  # registries trust tokens signed by this
TOKEN_SIGNING_KEY = STATE_DIR / "ca" / "token-signing.key"

# --- ports ---------------------------------------------------------------------------------------
# ACR_IMPORTER_PORT_OFFSET shifts every port (a multiple of 100 keeps them apart), so several stacks can
# run on one machine at once: the test suite picks its own offset; `make stack-up` and the demo use 0.
PORT_OFFSET = int(os.environ.get("ACR_IMPORTER_PORT_OFFSET", "0"))
AZURITE_BLOB_PORT = 10000 + PORT_OFFSET   # Azurite's defaults at offset 0, so UseDevelopmentStorage=true works
AZURITE_QUEUE_PORT = 10001 + PORT_OFFSET
AZURITE_TABLE_PORT = 10002 + PORT_OFFSET
AZURE_STANDIN_PORT = 9443 + PORT_OFFSET   # HTTPS: ARM and the control endpoint (ACR login servers: AcrSpec.port)
IDENTITY_PORT = 9080 + PORT_OFFSET        # HTTP: managed-identity token endpoint (as on App Service)
DOCKERHUB_TOKEN_PORT = 9444 + PORT_OFFSET  # HTTPS: Docker Hub-style token server (auth.docker.io stand-in)
DOCKERHUB_FRONT_PORT = 5004 + PORT_OFFSET  # HTTPS: Docker Hub registry front (rate-limit headers, 429s)
RUNNER_PORT = 7071 + PORT_OFFSET          # local Functions runner (Event Grid webhook), Core Tools' default port
ACR_DNS_PROXY_PORT = 9445 + PORT_OFFSET   # HTTP CONNECT proxy: <acr>.azurecr.io:443 -> that ACR's login server

ARM_ENDPOINT = f"https://{HOST}:{AZURE_STANDIN_PORT}"
IDENTITY_ENDPOINT = f"http://{HOST}:{IDENTITY_PORT}/msi/token"
IDENTITY_HEADER = "local-identity-header"   # App Service's X-IDENTITY-HEADER value, checked by the endpoint
AAD_ENDPOINT = f"{ARM_ENDPOINT}/aad"
ARM_RESOURCE = "https://management.core.windows.net/"   # the audience azure-mgmt asks tokens for
CONTROL_ENDPOINT = f"{ARM_ENDPOINT}/_control"           # fault injection, roles, recorded requests

# Azurite's well-known development account (public, documented by Microsoft; not a secret).
_DEV_ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
AZURITE_CONNECTION_STRING = "UseDevelopmentStorage=true" if PORT_OFFSET == 0 else (
    f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={_DEV_ACCOUNT_KEY};"
    f"BlobEndpoint=http://{HOST}:{AZURITE_BLOB_PORT}/devstoreaccount1;"
    f"QueueEndpoint=http://{HOST}:{AZURITE_QUEUE_PORT}/devstoreaccount1;"
    f"TableEndpoint=http://{HOST}:{AZURITE_TABLE_PORT}/devstoreaccount1;")

# A second Azurite, over HTTPS with OAuth (`--oauth basic`), for the identity-based storage settings the
# templates deploy (`AzureWebJobsStorage__queueServiceUri`, ...): bearer tokens need HTTPS, and the plain-HTTP
# instance above keeps `UseDevelopmentStorage=true` and the connection-string mode of the rest of the suite.
AZURITE_IDENTITY_BLOB_PORT = 10010 + PORT_OFFSET
AZURITE_IDENTITY_QUEUE_PORT = 10011 + PORT_OFFSET
AZURITE_IDENTITY_TABLE_PORT = 10012 + PORT_OFFSET
AZURITE_IDENTITY_URIS = {service: f"https://{HOST}:{port}/devstoreaccount1" for service, port in (
    ("blob", AZURITE_IDENTITY_BLOB_PORT), ("queue", AZURITE_IDENTITY_QUEUE_PORT),
    ("table", AZURITE_IDENTITY_TABLE_PORT))}
# Shared-key access to the same instance, for tests and probes that look at what the app wrote.
AZURITE_IDENTITY_CONNECTION_STRING = (
    f"DefaultEndpointsProtocol=https;AccountName=devstoreaccount1;AccountKey={_DEV_ACCOUNT_KEY};"
    f"BlobEndpoint={AZURITE_IDENTITY_URIS['blob']};QueueEndpoint={AZURITE_IDENTITY_URIS['queue']};"
    f"TableEndpoint={AZURITE_IDENTITY_URIS['table']};")

# --- the fake Azure world ----------------------------------------------------------------------
TENANT_ID = "7a0e4b1c-3f2d-4c5e-9a8b-0c1d2e3f4a5b"
SUB_A = "11111111-1111-4111-8111-111111111111"   # the app's subscription
SUB_B = "22222222-2222-4222-8222-222222222222"   # another subscription of the same tenant


@dataclass(frozen=True)
class AcrSpec:
    name: str
    subscription: str
    resource_group: str
    port: int  # its login server as the stack serves it: the stand-in (/oauth2/*, and /v2/* passed on)

    @property
    def storage_port(self) -> int:
        """The docker-registry behind the login server (ACR's storage): only the stand-in and the stack's
        seeding talk to it directly."""
        return self.port + ACR_STORAGE_PORT_SHIFT

    @property
    def login_server(self) -> str:
        return f"{self.name}.azurecr.io"

    @property
    def resource_id(self) -> str:
        return (f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
                f"/providers/Microsoft.ContainerRegistry/registries/{self.name}")


@dataclass(frozen=True)
class UpstreamSpec:
    """A non-Azure registry; `hosts` are the names requests use for it (mapped to this port)."""

    name: str
    hosts: tuple[str, ...]
    port: int
    auth: str  # "none" | "basic" (htpasswd) | "token" (Bearer challenge, Docker Hub style)
    users: dict[str, str] = field(default_factory=dict)
    anonymous_pull: tuple[str, ...] = ()  # token auth: repository prefixes anyone may pull


ACR_STORAGE_PORT_SHIFT = 10  # login server 5011 -> its docker-registry on 5021
TARGET_ACR = AcrSpec("myregistry", SUB_A, "rg-platform", 5011 + PORT_OFFSET)
SOURCE_ACR = AcrSpec("mysourceregistry", SUB_A, "rg-build", 5012 + PORT_OFFSET)
OTHER_SUB_ACR = AcrSpec("sourceregistry", SUB_B, "rg-other", 5013 + PORT_OFFSET)
ACRS = (TARGET_ACR, SOURCE_ACR, OTHER_SUB_ACR)

DOCKERHUB = UpstreamSpec(
    "dockerhub", ("docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"),
    5001 + PORT_OFFSET, "token", users={"dockeruser": "dockerhub-test-pass-7f3a"},
    anonymous_pull=("library/", "tensorflow/", "bitnami/"),
)
MCR = UpstreamSpec("mcr", ("mcr.microsoft.com",), 5002 + PORT_OFFSET, "none")
PRIVATE = UpstreamSpec("private", ("registry.contoso.com",), 5003 + PORT_OFFSET, "basic",
                       users={"contoso": "contoso-test-pass-91bc"})
UPSTREAMS = (DOCKERHUB, MCR, PRIVATE)


@dataclass(frozen=True)
class Identity:
    """An Entra principal. Managed identities get tokens from the identity endpoint; service
    principals authenticate to ACR data planes with app id + secret."""

    name: str
    client_id: str
    object_id: str
    secret: str | None = None  # service principals only


APP_IDENTITY = Identity("app-system-assigned", "aaaaaaaa-0000-4000-8000-00000000a001",
                        "aaaaaaaa-0000-4000-8000-00000000b001")
USER_ASSIGNED_IDENTITY = Identity("app-user-assigned", "aaaaaaaa-0000-4000-8000-00000000a002",
                                  "aaaaaaaa-0000-4000-8000-00000000b002")
NO_ROLE_IDENTITY = Identity("no-roles", "aaaaaaaa-0000-4000-8000-00000000a003",
                            "aaaaaaaa-0000-4000-8000-00000000b003")
SERVICE_PRINCIPAL = Identity("sp-acr-pull", "aaaaaaaa-0000-4000-8000-00000000a004",
                             "aaaaaaaa-0000-4000-8000-00000000b004", secret="sp-test-secret-5d2e")
IDENTITIES = (APP_IDENTITY, USER_ASSIGNED_IDENTITY, NO_ROLE_IDENTITY, SERVICE_PRINCIPAL)

# The roles infra/main.bicep deploys, by the roleName the template gives them (the stand-in reads their
# actions from infra/modules/roles.bicep): the import role on each target, the source role on each source
# ACR (sourceRegistryIds, which may lie in another subscription). The service principal stands for a
# pull credential a user holds on another team's registry: AcrPull, as the ACR docs ask.
IMPORT_ROLE = "ACR importer: import"
SOURCE_ROLE = "ACR importer: source"
INITIAL_ROLE_ASSIGNMENTS: tuple[tuple[str, str, str], ...] = (
    # (principal object id, role, scope = registry resource id)
    (APP_IDENTITY.object_id, IMPORT_ROLE, TARGET_ACR.resource_id),
    (APP_IDENTITY.object_id, SOURCE_ROLE, SOURCE_ACR.resource_id),
    (APP_IDENTITY.object_id, SOURCE_ROLE, OTHER_SUB_ACR.resource_id),
    (USER_ASSIGNED_IDENTITY.object_id, IMPORT_ROLE, TARGET_ACR.resource_id),
    (USER_ASSIGNED_IDENTITY.object_id, SOURCE_ROLE, SOURCE_ACR.resource_id),
    (SERVICE_PRINCIPAL.object_id, "AcrPull", OTHER_SUB_ACR.resource_id),
)


def acr_login_server_url(acr: AcrSpec) -> str:
    """Where the stack serves an ACR's login server (`<name>.azurecr.io` has no DNS here)."""
    return f"https://{HOST}:{acr.port}"


ACR_DNS_PROXY = f"http://{HOST}:{ACR_DNS_PROXY_PORT}"
"""The stand-in's "DNS" for `*.azurecr.io`: an HTTPS proxy (CONNECT only) that tunnels `<acr>.azurecr.io:443`
to that ACR's loopback login server and refuses every other host. For clients that build a registry's URL
from the login server ARM returns (the Azure CLI's data-plane commands): `HTTPS_PROXY=<this>`,
`NO_PROXY=127.0.0.1,localhost`."""


def acr_for_login_server(host: str) -> AcrSpec | None:
    host = host.lower()
    return next((acr for acr in ACRS if acr.login_server == host), None)


def acr_token_realm(acr: AcrSpec) -> str:
    """The realm of an ACR's challenge: its token service on the login server itself, as ACR's is
    (`https://<login server>/oauth2/token`), never on the ARM host."""
    return f"{acr_login_server_url(acr)}/oauth2/token"


def acr_registry_events_url(acr: AcrSpec) -> str:
    """Where an ACR data plane's docker-registry posts its notifications; the stand-in turns them into
    Event Grid events on the registry's topic, as ACR does."""
    return f"{CONTROL_ENDPOINT}/registry-events/{acr.name}"


def acr_exchange_url(acr: AcrSpec) -> str:
    """Entra access token -> ACR refresh token, on the login server (ACR: https://<login server>/oauth2/exchange)."""
    return f"{acr_login_server_url(acr)}/oauth2/exchange"


DOCKERHUB_TOKEN_REALM = f"https://{HOST}:{DOCKERHUB_TOKEN_PORT}/token"
DOCKERHUB_SERVICE = "registry.docker.io"


def registry_port_for_host(host: str) -> int | None:
    """The loopback port serving a registry host name (upstream or ACR login server), if any."""
    host = host.lower()
    for acr in ACRS:
        if host == acr.login_server:
            return acr.port
    for upstream in UPSTREAMS:
        if host in upstream.hosts:
            return upstream.port
    return None


def registry_endpoints() -> dict[str, str]:
    """Registry host -> loopback endpoint for the app's own reads (setting REGISTRY_ENDPOINTS).

    docker.io goes through the Docker Hub front, so tests can count the app's reads and script 429s
    without touching the imports, which the ACR stand-in copies from the registry itself.
    """
    endpoints = {"docker.io": f"https://{HOST}:{DOCKERHUB_FRONT_PORT}"}
    for upstream in UPSTREAMS:
        endpoints.setdefault(upstream.hosts[0], f"https://{HOST}:{upstream.port}")
    for acr in ACRS:
        endpoints[acr.login_server] = acr_login_server_url(acr)
    return endpoints


def stack_env() -> dict[str, str]:
    """Environment under which the app, SDK clients and CLIs reach the stack instead of Azure."""
    return {
        "REQUESTS_CA_BUNDLE": str(CA_CERT),
        "SSL_CERT_FILE": str(CA_CERT),
        "IDENTITY_ENDPOINT": IDENTITY_ENDPOINT,
        "IDENTITY_HEADER": IDENTITY_HEADER,
        "ARM_ENDPOINT": ARM_ENDPOINT,
        "AzureWebJobsStorage": AZURITE_CONNECTION_STRING,
        "TARGET_REGISTRY": TARGET_ACR.resource_id,
    }
