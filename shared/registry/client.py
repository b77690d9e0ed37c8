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

Registries are untrusted (dev/hostile_registry.py plays every kind of bad one in the tests). Each public
call has one wall-clock deadline, kept on every TLS read (requests' own timeout is per read, so a server
dripping a byte at a time would hold it forever); answers are read whole but within MAX_* bounds before
anything is parsed; redirects and `Link` pages are followed on the same origin only. A manifest redirected
to another host is an error, not a request without credentials: storage answers carry no
Docker-Content-Digest, so following would only let a registry point the app's requests anywhere.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import math
import os
import re
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urljoin, urlsplit

from shared.azure.transport import NetworkSettings, read_network
from shared.core.failures import ascii_count, parse_retry_after
from shared.core.policy import USERNAME_RULE
from shared.core.redact import Password
from shared.core.reference import DOCKER_HUB, DOCKER_HUB_API_HOST

if TYPE_CHECKING:  # requests is imported on first use: a cold start that only rejects never pays for it
    import requests
    from azure.core.credentials import AccessToken, TokenCredential
    from urllib3 import PoolManager

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))
DOCKER_HUB_ENDPOINT = f"https://{DOCKER_HUB_API_HOST}"
ACR_TOKEN_SCOPE = "https://containerregistry.azure.net/.default"
DEFAULT_TOKEN_SECONDS = 60  # the distribution token spec's default when `expires_in` is absent
EXPIRY_MARGIN_SECONDS = 10
USER_AGENT = "acr-importer"

# What a registry may send us. Registries are untrusted: every answer is read against these bounds, and
# anything beyond them is a RegistryError for that one read (never an exception, never an endless read).
MAX_BODY_BYTES = 4 << 20        # one answer's body (OCI: registries should accept manifests up to 4 MiB)
MAX_HEADER_BYTES = 64 << 10     # one answer's headers, names and values together
MAX_REDIRECTS = 5               # same-origin hops; a cross-origin redirect is never followed
MAX_TAG_PAGES = 500             # one tag listing: pages ...
MAX_TAGS = 50_000               # ... tags ...
MAX_LISTING_BYTES = 16 << 20    # ... and bytes, over all its pages
MAX_REFERRER_PAGES = 20        # one referrers listing: pages ...
MAX_DESCRIPTORS = 10_000        # ... and entries of an index (a referrers listing over all its pages)
NO_REFERRERS_API = (404, 405, 501)  # the OCI 1.1 spec: a registry without the API answers 404 (others 405/501)
MAX_TOKEN_SECONDS = 3 * 3600    # a token is reused at most this long, whatever `expires_in` says
MAX_TOKEN_LENGTH = 16 << 10
CONNECT_TIMEOUT = 10.0
MESSAGE_LIMIT = 200             # characters of a registry's own text kept in an error message
_CHUNK = 64 << 10
NO_USERNAME_MESSAGE = ("the registry asks for credentials and the credential set has no username: "
                       f"{USERNAME_RULE}")
_REDIRECTS = (301, 302, 303, 307, 308)
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}")
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][\w.+-]{0,126}/[A-Za-z0-9][\w.+-]{0,126}", re.ASCII)  # RFC 6838
_TOKEN_VALUE = re.compile(rf"[\x21-\x7e]{{1,{MAX_TOKEN_LENGTH}}}")
_SIZE = re.compile(r"\d{1,15}")


class RegistryError(Exception):
    """A registry or its token service refused or failed a read, or answered something the distribution
    spec does not allow. Messages never carry a credential; a registry's own text in them is cut to
    MESSAGE_LIMIT printable characters."""

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
class Descriptor:
    """One entry of an image index (a platform of an image, or a referrer), as read and checked."""

    digest: str
    media_type: str
    artifact_type: str  # "" when the entry names none


@dataclass(frozen=True)
class RateLimit:
    """Docker Hub's `ratelimit-limit` / `ratelimit-remaining` (`100;w=21600`), as last seen."""

    limit: int | None
    remaining: int | None


@dataclass(frozen=True)
class BasicAuth:
    """Username and password (or token); sent to a Basic registry or to a Bearer realm, always together.
    Registries take a password or access token only with the user it belongs to (Docker Hub: the account
    with a personal access token; ACR: the token's name or a service principal's app id), so a credential
    without a username is never sent: it is a RegistryError naming the rule (NO_USERNAME)."""

    username: str | None
    password: Password


@dataclass(frozen=True, repr=False)
class IdentityAuth:
    """The app's Entra identity, for ACR: Entra token -> `/oauth2/exchange` -> `/oauth2/token`."""

    credential: TokenCredential

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


@dataclass(frozen=True)
class _Answer:
    """One answer, read completely within the bounds (headers checked, body at most `limit` bytes)."""

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes
    url: str


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


def origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL, the unit credentials are scoped to; None if it is not one."""
    try:
        parts = urlsplit(url)
        scheme, host, port = parts.scheme.lower(), (parts.hostname or "").lower(), parts.port
    except ValueError:
        return None
    if scheme not in ("https", "http") or not host:
        return None
    return scheme, host, port or (443 if scheme == "https" else 80)


def _origin_text(url: str) -> str:
    found = origin(url)
    return _clean(f"{found[0]}://{found[1]}:{found[2]}" if found else url, 120)


def _is_ip(host: str) -> bool:
    return bool(re.fullmatch(r"[0-9.]+|\[?[0-9a-f]*:[0-9a-f:.]*\]?", host))


def same_site(host: str, other: str) -> bool:
    """Whether a token realm on `other` may receive the credential set of the registry on `host`: the same
    host, or the same parent domain (registry-1.docker.io and auth.docker.io). IP addresses only match
    themselves."""
    host, other = host.lower(), other.lower()
    if host == other:
        return True
    if _is_ip(host) or _is_ip(other):
        return False
    a, b = host.split("."), other.split(".")
    return len(a) >= 2 and len(b) >= 2 and a[-2:] == b[-2:]


def _clean(text: Any, limit: int = MESSAGE_LIMIT) -> str:
    """A registry's text made safe to log, store and print: printable characters only, at most `limit`."""
    text = str(text)
    cut = "".join(c if c.isprintable() else "?" for c in text[:limit])
    return cut + "…" if len(text) > limit else cut


def parse_challenge(header: str) -> _Challenge | None:
    scheme, _, rest = header.strip().partition(" ")
    scheme = scheme.lower()
    if scheme not in ("basic", "bearer"):
        return None
    params = {k.lower(): v for k, v in re.findall(r'(\w+)="([^"]*)"', rest)}
    return _Challenge(scheme, params.get("realm", ""), params.get("service", ""))


def parse_rate_limit(headers: Mapping[str, str]) -> RateLimit | None:
    def number(name: str) -> int | None:
        match = re.match(r"\s*(\d{1,9})(?!\d)", headers.get(name, "")[:64])
        return int(match.group(1)) if match else None

    limit, remaining = number("ratelimit-limit"), number("ratelimit-remaining")
    return None if limit is None and remaining is None else RateLimit(limit, remaining)


def jwt_expiry(token: str) -> float | None:
    """`exp` of a JWT, read without verifying (the registry verifies; we only schedule a refresh)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        exp = float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError, OverflowError, RecursionError):
        return None
    return exp if math.isfinite(exp) else None


def _auth_key(auth: Auth) -> str:
    if auth is None:
        return "anonymous"
    if isinstance(auth, IdentityAuth):
        return f"identity:{id(auth.credential)}"
    return f"basic:{auth.username}:{hash(auth.password.reveal())}"


# --- one deadline per call ---------------------------------------------------------------------------
_local = threading.local()


@contextmanager
def deadline_scope(deadline: float | None) -> Iterator[None]:
    """Every registry call this thread makes inside the block ends by `deadline` (a `time.monotonic()`
    value) at the latest, on top of the client's own per-call timeout: how the refresh keeps every read
    inside its time budget."""
    previous = getattr(_local, "scope", None)
    if deadline is not None:
        _local.scope = deadline if previous is None else min(previous, deadline)
    try:
        yield
    finally:
        _local.scope = previous


def _current_deadline() -> float | None:
    return getattr(_local, "deadline", None)


class _DeadlineSSLSocket(ssl.SSLSocket):
    """A TLS socket whose every read waits at most until the calling thread's call deadline.

    requests' timeout bounds each socket read, so a server dripping one byte a second (headers or body)
    would hold a call forever; setting the socket timeout to what is left before each read bounds the call
    as a whole, headers included, with no watchdog thread. Outside a registry call it behaves as usual."""

    def _bound(self) -> None:
        deadline = _current_deadline()
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the call's deadline passed")
            self.settimeout(remaining)

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        self._bound()
        return super().recv(buflen, flags)

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:  # Any: as ssl's own stub
        self._bound()
        return super().recv_into(buffer, nbytes, flags)


def _ca_bundle_context(bundle: str | None) -> ssl.SSLContext:
    """The TLS context of the client: the CA bundle requests would use (REQUESTS_CA_BUNDLE, else certifi; read
    once, shared/azure/transport.py), with sockets that keep the call's deadline."""
    if not bundle:
        import certifi

        bundle = certifi.where()
    context = (ssl.create_default_context(capath=bundle) if os.path.isdir(bundle)
               else ssl.create_default_context(cafile=bundle))
    context.sslsocket_class = _DeadlineSSLSocket
    return context


def _new_session(pool_size: int, network: NetworkSettings) -> requests.Session:
    from http.cookiejar import DefaultCookiePolicy

    import requests
    from requests.adapters import HTTPAdapter

    context = _ca_bundle_context(network.ca_bundle)

    class _Adapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **{**kwargs, "ssl_context": context})

        def proxy_manager_for(self, proxy: str, **kwargs: Any) -> PoolManager:
            manager: PoolManager = super().proxy_manager_for(proxy, **{**kwargs, "ssl_context": context})
            return manager

    session = requests.Session()
    adapter = _Adapter(pool_connections=16, pool_maxsize=pool_size)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    session.headers["Accept-Encoding"] = "identity"
    # Environment lookups once, not per request: requests re-reads os.environ for proxies and CA bundles on
    # every call, which cost more CPU than the HEAD itself (measured, see benchmarks). The proxies are given
    # with each call (`RegistryClient._exchange`), from settings read when the client was built.
    session.trust_env = False
    session.verify = True  # against the context's bundle
    session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))  # a registry cannot plant cookies
    return session


