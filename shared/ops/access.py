"""Who may read the operator endpoints, from OPERATOR_SIGN_IN: the host's auth level for /api/ops routes, chosen
once when function_app.py is indexed, and what the app checks itself on each request.

`key`: the host asks for a function key (`code` or `x-functions-key`), as for the machine API. `entra`: App
Service Authentication (Easy Auth) in front of the app signs people in, so the routes are anonymous at the
host, and the app refuses a request that did not come through sign-in: App Service sets
`X-MS-CLIENT-PRINCIPAL-ID` on what it lets through, and "external requests aren't allowed to set these
headers, so they're present only if set by App Service" (learn.microsoft.com, "Work with user identities in
Azure App Service authentication"). The header's presence is the check (defence in depth behind Easy Auth); the
app grants no rights by it. Easy Auth checks the allowed group (the template's `allowedPrincipals.groups`) but
not app roles ("Authorization behavior", same site: the app must check the `roles` claim), so with
OPERATOR_APP_ROLE set the app reads the roles from `X-MS-CLIENT-PRINCIPAL` (Base64 JSON: `claims` of
`{"typ", "val"}`, and `role_typ`, the claim type that holds roles) and answers 403 without the role.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass

from shared.core.outcome import Problem
from shared.core.settings import SIGN_IN_ENTRA, SIGN_IN_KEY, read_settings
from shared.imports.http_api import ApiResponse, errors_body

PRINCIPAL_HEADER = "X-MS-CLIENT-PRINCIPAL-ID"
CLAIMS_HEADER = "X-MS-CLIENT-PRINCIPAL"
ROLE_CLAIM_TYPES = frozenset({"roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"})
MAX_CLAIMS_HEADER = 32 * 1024  # characters read of the header (a token's claims; App Service sets it)
NOSNIFF = {"X-Content-Type-Options": "nosniff"}


@dataclass(frozen=True)
class OperatorAccess:
    mode: str = SIGN_IN_KEY
    app_role: str = ""  # OPERATOR_APP_ROLE: the app role a person needs under `entra` ("" none)

    @property
    def auth_level(self) -> str:
        """The host's auth level for the operator routes (a value of azure.functions.AuthLevel)."""
        return "anonymous" if self.mode == SIGN_IN_ENTRA else "function"

    def refusal(self, headers: Mapping[str, str]) -> ApiResponse | None:
        """401 when sign-in is Entra's and the request did not come through it; None to go on."""
        if self.mode != SIGN_IN_ENTRA:
            return None
        if not _header(headers, PRINCIPAL_HEADER).strip():
            return ApiResponse(401, errors_body([Problem(PRINCIPAL_HEADER, "is missing: sign in through the app's "
                                                                           "App Service Authentication (Entra ID)")]),
                               {**NOSNIFF, "WWW-Authenticate": "Bearer"})
        if self.app_role and self.app_role not in principal_roles(_header(headers, CLAIMS_HEADER)):
            return ApiResponse(403, errors_body([Problem(CLAIMS_HEADER, f"does not carry the app role "
                                                                        f"{self.app_role!r} (OPERATOR_APP_ROLE): "
                                                                        "ask for it to be assigned to you")]),
                               NOSNIFF)
        return None


def _header(headers: Mapping[str, str], name: str) -> str:
    """A header's value whatever its case (frameworks pass them as lowercase or title case)."""
    return next((value for key, value in headers.items() if key.lower() == name.lower()), "")


def principal_roles(encoded: str) -> frozenset[str]:
    """The app roles in an `X-MS-CLIENT-PRINCIPAL` value; none when it is absent or does not decode as App
    Service writes it (so a mangled header grants nothing)."""
    if not encoded or len(encoded) > MAX_CLAIMS_HEADER:
        return frozenset()
    try:
        principal = json.loads(base64.b64decode(encoded.strip(), validate=True))
    except (binascii.Error, ValueError, RecursionError):  # RecursionError: JSON nested deeper than Python reads
        return frozenset()
    if not isinstance(principal, dict) or not isinstance(principal.get("claims"), list):
        return frozenset()
    role_type = principal.get("role_typ")
    types = ROLE_CLAIM_TYPES | ({role_type} if isinstance(role_type, str) else set())
    return frozenset(claim["val"] for claim in principal["claims"]
                     if isinstance(claim, dict) and claim.get("typ") in types and isinstance(claim.get("val"), str))


def operator_access(env: Mapping[str, str] | None = None) -> OperatorAccess:
    """The access OPERATOR_SIGN_IN asks for (`key` when it is wrong: the setting's problem is reported by the
    endpoints, shared/ops/answers.py)."""
    settings = read_settings(env)
    return OperatorAccess(settings.operator_sign_in, settings.operator_app_role)
