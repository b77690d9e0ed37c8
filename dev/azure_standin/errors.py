"""ARM's error envelope, raised as an exception so handlers stay linear."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ArmError(Exception):
    """An answer in ARM's `{"error": {"code", "message"}}` shape with its HTTP status."""

    status: int
    code: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)

    def envelope(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


def authorization_failed(principal_oid: str, client_id: str, action: str, scope: str) -> ArmError:
    """ARM's 403 for a missing role assignment, worded as ARM words it."""
    return ArmError(
        403, "AuthorizationFailed",
        f"The client '{client_id}' with object id '{principal_oid}' does not have authorization to perform "
        f"action '{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, "
        "please refresh your credentials.")


def missing_api_version() -> ArmError:
    return ArmError(400, "MissingApiVersionParameter",
                    "The api-version query parameter (?api-version=) is required for all requests.")


def invalid_parameters(message: str) -> ArmError:
    return ArmError(400, "InvalidParameters", message)
