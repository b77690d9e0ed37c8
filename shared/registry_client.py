"""The app's own registry reads: manifest digests (HEAD) and tag lists, for the refresh and `IfChanged`.

A small client on `requests`, written after evaluating the maintained Python OCI clients:
- `oras` (oras-py) targets pushing and pulling artifacts; it keeps one token per client rather than one per
  scope with its expiry, has no ACR `/oauth2/exchange` flow and does not expose rate-limit headers.
- `python-dxf` is one object per repository with its own token and no expiry tracking, cannot exchange an
  Entra token for an ACR refresh token, and pulls in `www-authenticate` and `jwcrypto` for what is a
  regular expression and a base64 decode here.
What the refresh needs is narrow (HEAD with the full Accept list, tag lists with `Link` pages, Basic and
Bearer challenges with tokens cached per scope until expiry, ACR's Entra exchange, Docker Hub's rate-limit
headers, one pooled session shared by threads), so owning ~300 lines costs less than adapting either.

Every registry host is probed once (`GET /v2/`) to learn its challenge, so each later read is sent
authorised the first time: one HEAD per tag, never a 401 round trip.
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urljoin

if TYPE_CHECKING:  # requests is imported on first use: a cold start that only rejects never pays for it
    import requests

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))
DOCKER_HUB = "docker.io"
DOCKER_HUB_ENDPOINT = "https://registry-1.docker.io"
ACR_TOKEN_SCOPE = "https://containerregistry.azure.net/.default"
DEFAULT_TOKEN_SECONDS = 60  # the distribution token spec's default when `expires_in` is absent
EXPIRY_MARGIN_SECONDS = 10
USER_AGENT = "acr-importer"


class RegistryError(Exception):
    """A registry or its token service refused or failed a read. Messages never carry a credential."""

    def __init__(self, host: str, status: int, code: str, message: str, retry_after: float | None = None):
        super().__init__(f"{host}: {code}: {message}" if code else f"{host}: {message}")
        self.host = host
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


class RateLimited(RegistryError):
    """HTTP 429: the caller should leave this registry alone for `retry_after` seconds."""


@dataclass(frozen=True)
class ManifestHead:
    digest: str
    media_type: str
    size: int


@dataclass(frozen=True)
class RateLimit:
    """Docker Hub's `ratelimit-limit` / `ratelimit-remaining` (`100;w=21600`), as last seen."""

    limit: int | None
    remaining: int | None


@dataclass(frozen=True, repr=False)
class BasicAuth:
    """Username and password (or token); sent to a Basic registry or to a Bearer realm. No username: the
    password is a registry token and is sent as it is."""

    username: str | None
    password: str

    def __repr__(self) -> str:
        return f"BasicAuth(username={self.username!r}, password='***')"


@dataclass(frozen=True, repr=False)
class IdentityAuth:
    """The app's Entra identity, for ACR: Entra token -> `/oauth2/exchange` -> `/oauth2/token`."""

    credential: Any  # azure.core.credentials.TokenCredential

    def __repr__(self) -> str:
        return "IdentityAuth()"


Auth = BasicAuth | IdentityAuth | None


@dataclass(frozen=True)
class _Challenge:
    scheme: str  # "none" | "basic" | "bearer"
    realm: str = ""
    service: str = ""


@dataclass
class _Token:
    value: str
    expires: float


def parse_endpoints(text: str | None) -> dict[str, str]:
    """`docker.io=https://10.0.0.5:443,mcr.microsoft.com=https://...` -> {host: base URL}."""
    endpoints = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        host, sep, url = part.partition("=")
        if not sep or not host.strip() or not url.strip().startswith(("https://", "http://")):
            raise ValueError(f"{part.strip()!r} is not host=https://endpoint")
        endpoints[host.strip().lower()] = url.strip().rstrip("/")
    return endpoints


def endpoint_for(host: str, overrides: Mapping[str, str] | None = None) -> str:
    """Where a registry host is served: an override, Docker Hub's API host, else https://host."""
    host = host.lower()
    if overrides and host in overrides:
        return overrides[host]
    return DOCKER_HUB_ENDPOINT if host == DOCKER_HUB else f"https://{host}"


def exchange_url(realm: str) -> str:
    """ACR's exchange endpoint beside its token endpoint (`.../oauth2/token` -> `.../oauth2/exchange`)."""
    base, sep, _ = realm.rstrip("/").rpartition("/oauth2/token")
    if not sep:
        raise ValueError(f"{realm!r} is not an ACR token endpoint (…/oauth2/token)")
    return f"{base}/oauth2/exchange"