@dataclass
class RegistryClient:
    """Reads from any number of registries through one pooled session; safe to share between threads.

    Every public call has one deadline (`timeout`, `listing_timeout` for a tag listing, and no later than
    an enclosing `deadline_scope`), reads at most the MAX_* bounds, follows redirects and `Link` pages only
    on the origin it started from, sends tokens only over https and the app's Entra token only to the
    registry's own host, and turns every answer outside the distribution spec into a RegistryError."""

    endpoints: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 20.0           # seconds for one call, all its requests (probe, token, redirects) together
    listing_timeout: float = 60.0   # seconds for one tag listing, all its pages together
    pool_size: int = 32
    session: requests.Session | None = None
    network: NetworkSettings | None = None  # proxies and CA bundle; read from the environment when the client is built
    clock: Callable[[], float] = time.time
    max_tag_pages: int = MAX_TAG_PAGES
    max_tags: int = MAX_TAGS
    max_listing_bytes: int = MAX_LISTING_BYTES
    # (host, method, kind) -> count
    requests_sent: Counter[tuple[str, str, str]] = field(default_factory=Counter, init=False)

    def __post_init__(self) -> None:
        if self.network is None:
            self.network = read_network()
        if self.session is None:
            self.session = _new_session(self.pool_size, self.network)
        self._lock = threading.Lock()
        self._key_locks: dict[Any, threading.Lock] = {}
        self._challenges: dict[str, _Challenge] = {}
        self._tokens: dict[Any, _Token] = {}
        self._rate_limits: dict[str, RateLimit] = {}

    # --- what callers use -------------------------------------------------------------------------
    def head_manifest(self, host: str, repository: str, reference: str, auth: Auth = None) -> ManifestHead | None:
        """Digest, media type and size of a manifest by tag or digest; None when it does not exist."""
        what = f"HEAD {repository}:{reference}"
        answer = self._manifest("HEAD", host, repository, reference, auth, what)
        return None if answer is None else self._head_of(host, answer, what)

    def describe(self, host: str, repository: str, reference: str,
                 auth: Auth = None) -> tuple[ManifestHead, list[str]] | None:
        """A manifest's head and its platforms (`os/arch[/variant]` of an index, attestations left out; [] for a
        single manifest) in one GET; None when it does not exist. Meant for our own target, not Docker Hub
        (which counts a GET as a pull)."""
        described = self.manifest(host, repository, reference, auth)
        if described is None:
            return None
        head, document = described
        return head, platforms_of(host, document, f"GET {repository}:{reference}")

    def manifest(self, host: str, repository: str, reference: str,
                 auth: Auth = None) -> tuple[ManifestHead, dict[str, Any]] | None:
        """A manifest's head and its JSON object in one GET; None when it does not exist. Docker Hub counts a
        GET as a pull: read an image's own manifest from the target where it is there too."""
        what = f"GET {repository}:{reference}"
        answer = self._manifest("GET", host, repository, reference, auth, what)
        if answer is None:
            return None
        if not answer.headers.get("Docker-Content-Digest", "").strip():  # optional: the body names itself
            answer = _Answer(answer.status, answer.reason, {**answer.headers, "Docker-Content-Digest":
                             "sha256:" + hashlib.sha256(answer.body).hexdigest()}, answer.body, answer.url)
        head = self._head_of(host, answer, what)
        document = self._json(host, answer, what)
        if not isinstance(document, dict):
            raise RegistryError(host, answer.status, "MALFORMED", f"{what}: not a manifest or an index")
        return head, document

    def referrers(self, host: str, repository: str, digest: str, auth: Auth = None) -> list[Descriptor] | None:
        """What refers to `digest`, by the OCI 1.1 referrers API (`GET /v2/<name>/referrers/<digest>`, `Link`
        pages on the same origin), unfiltered; None when the registry has no such API (404, 405, 501 on the
        first page: the caller then reads the referrers tag schema)."""
        what = f"referrers of {repository}@{digest[:19]}…"
        first = f"{self._base(host)}/v2/{repository}/referrers/{digest}"
        url: str | None = first
        seen: set[str] = set()
        found: list[Descriptor] = []
        with self._call(host, self.timeout):
            while url:
                if url in seen:
                    raise RegistryError(host, 0, "PAGINATION", f"{what}: a Link header leads back to a page "
                                                               "already read")
                if len(seen) >= MAX_REFERRER_PAGES:
                    raise RegistryError(host, 0, "TOO_LARGE", f"{what}: more than {MAX_REFERRER_PAGES} pages")
                seen.add(url)
                answer = self._send("GET", host, url, repository, auth, {"Accept": OCI_INDEX}, kind="referrers")
                if answer.status in NO_REFERRERS_API and url == first:
                    return None
                self._expect_ok(host, answer, what)
                media_type = answer.headers.get("Content-Type", "").split(";")[0].strip().lower()
                if media_type != OCI_INDEX:
                    raise RegistryError(host, answer.status, "MALFORMED", f"{what}: answered "
                                                                          f"{_clean(media_type, 60)!r}, not an "
                                                                          "OCI image index")
                document = self._json(host, answer, what)
                found.extend(index_entries(host, document, what, status=answer.status))
                if len(found) > MAX_DESCRIPTORS:
                    raise RegistryError(host, answer.status, "TOO_LARGE", f"{what}: more than {MAX_DESCRIPTORS} "
                                                                          "referrers")
                url = self._next_link(host, answer, first, what)
        return found

    @staticmethod
    def _head_of(host: str, answer: _Answer, what: str) -> ManifestHead:
        digest = answer.headers.get("Docker-Content-Digest", "").strip()
        if not digest:
            raise RegistryError(host, answer.status, "NO_DIGEST", f"{what} answered without Docker-Content-Digest")
        if not _DIGEST.fullmatch(digest):
            raise RegistryError(host, answer.status, "MALFORMED", f"{what}: Docker-Content-Digest "
                                                                  f"{_clean(digest, 80)!r} is not a sha256 or "
                                                                  "sha512 digest")
        declared = answer.headers.get("Content-Length")
        if declared is not None and not _SIZE.fullmatch(declared.strip()):
            raise RegistryError(host, answer.status, "MALFORMED", f"{what}: Content-Length "
                                                                  f"{_clean(declared, 40)!r} is not a size")
        media_type = answer.headers.get("Content-Type", "").split(";")[0].strip()
        return ManifestHead(digest, media_type if _MEDIA_TYPE.fullmatch(media_type) else "",
                            int(declared or 0))

    def list_tags(self, host: str, repository: str, auth: Auth = None, *, page_size: int = 1000) -> list[str]:
        """Every tag of a repository, following `Link` pages on the same origin, within max_tag_pages,
        max_tags and max_listing_bytes. A missing repository has no tags."""
        what = f"list tags of {repository}"
        first = f"{self._base(host)}/v2/{repository}/tags/list?n={page_size}"
        url: str | None = first
        seen: set[str] = set()
        tags: list[str] = []
        read = 0
        with self._call(host, self.listing_timeout):
            while url:
                if url in seen:
                    raise RegistryError(host, 0, "PAGINATION", f"{what}: a Link header leads back to a page "
                                                               "already read")
                if len(seen) >= self.max_tag_pages:
                    raise RegistryError(host, 0, "TOO_LARGE", f"{what}: more than {self.max_tag_pages} pages")
                seen.add(url)
                answer = self._send("GET", host, url, repository, auth, {"Accept": "application/json"},
                                    kind="tags", limit=max(0, self.max_listing_bytes - read))
                if answer.status == 404 and url == first:
                    return tags
                self._expect_ok(host, answer, what)
                read += len(answer.body)
                document = self._json(host, answer, what)
                page = document.get("tags", "missing") if isinstance(document, dict) else "not an object"
                page = [] if page is None else page  # an empty repository: some registries send null
                if not isinstance(page, list) or not all(isinstance(t, str) for t in page):
                    raise RegistryError(host, answer.status, "MALFORMED", f"{what}: the answer is not "
                                                                          '{"tags": [strings]}')
                tags.extend(page)
                if len(tags) > self.max_tags:
                    raise RegistryError(host, answer.status, "TOO_LARGE", f"{what}: more than {self.max_tags} tags")
                url = self._next_link(host, answer, first, what)
        return tags

    def _manifest(self, method: str, host: str, repository: str, reference: str, auth: Auth,
                  what: str) -> _Answer | None:
        """One manifest request inside the call's deadline: the answer, or None when it does not exist."""
        with self._call(host, self.timeout):
            url = f"{self._base(host)}/v2/{repository}/manifests/{reference}"
            answer = self._send(method, host, url, repository, auth, {"Accept": MANIFEST_ACCEPT}, kind="manifest")
            if answer.status == 404:
                return None
            self._expect_ok(host, answer, what)
        return answer

    def rate_limit(self, host: str) -> RateLimit | None:
        return self._rate_limits.get(host.lower())

    # --- requests -----------------------------------------------------------------------------------
    def _base(self, host: str) -> str:
        return endpoint_for(host, self.endpoints)

    @contextmanager
    def _call(self, host: str, seconds: float) -> Iterator[None]:
        """One deadline for a public call and everything it sends; a nested call keeps the outer one."""
        if _current_deadline() is not None:
            yield
            return
        deadline = time.monotonic() + seconds
        scope = getattr(_local, "scope", None)
        if scope is not None:
            deadline = min(deadline, scope)
        _local.deadline = deadline
        try:
            yield
        finally:
            _local.deadline = None

    def _remaining(self, host: str, what: str) -> float:
        deadline = _current_deadline()
        if deadline is None:
            return self.timeout
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RegistryError(host, 0, "TIMEOUT", f"{what}: no complete answer within the call's deadline")
        return remaining

    def _acquire(self, lock: threading.Lock, host: str, what: str) -> None:
        if not lock.acquire(timeout=self._remaining(host, what)):
            raise RegistryError(host, 0, "TIMEOUT", f"{what}: waited for another read of this registry until "
                                                    "the call's deadline")

    def _next_link(self, host: str, answer: _Answer, first: str, what: str) -> str | None:
        header = answer.headers.get("Link", "")
        if not header:
            return None
        match = re.search(r'<([^<>]{1,2048})>\s*;\s*rel="?next"?', header[:8192])
        if not match:
            return None
        link: str = urljoin(answer.url, match.group(1))
        if origin(link) != origin(first):
            raise RegistryError(host, answer.status, "PAGINATION", f"{what}: the next page is on another origin "
                                                                   f"({_origin_text(link)}); not followed")
        return link

    def _send(self, method: str, host: str, url: str, repository: str, auth: Auth, headers: dict[str, str], *,
              kind: str, limit: int = MAX_BODY_BYTES) -> _Answer:
        challenge = self._challenge(host)
        for attempt in (1, 2):
            sent = {**headers, **self._authorization(host, challenge, repository, auth, renew=attempt == 2)}
            answer = self._http(method, host, url, sent, kind=kind, limit=limit)
            if answer.status != 401 or attempt == 2:
                return answer
            fresh = parse_challenge(answer.headers.get("WWW-Authenticate", ""))
            if fresh is None:
                return answer
            challenge = fresh
            with self._lock:
                self._challenges[host.lower()] = fresh
        raise AssertionError("unreachable")

    def _http(self, method: str, host: str, url: str, headers: dict[str, str], *, kind: str,
              data: Mapping[str, str] | None = None, auth: tuple[str, str] | None = None,
              follow: bool = True, limit: int = MAX_BODY_BYTES) -> _Answer:
        """One request, with same-origin redirects when `follow` (never for tokens), read completely and
        within bounds before it is returned."""
        what = f"{method} {_origin_text(url)}{_clean(urlsplit(url).path, 120)}"
        start = origin(url)
        for _ in range(MAX_REDIRECTS + 1):
            answer = self._exchange(method, host, url, headers, data, auth, kind, what, limit)
            if isinstance(answer, _Answer):
                return answer
            location = answer  # a redirect: where to
            if not follow:
                raise RegistryError(host, 0, "REDIRECT", f"{what}: answered a redirect; token requests never "
                                                         "follow redirects")
            if origin(location) != start:
                raise RegistryError(host, 0, "REDIRECT", f"{what}: redirected to another origin "
                                                         f"({_origin_text(location)}); not followed, so no "
                                                         "credential leaves the registry")
            url = location
        raise RegistryError(host, 0, "REDIRECT", f"{what}: more than {MAX_REDIRECTS} redirects")

    def _exchange(self, method: str, host: str, url: str, headers: dict[str, str], data: Mapping[str, str] | None,
                  auth: tuple[str, str] | None, kind: str, what: str, limit: int) -> _Answer | str:
        """One request and its answer, or the absolute URL it redirects to."""
        import requests
        from urllib3.exceptions import HTTPError as Urllib3Error

        remaining = self._remaining(host, what)
        with self._lock:
            self.requests_sent[(host.lower(), method, kind)] += 1
        assert self.session is not None, "__post_init__ makes one"
        try:
            response = self.session.request(method, url, headers=headers, data=data, auth=auth,
                                            timeout=(min(remaining, CONNECT_TIMEOUT), remaining),
                                            allow_redirects=False, stream=True, proxies=self._proxies_for(url))
        except (requests.RequestException, Urllib3Error, http.client.HTTPException, OSError, ValueError) as exc:
            raise self._transport_error(host, what, exc) from None
        try:
            size = sum(len(k) + len(v) for k, v in response.headers.items())
            if size > MAX_HEADER_BYTES:
                raise RegistryError(host, response.status_code, "TOO_LARGE",
                                    f"{what}: {size} bytes of headers, the limit is {MAX_HEADER_BYTES}")
            status = response.status_code
            if status in _REDIRECTS:
                location: str = response.headers.get("Location", "")
                if not location or len(location) > 4096:
                    raise RegistryError(host, status, "REDIRECT", f"{what}: a redirect without a usable Location")
                redirect: str = urljoin(url, location.strip())
                return redirect
            if not 200 <= status <= 599:
                raise RegistryError(host, status, "PROTOCOL", f"{what}: answered HTTP {status}")
            body = self._read(host, response, limit, what)
            answer = _Answer(status, _clean(response.reason or "", 80), response.headers, body, url)
        finally:
            response.close()
        found = parse_rate_limit(answer.headers)
        if found is not None:
            with self._lock:
                self._rate_limits[host.lower()] = found
        if status == 429:
            raise RateLimited(host, 429, "TOOMANYREQUESTS", f"{method} {kind}: rate limited",
                              parse_retry_after(answer.headers.get("Retry-After")))
        return answer

    def _read(self, host: str, response: requests.Response, limit: int, what: str) -> bytes:
        """The body, at most `limit` bytes (a larger one is an error, not a truncation), by the deadline."""
        from urllib3.exceptions import HTTPError as Urllib3Error

        declared = (response.headers.get("Content-Length") or "").strip()
        if ascii_count(declared) and (len(declared) > 15 or int(declared) > limit):
            raise RegistryError(host, response.status_code, "TOO_LARGE",
                                f"{what}: declares {_clean(declared, 20)} bytes, the limit is {limit}")
        chunks, total = [], 0
        try:
            while True:
                chunk = response.raw.read(_CHUNK, decode_content=True)
                if not chunk:
                    break
                total += len(chunk)
                if total > limit:
                    raise RegistryError(host, response.status_code, "TOO_LARGE",
                                        f"{what}: more than {limit} bytes")
                chunks.append(chunk)
                self._remaining(host, what)
        except (Urllib3Error, http.client.HTTPException, OSError, ValueError) as exc:
            raise self._transport_error(host, what, exc) from None
        return b"".join(chunks)

    def _transport_error(self, host: str, what: str, exc: BaseException) -> RegistryError:
        import requests

        deadline = _current_deadline()
        late = deadline is not None and time.monotonic() >= deadline - 0.05
        if late or isinstance(exc, requests.Timeout | TimeoutError):
            return RegistryError(host, 0, "TIMEOUT", f"{what}: no complete answer within the call's deadline")
        text = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, requests.exceptions.SSLError | ssl.SSLError) or "SSL" in text or "certificate" in text:
            return RegistryError(host, 0, "TLS", f"{what}: TLS failed ({_clean(type(exc).__name__, 40)})")
        return RegistryError(host, 0, "CONNECTION", f"{what} failed: {_clean(type(exc).__name__, 40)}")

    def _proxies_for(self, url: str) -> dict[str, str]:
        """HTTP(S)_PROXY / NO_PROXY for this URL, as read when the client was built."""
        assert self.network is not None, "__post_init__ reads it"
        return self.network.proxies_for(url)

    def _json(self, host: str, answer: _Answer, what: str) -> Any:
        def refuse(name: str) -> Any:
            raise ValueError(f"{name} is not JSON")

        try:
            return json.loads(answer.body, parse_constant=refuse)
        except (ValueError, RecursionError):
            raise RegistryError(host, answer.status, "MALFORMED", f"{what}: the answer is not JSON") from None

    def _expect_ok(self, host: str, answer: _Answer, what: str) -> None:
        """Nothing for a 2xx answer; else a RegistryError with the registry's own error code and message."""
        if 200 <= answer.status < 300:
            return
        code, message = "", answer.reason or f"HTTP {answer.status}"
        try:
            errors = json.loads(answer.body).get("errors")
        except (ValueError, AttributeError, RecursionError):
            errors = None
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            found_code, found_message = errors[0].get("code"), errors[0].get("message")
            code = _clean(found_code, 40) if isinstance(found_code, str) else ""
            message = _clean(found_message) if isinstance(found_message, str) and found_message else message
        code = code or {401: "UNAUTHORIZED", 403: "DENIED", 404: "NOT_FOUND"}.get(answer.status,
                                                                                 f"HTTP{answer.status}")
        raise RegistryError(host, answer.status, code, f"{what}: {message}")

    def _challenge(self, host: str) -> _Challenge:
        """What `GET /v2/` asks for, learned once per host (under a per-host lock: one probe)."""
        key = host.lower()
        with self._lock:
            known = self._challenges.get(key)
            lock = self._key_locks.setdefault(("probe", key), threading.Lock())
        if known:
            return known
        self._acquire(lock, host, "GET /v2/")
        try:
            with self._lock:
                known = self._challenges.get(key)
            if known:
                return known
            answer = self._http("GET", host, f"{self._base(host)}/v2/", {}, kind="base")
            found = parse_challenge(answer.headers.get("WWW-Authenticate", "")) if answer.status == 401 else None
            if answer.status != 401:
                self._expect_ok(host, answer, "GET /v2/")
            challenge = found or _Challenge("none")
            with self._lock:
                self._challenges[key] = challenge
            return challenge
        finally:
            lock.release()

    # --- authorisation ----------------------------------------------------------------------------
    def _authorization(self, host: str, challenge: _Challenge, repository: str, auth: Auth, *,
                       renew: bool) -> dict[str, str]:
        if challenge.scheme == "none":
            return {}
        if isinstance(auth, BasicAuth) and not auth.username:
            raise RegistryError(host, 401, "NO_USERNAME", NO_USERNAME_MESSAGE)
        if challenge.scheme == "basic":
            if isinstance(auth, BasicAuth):
                user, password = auth.username, auth.password.reveal()
                return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
            return {}
        scope = f"repository:{repository}:pull"
        token = self._token(host, challenge, scope, auth, renew=renew)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _token(self, host: str, challenge: _Challenge, scope: str, auth: Auth, *, renew: bool) -> str:
        """A registry token for one scope, cached until shortly before it expires."""
        key = (host.lower(), challenge.realm, challenge.service, scope, _auth_key(auth))
        with self._lock:
            lock = self._key_locks.setdefault(key, threading.Lock())
        self._acquire(lock, host, "token")
        try:
            with self._lock:
                cached = self._tokens.get(key)
            if cached and not renew and cached.expires > self.clock() + EXPIRY_MARGIN_SECONDS:
                return cached.value
            realm = self._checked_realm(host, challenge, auth)
            if isinstance(auth, IdentityAuth):
                token = self._acr_token(host, realm, challenge, scope, auth, renew=renew)
            else:
                token = self._realm_token(host, realm, challenge, scope, auth)
            with self._lock:
                self._tokens[key] = token
            return token.value
        finally:
            lock.release()

    def _checked_realm(self, host: str, challenge: _Challenge, auth: Auth) -> str:
        """The challenge's token realm, if the credential at hand may go there: https only; the app's Entra
        token (ACR exchange) only to the registry's own host; a credential set only to the registry's site."""
        realm = challenge.realm.strip()
        where = origin(realm)
        if where is None:
            raise RegistryError(host, 401, "TOKEN_REALM", f"the Bearer challenge names no usable token realm "
                                                          f"({_clean(realm, 80)!r})")
        if where[0] != "https":
            raise RegistryError(host, 401, "TOKEN_REALM", f"token realm {_origin_text(realm)} is not https: tokens "
                                                          "and credentials are only requested over https")
        registry = origin(self._base(host))
        registry_host = registry[1] if registry else host.lower()
        # ACR's token service is on the login server itself (realm `https://<login server>/oauth2/token`), so
        # the Entra token goes only to the registry's own origin: same host and port, not merely the same host.
        if isinstance(auth, IdentityAuth) and where != registry:
            raise RegistryError(host, 401, "TOKEN_REALM", f"token realm {_origin_text(realm)} is not the "
                                                          f"registry's own origin {_origin_text(self._base(host))}: "
                                                          "the app's Entra token goes only to the registry itself")
        if isinstance(auth, BasicAuth) and not same_site(registry_host, where[1]):
            raise RegistryError(host, 401, "TOKEN_REALM", f"token realm {_origin_text(realm)} is not on the "
                                                          f"registry's site ({registry_host}): the credential "
                                                          "set is not sent there")
        return realm

    def _token_value(self, host: str, answer: _Answer, names: tuple[str, ...], what: str) -> tuple[str, dict[str, Any]]:
        self._expect_ok(host, answer, what)
        body = self._json(host, answer, what)
        if not isinstance(body, dict):
            raise RegistryError(host, answer.status, "MALFORMED", f"{what}: the answer is not a JSON object")
        value = next((body[n] for n in names if body.get(n)), "")
        if not isinstance(value, str) or not _TOKEN_VALUE.fullmatch(value):
            raise RegistryError(host, answer.status, "MALFORMED", f"{what}: no usable {names[0]} in the answer "
                                                                  "(a non-empty string of visible ASCII, at most "
                                                                  f"{MAX_TOKEN_LENGTH} characters)")
        return value, body

    def _realm_token(self, host: str, realm: str, challenge: _Challenge, scope: str,
                     auth: BasicAuth | None) -> _Token:
        params = {"service": challenge.service, "scope": scope} if challenge.service else {"scope": scope}
        query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
        basic = (auth.username, auth.password.reveal()) if isinstance(auth, BasicAuth) and auth.username else None
        answer = self._http("GET", host, f"{realm}{'&' if '?' in realm else '?'}{query}", {}, kind="token",
                            auth=basic, follow=False)
        value, body = self._token_value(host, answer, ("token", "access_token"), "token")
        return _Token(value, self._expiry(host, value, body.get("expires_in")))

    def _acr_token(self, host: str, realm: str, challenge: _Challenge, scope: str, auth: IdentityAuth, *,
                   renew: bool) -> _Token:
        refresh = self._acr_refresh_token(host, realm, challenge, auth, renew=renew)
        answer = self._http("POST", host, realm, {}, kind="token", follow=False, data={
            "grant_type": "refresh_token", "service": challenge.service, "scope": scope, "refresh_token": refresh})
        value, body = self._token_value(host, answer, ("access_token",), "ACR token")
        return _Token(value, self._expiry(host, value, body.get("expires_in")))

    def _acr_refresh_token(self, host: str, realm: str, challenge: _Challenge, auth: IdentityAuth, *,
                           renew: bool) -> str:
        key = (host.lower(), "exchange", realm, _auth_key(auth))
        with self._lock:
            cached = self._tokens.get(key)
        if cached and not renew and cached.expires > self.clock() + EXPIRY_MARGIN_SECONDS:
            return cached.value
        try:
            url = exchange_url(realm)
        except ValueError:
            raise RegistryError(host, 401, "TOKEN_REALM", f"token realm {_clean(realm, 80)!r} is not an ACR "
                                                          "token endpoint (…/oauth2/token)") from None
        entra = auth.credential.get_token(ACR_TOKEN_SCOPE).token
        answer = self._http("POST", host, url, {}, kind="token", follow=False, data={
            "grant_type": "access_token", "service": challenge.service, "access_token": entra})
        value, _ = self._token_value(host, answer, ("refresh_token",), "ACR token exchange")
        token = _Token(value, self._expiry(host, value, None, default=3600))
        with self._lock:
            self._tokens[key] = token
        return value

    def _expiry(self, host: str, token: str, expires_in: Any, *, default: float = DEFAULT_TOKEN_SECONDS) -> float:
        """When to stop reusing a token: `expires_in`, else the JWT's `exp`, else `default`; never later
        than MAX_TOKEN_SECONDS from now. An `expires_in` that is not a number of seconds is an error."""
        now = self.clock()
        if expires_in is not None and (isinstance(expires_in, bool) or not isinstance(expires_in, int | float)
                                       or not math.isfinite(expires_in) or expires_in < 0):
            raise RegistryError(host, 200, "MALFORMED", f"token: expires_in {_clean(repr(expires_in), 40)} is not "
                                                        "a number of seconds")
        until = now + float(expires_in) if expires_in else jwt_expiry(token) or now + default
        return min(until, now + MAX_TOKEN_SECONDS)


