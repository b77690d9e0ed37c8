"""How an error from ARM, the import operation or the network becomes a Failure with a kind.

The single table of what is worth retrying. Messages are ARM's own (they are what a user searches for),
with known secrets removed by the caller before anything is logged or stored.
"""

from __future__ import annotations

import math
import re
import time
from email.utils import parsedate_to_datetime

from shared.outcome import Failure, Kind

MAX_RETRY_AFTER_SECONDS = 6 * 3600.0  # Docker Hub's rate-limit window; anything longer is a lie or a typo
_DELTA_SECONDS = re.compile(r"\d{1,12}(\.\d{1,6})?")

# The copy failed for a reason that goes away by itself (seen in the wild: registry hiccups, upstream limits).
_TRANSIENT_MESSAGES = re.compile(
    r"error copying blobs|toomanyrequests|too many requests|pull rate limit|rate limit exceeded"
    r"|timeout|timed out|temporarily unavailable|service unavailable|internal server error"
    r"|connection reset|please retry|try again", re.IGNORECASE)
_UPSTREAM_LIMIT = re.compile(r"toomanyrequests|too many requests|pull rate limit", re.IGNORECASE)
_TRANSIENT_CODES = {"TooManyRequests", "ServerBusy", "ServiceUnavailable", "InternalServerError",
                    "GatewayTimeout", "RequestTimeout", "InternalError", "OperationTimedOut"}
AUTHORIZATION_CODES = {"AuthorizationFailed", "LinkedAuthorizationFailed"}


def classify_error(exc: BaseException, *, seconds_since_first_attempt: float,
                   authorization_grace_seconds: float) -> Failure | None:
    """A Failure for errors we understand; None for anything else (left to the host to retry)."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
        ServiceRequestError,
        ServiceResponseError,
    )

    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return Failure(Kind.TRANSIENT, "ConnectionError", f"could not reach Azure Resource Manager: {exc}")
    if isinstance(exc, ClientAuthenticationError) and exc.status_code is None:  # from azure-identity
        return Failure(Kind.TRANSIENT, "IdentityUnavailable", f"managed identity token failed: {exc.message}")
    if not isinstance(exc, HttpResponseError):
        return _identity_failure(exc)
    status = exc.status_code or 0
    code, message = _service_error(exc)
    retry_after = retry_after_of(exc)
    if code in AUTHORIZATION_CODES or status == 403:
        within_grace = seconds_since_first_attempt < authorization_grace_seconds
        note = (" (retrying: a new role assignment can take minutes to apply)" if within_grace else
                f" (still denied after {int(seconds_since_first_attempt)} s; grant importImage/action on the "
                "target, and pull on a source registry named by resource id)")
        return Failure(Kind.TRANSIENT if within_grace else Kind.PERMANENT, code or "AuthorizationFailed",
                       message + note, retry_after)
    if status == 429 or status >= 500 or code in _TRANSIENT_CODES or _TRANSIENT_MESSAGES.search(message):
        if _UPSTREAM_LIMIT.search(message):
            code = code or "UpstreamRateLimited"
        return Failure(Kind.TRANSIENT, code or f"HTTP{status}", message, retry_after)
    if isinstance(exc, ClientAuthenticationError) or status == 401:
        return Failure(Kind.TRANSIENT, code or "Unauthorized", message)
    if isinstance(exc, ResourceNotFoundError):
        return Failure(Kind.PERMANENT, code or "ResourceNotFound", message)
    return Failure(Kind.PERMANENT, code or f"HTTP{status}", message)


def _identity_failure(exc: BaseException) -> Failure | None:
    """azure-identity raises its own errors when the token endpoint is down or misconfigured."""
    if type(exc).__name__ == "CredentialUnavailableError":
        return Failure(Kind.TRANSIENT, "IdentityUnavailable", f"managed identity is not available: {exc}")
    return None


def _service_error(exc) -> tuple[str, str]:
    """ARM's error code and message; the import operation nests the useful one in `details`."""
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None) or ""
    message = getattr(error, "message", None) or ""
    for detail in getattr(error, "details", None) or []:
        if getattr(detail, "message", None):
            message = f"{message} {detail.message}".strip() if detail.message not in message else message
    if not message:
        message = (getattr(exc, "message", None) or str(exc)).split("\n")[0]
    return code, message.strip()


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """`Retry-After` (RFC 9110: delta-seconds or an HTTP-date) as seconds from now, within
    [0, MAX_RETRY_AFTER_SECONDS]; None when absent or not either form. The one parser of it in the app
    (ARM answers and registry answers alike): a server choosing "-1", "1e30", "nan" or a date in
    year 9999 gets the bound, never an exception or a wait of centuries."""
    if value is None:
        return None
    text = value.strip()
    if not text or len(text) > 64:
        return None
    if _DELTA_SECONDS.fullmatch(text):
        return min(float(text), MAX_RETRY_AFTER_SECONDS)
    try:
        when = parsedate_to_datetime(text)
        seconds = when.timestamp() - (time.time() if now is None else now)
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER_SECONDS)


def retry_after_of(exc) -> float | None:
    """`Retry-After` of an Azure SDK error's response, if any."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    return parse_retry_after(headers.get("Retry-After")) if headers is not None else None