def parse_challenge(header: str) -> _Challenge | None:
    scheme, _, rest = header.strip().partition(" ")
    scheme = scheme.lower()
    if scheme not in ("basic", "bearer"):
        return None
    params = {k.lower(): v for k, v in re.findall(r'(\w+)="([^"]*)"', rest)}
    return _Challenge(scheme, params.get("realm", ""), params.get("service", ""))


def parse_rate_limit(headers: Mapping[str, str]) -> RateLimit | None:
    def number(name: str) -> int | None:
        match = re.match(r"\s*(\d+)", headers.get(name, ""))
        return int(match.group(1)) if match else None

    limit, remaining = number("ratelimit-limit"), number("ratelimit-remaining")
    return None if limit is None and remaining is None else RateLimit(limit, remaining)


def retry_after_seconds(value: str | None) -> float | None:
    """`Retry-After` as seconds (delta or HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def jwt_expiry(token: str) -> float | None:
    """`exp` of a JWT, read without verifying (the registry verifies; we only schedule a refresh)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return None


def _next_link(response: requests.Response) -> str | None:
    match = re.search(r'<([^>]+)>\s*;\s*rel="?next"?', response.headers.get("Link", ""))
    return urljoin(response.url, match.group(1)) if match else None


def _auth_key(auth: Auth) -> str:
    if auth is None:
        return "anonymous"
    if isinstance(auth, IdentityAuth):
        return f"identity:{id(auth.credential)}"
    return f"basic:{auth.username}:{hash(auth.password)}"