def index_entries(host: str, document: Any, what: str, *, status: int = 200) -> list[Descriptor]:
    """The `manifests` of an image index, each checked: an object with a digest, text where the spec has
    text. A registry answering anything else is a RegistryError naming the first wrong entry."""
    entries = document.get("manifests", "missing") if isinstance(document, dict) else "not an object"
    if not isinstance(entries, list):
        raise RegistryError(host, status, "MALFORMED", f"{what}: not an image index (no manifests list)")
    if len(entries) > MAX_DESCRIPTORS:
        raise RegistryError(host, status, "TOO_LARGE", f"{what}: more than {MAX_DESCRIPTORS} entries")
    found = []
    for index, entry in enumerate(entries):
        digest = entry.get("digest") if isinstance(entry, dict) else None
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            raise RegistryError(host, status, "MALFORMED", f"{what}: manifests[{index}] has no digest")
        size = entry.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_BODY_BYTES:
            raise RegistryError(host, status, "MALFORMED", f"{what}: manifests[{index}] has a size that is not a "
                                                           f"manifest's (0 to {MAX_BODY_BYTES} bytes)")
        media_type, artifact_type = entry.get("mediaType", ""), entry.get("artifactType", "")
        if not isinstance(media_type, str) or not isinstance(artifact_type, str):
            raise RegistryError(host, status, "MALFORMED", f"{what}: manifests[{index}]: a media type is not text")
        found.append(Descriptor(digest, media_type if _MEDIA_TYPE.fullmatch(media_type) else "",
                                artifact_type if _MEDIA_TYPE.fullmatch(artifact_type) else ""))
    return found


