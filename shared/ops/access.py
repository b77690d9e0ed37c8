"""Who may read the operator endpoints, from OPERATOR_SIGN_IN: the host's auth level for /api/ops routes, chosen
once when function_app.py is indexed, and what the app checks itself on each request.

`key`: the host asks for a function key (`code` or `x-functions-key`), as for the machine API. `entra`: App
Service Authentication (Easy Auth) in front of the app signs people in, so the routes are anonymous at the
host, and the app refuses a request that did not come through sign-in: App Service sets
`X-MS-CLIENT-PRINCIPAL-ID` on what it lets through, and "external requests aren't allowed to set these
headers, so they're present only if set by App Service" (learn.microsoft.com, "Work with user identities in
Azure App Service authentication"). The header's presence is the check (defence in depth behind Easy Auth); the
app grants no rights by it: the allowed group or app role is Easy Auth's to enforce.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shared.core.outcome import Problem
from shared.core.settings import SIGN_IN_ENTRA, SIGN_IN_KEY, read_settings
from shared.imports.http_api import ApiResponse, errors_body

PRINCIPAL_HEADER = "X-MS-CLIENT-PRINCIPAL-ID"
NOSNIFF = {"X-Content-Type-Options": "nosniff"}


@dataclass(frozen=True)
class OperatorAccess:
    mode: str = SIGN_IN_KEY

    @property
    def auth_level(self) -> str:
        """The host's auth level for the operator routes (a value of azure.functions.AuthLevel)."""
        return "anonymous" if self.mode == SIGN_IN_ENTRA else "function"

    def refusal(self, headers: Mapping[str, str]) -> ApiResponse | None:
        """401 when sign-in is Entra's and the request did not come through it; None to go on."""
        if self.mode != SIGN_IN_ENTRA:
            return None
        if any(name.lower() == PRINCIPAL_HEADER.lower() and value.strip() for name, value in headers.items()):
            return None
        return ApiResponse(401, errors_body([Problem(PRINCIPAL_HEADER, "is missing: sign in through the app's "
                                                                       "App Service Authentication (Entra ID)")]),
                           {**NOSNIFF, "WWW-Authenticate": "Bearer"})


def operator_access(env: Mapping[str, str] | None = None) -> OperatorAccess:
    """The access OPERATOR_SIGN_IN asks for (`key` when it is wrong: the setting's problem is reported by the
    endpoints, shared/ops/answers.py)."""
    return OperatorAccess(read_settings(env).operator_sign_in)
