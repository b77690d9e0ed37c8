"""How an error from ARM, the import operation or the network becomes a Failure with a kind.

The single table of what is worth retrying. Messages are ARM's own (they are what a user searches for),
with known secrets removed by the caller before anything is logged or stored.
"""

from __future__ import annotations

import math
import re
import ssl
import time
from email.utils import parsedate_to_datetime

from shared.core.outcome import Failure, Kind

# The Azure SDK is imported inside the functions that use it, on purpose: it costs about half a second of
# every cold start (docs/benchmarks.md), and a message that is refused at once never needs it.

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
                   authorization_grace_seconds: float, target: str | None = None) -> Failure | None:
    """A Failure for errors we understand; None for anything else (left to the host to retry).

    Configuration that cannot work (no identity, an untrusted certificate, a registry that does not exist)
    is permanent at once, its message naming what is wrong and how to fix it: retrying it for minutes only
    hides the reason. `target` (the request's registry resource id) is named in a not-found message."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
        ServiceRequestError,
        ServiceResponseError,
    )

    if (configuration := configuration_failure(exc)) is not None:
        return configuration
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return Failure(Kind.TRANSIENT, "ConnectionError", f"could not reach Azure Resource Manager: {exc}")
    if isinstance(exc, ClientAuthenticationError) and exc.status_code is None:  # from azure-identity
        return Failure(Kind.TRANSIENT, "IdentityUnavailable", f"managed identity token failed: {exc.message}")
    if not isinstance(exc, HttpResponseError):
        return None
    status = exc.status_code or 0
    code, message = _service_error(exc)
    retry_after = retry_after_of(exc)
    if code in AUTHORIZATION_CODES or status == 403:
        within_grace = seconds_since_first_attempt < authorization_grace_seconds
        note = (f" (likely transient: a new role assignment can take minutes to apply; retrying for up to "
                f"AUTHORIZATION_GRACE_SECONDS={authorization_grace_seconds:g} s)" if within_grace else
                f" (likely configuration: still denied after {int(seconds_since_first_attempt)} s; grant "
                "importImage/action on the target, and pull on a source registry named by resource id)")
        return Failure(Kind.TRANSIENT if within_grace else Kind.PERMANENT, code or "AuthorizationFailed",
                       message + note, retry_after)
    if status == 429 or status >= 500 or code in _TRANSIENT_CODES or _TRANSIENT_MESSAGES.search(message):
        if _UPSTREAM_LIMIT.search(message):
            code = code or "UpstreamRateLimited"
        return Failure(Kind.TRANSIENT, code or f"HTTP{status}", message, retry_after)
    if isinstance(exc, ClientAuthenticationError) or status == 401:
        return Failure(Kind.TRANSIENT, code or "Unauthorized", message)
    if code in _MISSING_TARGET_CODES or (status == 404 and not code):
        return Failure(Kind.PERMANENT, code or "ResourceNotFound", f"{message} ({_missing_hint(message, target)})")
    if isinstance(exc, ResourceNotFoundError):
        return Failure(Kind.PERMANENT, code or "ResourceNotFound", message)
    return Failure(Kind.PERMANENT, code or f"HTTP{status}", message)


def _missing_hint(message: str, target: str | None) -> str:
    """Which registry is missing, when ARM's message names the target's; how to check it either way."""
    name = target.rstrip("/").rsplit("/", 1)[-1] if target else ""
    if (name and f"/{name.lower()}'" in message.lower()) or (target and target.lower() in message.lower()):
        what = f"the target registry {target} does not exist"
    else:
        what = "a registry the import names does not exist" + (f" (the target is {target})" if target else "")
    return (f"configuration, not transient: {what}; check the subscription, resource group and registry name in "
            "the request's `target` (or the TARGET_REGISTRY setting) and in a source given by resource id, "
            "e.g. with `az acr show --ids <id>`")


_MISSING_TARGET_CODES = {"ResourceNotFound", "ResourceGroupNotFound", "SubscriptionNotFound"}
NO_IDENTITY_HINT = ("set AZURE_CLIENT_ID to a user-assigned identity assigned to the app, or enable its "
                    "system-assigned identity (locally: IDENTITY_ENDPOINT and IDENTITY_HEADER of the stack)")
TLS_HINT = ("trust the CA that signed it (REQUESTS_CA_BUNDLE or SSL_CERT_FILE naming a PEM bundle; locally the "
            "stack's CA) or fix the endpoint setting (ARM_ENDPOINT, IDENTITY_ENDPOINT)")


class IdentityUnreachable(Exception):
    """The managed identity endpoint the app is configured with does not answer at all (connection refused,
    unknown host): raised by shared/azure/arm.py's credential, which alone knows the call was for a token."""

    def __init__(self, endpoint: str, cause: BaseException) -> None:
        super().__init__(f"the managed identity endpoint {endpoint} did not answer: {_first_line(cause)}")
        self.endpoint = endpoint


def configuration_failure(exc: BaseException) -> Failure | None:
    """A permanent Failure, with the fix, for errors that mean the app's configuration cannot work; None for
    anything else. The one place these are told apart from transient errors (the queue worker and the
    refresh both ask)."""
    if (verify := _certificate_error(exc)) is not None:
        return Failure(Kind.PERMANENT, "TlsVerificationFailed",
                       f"TLS certificate verification failed ({verify}); configuration, not transient: {TLS_HINT}")
    if isinstance(exc, IdentityUnreachable):
        return Failure(Kind.PERMANENT, "IdentityUnavailable",
                       f"{exc}; configuration, not transient: check IDENTITY_ENDPOINT (or MSI_ENDPOINT) or "
                       f"unset it to use the platform's identity; {NO_IDENTITY_HINT}")
    if type(exc).__name__ == "CredentialUnavailableError":  # azure-identity: no identity configured at all
        return Failure(Kind.PERMANENT, "IdentityUnavailable",
                       f"no managed identity is available to the app ({_first_line(exc)}); configuration, not "
                       f"transient: {NO_IDENTITY_HINT}")
    return None


def _certificate_error(exc: BaseException) -> str | None:
    """The verification error somewhere in `exc`'s chain (azure-core wraps requests, which wraps urllib3,
    which wraps ssl), as ssl words it; None when the chain holds none."""
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        current = todo.pop()
        if not isinstance(current, BaseException) or id(current) in seen or len(seen) > 32:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return current.verify_message or _first_line(current)
        todo.extend([current.__cause__, current.__context__, getattr(current, "inner_exception", None),
                     getattr(current, "reason", None), *current.args])
    return None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _service_error(exc: BaseException) -> tuple[str, str]:
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


def ascii_count(text: str) -> bool:
    """Whether a header's value is a plain count: ASCII digits only. `str.isdigit` alone also takes '²' (which
    `int` then refuses with ValueError) and other scripts' digits ('٣', '５', which `int` reads): a server
    choosing such a Content-Length or rate-limit header must meet a refusal, not a crash."""
    return text.isascii() and text.isdigit()


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


def retry_after_of(exc: BaseException) -> float | None:
    """`Retry-After` of an Azure SDK error's response, if any."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    return parse_retry_after(headers.get("Retry-After")) if headers is not None else None
