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


def linked_authorization_failed(principal_oid: str, client_id: str, action: str, scope: str,
                                linked_action: str, linked_scope: str) -> ArmError:
    """ARM's 403 when the caller may act on the resource but not on a resource the request links to
    (for importImage: a source registry given by resource id). Wording as ARM answers it (seen in
    azure-docs issue #33442 for importImage, and for other linked checks in many public issues)."""
    return ArmError(
        403, "LinkedAuthorizationFailed",
        f"The client '{client_id}' with object id '{principal_oid}' has permission to perform action "
        f"'{action}' on scope '{scope}'; however, it does not have permission to perform action "
        f"'{linked_action}' on the linked scope(s) '{linked_scope}' or the linked scope(s) are invalid.")


def missing_api_version() -> ArmError:
    return ArmError(400, "MissingApiVersionParameter",
                    "The api-version query parameter (?api-version=) is required for all requests.")


def invalid_parameters(message: str) -> ArmError:
    return ArmError(400, "InvalidParameters", message)