@dataclass
class RegistryClient:
    """Reads from any number of registries through one pooled session; safe to share between threads."""

    endpoints: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 20.0
    pool_size: int = 32
    session: requests.Session | None = None
    clock: Callable[[], float] = time.time
    requests_sent: Counter = field(default_factory=Counter, init=False)  # (host, method, kind) -> count

    def __post_init__(self) -> None:
        if self.session is None:
            import requests
            from requests.adapters import HTTPAdapter

            self.session = requests.Session()
            adapter = HTTPAdapter(pool_connections=16, pool_maxsize=self.pool_size)
            self.session.mount("https://", adapter)
            self.session.mount("http://", adapter)
            self.session.headers["User-Agent"] = USER_AGENT
            # Environment lookups once, not per request: requests re-reads os.environ for proxies and CA
            # bundles on every call, which cost more CPU than the HEAD itself (measured, see benchmarks).
            self.session.trust_env = False
            self.session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        self._proxies: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        self._key_locks: dict[Any, threading.Lock] = {}
        self._challenges: dict[str, _Challenge] = {}
        self._tokens: dict[Any, _Token] = {}
        self._rate_limits: dict[str, RateLimit] = {}

    # --- what callers use -------------------------------------------------------------------------
    def head_manifest(self, host: str, repository: str, reference: str, auth: Auth = None) -> ManifestHead | None:
        """Digest, media type and size of a manifest by tag or digest; None when it does not exist."""
        url = f"{self._base(host)}/v2/{repository}/manifests/{reference}"
        response = self._send("HEAD", host, url, repository, auth, {"Accept": MANIFEST_ACCEPT}, kind="manifest")
        if response.status_code == 404:
            return None
        self._raise_for(host, response, f"HEAD {repository}:{reference}")
        digest = response.headers.get("Docker-Content-Digest", "")
        if not digest:
            raise RegistryError(host, response.status_code, "NO_DIGEST",
                                f"HEAD {repository}:{reference} answered without Docker-Content-Digest")
        return ManifestHead(digest, response.headers.get("Content-Type", "").split(";")[0].strip(),
                            int(response.headers.get("Content-Length") or 0))

    def platforms(self, host: str, repository: str, reference: str, auth: Auth = None) -> list[str] | None:
        """The platforms of an index (`os/arch[/variant]`, attestations left out), or [] for a single
        manifest; None when it does not exist. One GET: meant for our own target, not for Docker Hub."""
        url = f"{self._base(host)}/v2/{repository}/manifests/{reference}"
        response = self._send("GET", host, url, repository, auth, {"Accept": MANIFEST_ACCEPT}, kind="manifest")
        if response.status_code == 404:
            return None
        self._raise_for(host, response, f"GET {repository}:{reference}")
        document = response.json() or {}
        found = []
        for entry in document.get("manifests") or []:
            platform = entry.get("platform") or {}
            if platform.get("os", "unknown") != "unknown":
                found.append("/".join(p for p in (platform.get("os"), platform.get("architecture"),
                                                  platform.get("variant")) if p))
        return found

    def list_tags(self, host: str, repository: str, auth: Auth = None, *, page_size: int = 1000) -> list[str]:
        """Every tag of a repository, following `Link` pages. A missing repository has no tags."""
        url: str | None = f"{self._base(host)}/v2/{repository}/tags/list?n={page_size}"
        tags: list[str] = []
        while url:
            response = self._send("GET", host, url, repository, auth, {"Accept": "application/json"}, kind="tags")
            if response.status_code == 404:
                return tags
            self._raise_for(host, response, f"list tags of {repository}")
            tags.extend((response.json() or {}).get("tags") or [])
            url = _next_link(response)
        return tags

    def rate_limit(self, host: str) -> RateLimit | None:
        return self._rate_limits.get(host.lower())

    # --- requests -----------------------------------------------------------------------------------
    def _base(self, host: str) -> str:
        return endpoint_for(host, self.endpoints)

    def _send(self, method: str, host: str, url: str, repository: str, auth: Auth, headers: dict[str, str], *,
              kind: str) -> requests.Response:
        challenge = self._challenge(host)
        for attempt in (1, 2):
            sent = {**headers, **self._authorization(host, challenge, repository, auth, renew=attempt == 2)}
            response = self._http(method, host, url, sent, kind=kind)
            if response.status_code != 401 or attempt == 2:
                return response
            fresh = parse_challenge(response.headers.get("WWW-Authenticate", ""))
            if fresh is None:
                return response
            challenge = fresh
            with self._lock:
                self._challenges[host.lower()] = fresh
        raise AssertionError("unreachable")

    def _http(self, method: str, host: str, url: str, headers: dict[str, str], *, kind: str,
              data: Mapping[str, str] | None = None, auth: tuple[str, str] | None = None) -> requests.Response:
        with self._lock:
            self.requests_sent[(host.lower(), method, kind)] += 1
        from requests import RequestException

        try:
            response = self.session.request(method, url, headers=headers, data=data, auth=auth,
                                            timeout=self.timeout, allow_redirects=True,
                                            proxies=self._proxies_for(url))
        except RequestException as exc:
            raise RegistryError(host, 0, "CONNECTION", f"{method} {url.split('?')[0]} failed: "
                                                       f"{type(exc).__name__}") from None
        limit = parse_rate_limit(response.headers)
        if limit is not None:
            with self._lock:
                self._rate_limits[host.lower()] = limit
        if response.status_code == 429:
            raise RateLimited(host, 429, "TOOMANYREQUESTS", f"{method} {kind}: rate limited",
                              retry_after_seconds(response.headers.get("Retry-After")))
        return response

    def _proxies_for(self, url: str) -> dict[str, str]:
        """HTTP(S)_PROXY / NO_PROXY for this URL's host, read from the environment once per host."""
        origin = url.split("/", 3)[2] if "://" in url else url
        found = self._proxies.get(origin)
        if found is None:
            from requests.utils import get_environ_proxies

            found = get_environ_proxies(url)
            self._proxies[origin] = found
        return found

    def _raise_for(self, host: str, response: requests.Response, what: str) -> None:
        if response.status_code < 400:
            return
        code, message = "", response.reason or f"HTTP {response.status_code}"
        try:
            errors = response.json().get("errors") or []
            if errors:
                code, message = errors[0].get("code", ""), errors[0].get("message", message)
        except (ValueError, AttributeError):
            pass
        code = code or {401: "UNAUTHORIZED", 403: "DENIED", 404: "NOT_FOUND"}.get(response.status_code,
                                                                                   f"HTTP{response.status_code}")
        raise RegistryError(host, response.status_code, code, f"{what}: {message}")

    def _challenge(self, host: str) -> _Challenge:
        """What `GET /v2/` asks for, learned once per host (under a per-host lock: one probe)."""
        key = host.lower()
        with self._lock:
            known = self._challenges.get(key)
            lock = self._key_locks.setdefault(("probe", key), threading.Lock())
        if known:
            return known
        with lock:
            with self._lock:
                known = self._challenges.get(key)
            if known:
                return known
            response = self._http("GET", host, f"{self._base(host)}/v2/", {}, kind="base")
            found = parse_challenge(response.headers.get("WWW-Authenticate", "")) if response.status_code == 401 \
                else None
            if response.status_code not in (200, 401):
                self._raise_for(host, response, "GET /v2/")
            challenge = found or _Challenge("none")
            with self._lock:
                self._challenges[key] = challenge
            return challenge

    # --- authorisation ----------------------------------------------------------------------------
    def _authorization(self, host: str, challenge: _Challenge, repository: str, auth: Auth, *,
                       renew: bool) -> dict[str, str]:
        if challenge.scheme == "none":
            return {}
        if challenge.scheme == "basic":
            if isinstance(auth, BasicAuth):
                user = auth.username or ""
                return {"Authorization": "Basic " + base64.b64encode(f"{user}:{auth.password}".encode()).decode()}
            return {}
        if isinstance(auth, BasicAuth) and auth.username is None:
            return {"Authorization": f"Bearer {auth.password}"}
        scope = f"repository:{repository}:pull"
        token = self._token(host, challenge, scope, auth, renew=renew)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _token(self, host: str, challenge: _Challenge, scope: str, auth: Auth, *, renew: bool) -> str:
        """A registry token for one scope, cached until shortly before it expires."""
        key = (host.lower(), challenge.realm, challenge.service, scope, _auth_key(auth))
        with self._lock:
            lock = self._key_locks.setdefault(key, threading.Lock())
        with lock:
            with self._lock:
                cached = self._tokens.get(key)
            if cached and not renew and cached.expires > self.clock() + EXPIRY_MARGIN_SECONDS:
                return cached.value
            if isinstance(auth, IdentityAuth):
                token = self._acr_token(host, challenge, scope, auth, renew=renew)
            else:
                token = self._realm_token(host, challenge, scope, auth)
            with self._lock:
                self._tokens[key] = token
            return token.value

    def _realm_token(self, host: str, challenge: _Challenge, scope: str, auth: BasicAuth | None) -> _Token:
        params = {"service": challenge.service, "scope": scope} if challenge.service else {"scope": scope}
        query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
        basic = (auth.username or "", auth.password) if isinstance(auth, BasicAuth) else None
        response = self._http("GET", host, f"{challenge.realm}?{query}", {}, kind="token", auth=basic)
        self._raise_for(host, response, "token")
        body = response.json()
        value = body.get("token") or body.get("access_token") or ""
        return _Token(value, self._expiry(value, body.get("expires_in")))

    def _acr_token(self, host: str, challenge: _Challenge, scope: str, auth: IdentityAuth, *, renew: bool) -> _Token:
        refresh = self._acr_refresh_token(host, challenge, auth, renew=renew)
        response = self._http("POST", host, challenge.realm, {}, kind="token", data={
            "grant_type": "refresh_token", "service": challenge.service, "scope": scope, "refresh_token": refresh})
        self._raise_for(host, response, "ACR token")
        body = response.json()
        value = body.get("access_token") or ""
        return _Token(value, self._expiry(value, body.get("expires_in")))

    def _acr_refresh_token(self, host: str, challenge: _Challenge, auth: IdentityAuth, *, renew: bool) -> str:
        key = (host.lower(), "exchange", challenge.realm, _auth_key(auth))
        with self._lock:
            cached = self._tokens.get(key)
        if cached and not renew and cached.expires > self.clock() + EXPIRY_MARGIN_SECONDS:
            return cached.value
        entra = auth.credential.get_token(ACR_TOKEN_SCOPE).token
        response = self._http("POST", host, exchange_url(challenge.realm), {}, kind="token", data={
            "grant_type": "access_token", "service": challenge.service, "access_token": entra})
        self._raise_for(host, response, "ACR token exchange")
        value = response.json().get("refresh_token") or ""
        token = _Token(value, self._expiry(value, None, default=3600))
        with self._lock:
            self._tokens[key] = token
        return value

    def _expiry(self, token: str, expires_in: Any, *, default: float = DEFAULT_TOKEN_SECONDS) -> float:
        if isinstance(expires_in, int | float) and expires_in > 0:
            return self.clock() + float(expires_in)
        return jwt_expiry(token) or self.clock() + default


class LazyCredential:
    """A TokenCredential built on first use, so creating a client costs no Azure SDK import."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._credential = None
        self._lock = threading.Lock()

    def get_token(self, *scopes: str, **kwargs: Any):
        with self._lock:
            if self._credential is None:
                self._credential = self._factory()
        return self._credential.get_token(*scopes, **kwargs)


def source_auth(host: str, username: str | None, password: str | None, identity: IdentityAuth,
                acr_suffix: str) -> Auth:
    """How the app reads a source: its credential set when it has one, its identity on an ACR, else anonymous."""
    if password:
        return BasicAuth(username, password)
    if host.lower().endswith(f".{acr_suffix}"):
        return identity
    return None