def platforms_of(host: str, document: dict[str, Any], what: str) -> list[str]:
    """An index's platforms (`os/arch[/variant]`, attestations left out); [] for a single manifest."""
    entries = document.get("manifests", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise RegistryError(host, 200, "MALFORMED", f"{what}: not a manifest or an index")
    found = []
    for entry in entries:
        platform = entry.get("platform") or {}
        parts = [platform.get(k) for k in ("os", "architecture", "variant")] if isinstance(platform, dict) \
            else [None]
        if not all(p is None or isinstance(p, str) for p in parts):
            raise RegistryError(host, 200, "MALFORMED", f"{what}: a platform is not text")
        if (parts[0] or "unknown") != "unknown":
            found.append(_clean("/".join(p for p in parts if p), 80))
    return found


def artifact_type_of(document: dict[str, Any]) -> str:
    """A manifest's artifact type as the OCI 1.1 spec defines it: `artifactType`, else its config's media type."""
    declared = document.get("artifactType")
    if not isinstance(declared, str) or not declared:
        config = document.get("config")
        declared = config.get("mediaType") if isinstance(config, dict) else ""
    return declared if isinstance(declared, str) and _MEDIA_TYPE.fullmatch(declared) else ""


class LazyCredential:
    """A TokenCredential built on first use, so creating a client costs no Azure SDK import."""

    def __init__(self, factory: Callable[[], TokenCredential]) -> None:
        self._factory = factory
        self._credential: TokenCredential | None = None
        self._lock = threading.Lock()

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        with self._lock:
            if self._credential is None:
                self._credential = self._factory()
            credential = self._credential
        return credential.get_token(*scopes, **kwargs)


def source_auth(host: str, username: str | None, password: Password | None, identity: IdentityAuth,
                acr_suffix: str) -> Auth:
    """How the app reads a source: its credential set when it has one, its identity on an ACR, else anonymous."""
    if password:
        return BasicAuth(username, password)
    if host.lower().endswith(f".{acr_suffix}"):
        return identity
    return None
