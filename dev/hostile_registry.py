"""A hostile registry: one HTTPS server that answers, per registry host, with one kind of malformed or
malicious behaviour, and listeners that record any credential sent where it does not belong.

Each kind is served under its own path prefix (`https://127.0.0.1:PORT/<kind>`), which the app reaches as
its own registry host (`<kind>.hostile.example`, or `<kind>.azurecr.io` for kinds that attack the app's
Entra identity), mapped in REGISTRY_ENDPOINTS. So every kind gets its own `/v2/` probe, challenge and
tokens, and several kinds can be used in one run. Apart from the read a kind spoils (`spoils`: the `/v2/`
probe, the tag list, the manifest HEAD, a token request, or the TLS connection itself), a kind answers as
a well-behaved token-auth registry, so only that one read goes wrong.

Two recorders stand by as "another host": `https://localhost:R` and `http://localhost:H` (other names than
the 127.0.0.1 the registry is served on). Kinds redirect there, put token realms and `Link` pages there;
whatever reaches them is kept, and `credentials_received()` lists the requests that carried a credential
(Authorization, Cookie, a password or a token in the query or body). A client that keeps its credentials
with their registry leaves that list empty.

Referrers (issue 16): REFERRER_KINDS, kept apart from KINDS (whose cases run through the refresh, which reads no
referrers), attack the OCI 1.1 referrers API (`GET /v2/<repo>/referrers/<digest>`, spoils `referrers`) and the
referrers tag schema fallback (`GET /v2/<repo>/manifests/sha256-<hex>`, spoils `referrers-tag`; those kinds
answer the referrers API with 404, as docker-registry 2.8 does, so a client falls back). Both reads are
challenged first, so a client carries its token when a kind redirects or links elsewhere. Otherwise a kind
is a registry whose image (the empty index, DIGEST) has one referrer, a Notary signature (SIGNATURE_DIGEST),
served with its blobs. `expect` for them: `problem`, the image's referrers end with a warning naming the
host (the image itself imports); `ok`, a lie the client copes with: it imports each referrer once and ends.

`python -m dev.hostile_registry` serves it in the foreground and prints REGISTRY_ENDPOINTS entries. Tests
start it in-process (`HostileRegistry().start()`), on free ports. dev/ never imports shared/.
"""

from __future__ import annotations

import datetime
import gzip
import hashlib
import json
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trustme

from dev import ca, layout

REPOSITORY = "hostile/app"
TAG = "1.0"
REGISTRY_TOKEN = "hostile-registry-token"
REFRESH_TOKEN = "hostile-refresh-token"
INDEX = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                    "manifests": []}).encode()
DIGEST = "sha256:" + hashlib.sha256(INDEX).hexdigest()
STALL_SECONDS = 120.0  # a stalled answer is held this long at most (or until the server stops)
DRIP_SECONDS = 0.2     # one byte every DRIP_SECONDS: well inside any per-read timeout
DOMAIN = "hostile.example"


def _canonical(document: Any) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# The image's one well-formed referrer: a Notary signature with the empty config and a JWS-shaped layer.
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
NOTARY_SIGNATURE = "application/vnd.cncf.notary.signature"
EMPTY_CONFIG = b"{}"
ENVELOPE = _canonical({"payload": "e30", "protected": "e30", "signature": "AAAA"})


def _signature_on(subject: str) -> bytes:
    return _canonical({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": NOTARY_SIGNATURE,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": _sha256(EMPTY_CONFIG), "size": 2},
        "layers": [{"mediaType": "application/jose+json", "digest": _sha256(ENVELOPE), "size": len(ENVELOPE)}],
        "subject": {"mediaType": OCI_INDEX, "digest": subject, "size": len(INDEX) if subject == DIGEST else 2}})


SIGNATURE = _signature_on(DIGEST)
SIGNATURE_DIGEST = _sha256(SIGNATURE)
ELSEWHERE_SIGNATURE = _signature_on("sha256:" + "b" * 64)  # a signature whose subject is another image
ELSEWHERE_DIGEST = _sha256(ELSEWHERE_SIGNATURE)
ARTIFACTS = {SIGNATURE_DIGEST: SIGNATURE, ELSEWHERE_DIGEST: ELSEWHERE_SIGNATURE}
BLOBS = {_sha256(EMPTY_CONFIG): EMPTY_CONFIG, _sha256(ENVELOPE): ENVELOPE}
HUGE_REFERRERS = 100_000


def referrer_descriptor(digest: str, body: bytes, media_type: str = OCI_MANIFEST,
                        artifact_type: Any = NOTARY_SIGNATURE) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest, "size": len(body), "artifactType": artifact_type}


def referrers_index(manifests: Any) -> bytes:
    """A referrers API answer (or a tag-schema index) whose `manifests` is whatever it is given."""
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}).encode()


SIGNATURE_DESCRIPTOR = referrer_descriptor(SIGNATURE_DIGEST, SIGNATURE)
TAG_SCHEMA_TAG = "sha256-" + DIGEST.removeprefix("sha256:")


@dataclass(frozen=True)
class Kind:
    """One hostile behaviour. `spoils`: which read goes wrong (base | tags | manifest | token | exchange |
    acr-token | tls | referrers | referrers-tag). `expect`: what a client that fails closed ends with: a
    `problem` recorded for the image, a `backoff` (HTTP 429), or `ok` (a lie the client must tolerate: the
    image refreshes); for referrer kinds see the module docstring."""

    name: str
    spoils: str
    behaviour: str
    answer: Callable[[_Handler], None] | None = None
    identity: bool = False
    expect: str = "problem"

    @property
    def host(self) -> str:
        """The registry host the app uses for this kind."""
        return f"{self.name}.azurecr.io" if self.identity else f"{self.name}.{DOMAIN}"

    @property
    def needs_listing(self) -> bool:
        return self.spoils == "tags"


KINDS: list[Kind] = []
REFERRER_KINDS: list[Kind] = []
REFERRER_SPOILS = ("referrers", "referrers-tag")


def _kind(name: str, spoils: str, behaviour: str, *, identity: bool = False, expect: str = "problem"):
    def register(answer: Callable[[_Handler], None] | None) -> Callable[[_Handler], None] | None:
        (REFERRER_KINDS if spoils in REFERRER_SPOILS else KINDS).append(
            Kind(name, spoils, behaviour, answer, identity, expect))
        return answer

    return register


def _static(name: str, spoils: str, behaviour: str, status: int, headers: dict[str, str] | None = None,
            body: bytes | str = b"", **options: Any) -> None:
    data = body.encode() if isinstance(body, str) else body

    def answer(handler: _Handler) -> None:
        handler.reply(status, data, headers or {})

    _kind(name, spoils, behaviour, **options)(answer)


# --- the handler ---------------------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    kind: Kind | None = None
    rest = "/"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # answers
    def reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        headers = dict(headers or {})
        for key, value in headers.items():
            self.send_header(key, value)
        if not any(k.lower() == "content-length" for k in headers):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def json(self, status: int, document: Any, headers: dict[str, str] | None = None) -> None:
        self.reply(status, json.dumps(document).encode(), {"Content-Type": "application/json", **(headers or {})})

    def raw(self, data: bytes) -> None:
        self.close_connection = True
        self.wfile.write(data)
        self.wfile.flush()

    def stall(self) -> None:
        self.close_connection = True
        self.server.stopping.wait(STALL_SECONDS)

    def drip(self, head: bytes, byte: bytes = b"a") -> None:
        """Send `head`, then one byte every DRIP_SECONDS until the client gives up or the server stops."""
        self.close_connection = True
        try:
            self.wfile.write(head)
            self.wfile.flush()
            waited = 0.0
            while waited < STALL_SECONDS and not self.server.stopping.wait(DRIP_SECONDS):
                self.wfile.write(byte)
                self.wfile.flush()
                waited += DRIP_SECONDS
        except OSError:
            pass

    # where things are
    @property
    def here(self) -> str:
        return f"{self.server.base}/{self.kind.name if self.kind else ''}"

    @property
    def realm(self) -> str:
        return f"{self.here}/oauth2/token" if self.kind and self.kind.identity else f"{self.here}/token"

    def challenge(self) -> dict[str, str]:
        service = self.kind.host if self.kind else "hostile"
        return {"WWW-Authenticate": f'Bearer realm="{self.realm}",service="{service}"'}

    def authorised(self) -> bool:
        return self.headers.get("Authorization") == f"Bearer {REGISTRY_TOKEN}"

    def operation(self) -> str:
        rest = self.rest
        if rest.rstrip("/") == "/v2":
            return "base"
        if rest.startswith("/v2/") and "/tags/list" in rest:
            return "tags"
        if rest.startswith("/v2/") and "/referrers/" in rest:
            return "referrers"
        if rest.startswith("/v2/") and "/manifests/" in rest and _is_tag_schema_tag(rest.rsplit("/", 1)[-1]):
            return "referrers-tag"
        if rest.startswith("/v2/") and "/manifests/" in rest:
            return "manifest"
        if rest.startswith("/v2/") and "/blobs/" in rest:
            return "blob"
        if rest.startswith("/oauth2/exchange"):
            return "exchange"
        if rest.startswith("/oauth2/token"):
            return "acr-token"
        if rest.startswith("/token"):
            return "token"
        return "other"

    @property
    def reference(self) -> str:
        """The last path segment: a manifest's tag or digest, a blob's digest, the referrers' subject."""
        return self.rest.rsplit("/", 1)[-1]

    def index(self, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.reply(200, body, {"Content-Type": OCI_INDEX, **(headers or {})})

    # well-behaved registry
    def normal(self, operation: str) -> None:
        if operation == "base":
            self.json(401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                      self.challenge())
        elif operation in ("token", "acr-token"):
            self.json(200, {"token" if operation == "token" else "access_token": REGISTRY_TOKEN, "expires_in": 300})
        elif operation == "exchange":
            self.json(200, {"refresh_token": REFRESH_TOKEN})
        elif not self.authorised():
            self.json(401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                      self.challenge())
        elif operation == "tags":
            self.json(200, {"name": REPOSITORY, "tags": [TAG]})
        elif operation == "manifest" and self.reference in ARTIFACTS:
            body = ARTIFACTS[self.reference]
            self.reply(200, body, {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": self.reference})
        elif operation == "manifest":
            self.reply(200, INDEX, {"Content-Type": "application/vnd.oci.image.index.v1+json",
                                    "Docker-Content-Digest": DIGEST})
        elif operation == "blob" and self.reference in BLOBS:
            self.reply(200, BLOBS[self.reference], {"Content-Type": "application/octet-stream",
                                                    "Docker-Content-Digest": self.reference})
        elif operation == "referrers":
            self.index(referrers_index([SIGNATURE_DESCRIPTOR] if self.reference == DIGEST else []))
        elif operation == "referrers-tag":
            self.json(404, {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]})
        else:
            self.json(404, {"errors": [{"code": "NOT_FOUND", "message": "no such thing"}]})

    def _dispatch(self) -> None:
        length = self.headers.get("Content-Length")
        if length and length.isdigit() and int(length) < 1 << 20:
            self.rfile.read(int(length))
        path = urlsplit(self.path).path
        _, name, *rest = path.split("/", 2)
        self.kind = self.server.kinds.get(name)
        self.rest = "/" + (rest[0] if rest else "")
        operation = self.operation()
        spoiled = self.kind is not None and self.kind.answer is not None and self.kind.spoils == operation
        if spoiled and operation in REFERRER_SPOILS and not self.authorised():
            self.normal(operation)  # the challenge: the client then holds a token when it is led astray
        elif spoiled:
            assert self.kind is not None and self.kind.answer is not None
            self.kind.answer(self)
        elif self.kind is not None and self.kind.spoils == "referrers-tag" and operation == "referrers":
            self.reply(404, b"404 page not found\n", {"Content-Type": "text/plain; charset=utf-8"})
        else:
            self.normal(operation)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch


# --- the kinds ------------------------------------------------------------------------------------------
def _json_body(text: str, status: int = 200, **options: Any):
    return status, {"Content-Type": "application/json"}, text


# Tag lists: wrong JSON types, non-JSON, size, pagination that never ends or leaves, errors, lies.
for _name, _text, _why in [
    ("tags-string", '{"tags": "x"}', '"tags" is a string'),
    ("tags-wrong-items", '{"tags": [1, null]}', '"tags" holds a number and null'),
    ("tags-top-level-array", '["1.0"]', "the document is an array"),
    ("tags-top-level-string", '"1.0"', "the document is a string"),
    ("tags-object-items", '{"tags": [{"name": "1.0"}]}', '"tags" holds objects'),
    ("tags-not-json", "<html><body>Welcome to nginx!</body></html>", "an HTML page"),
    ("tags-truncated-json", '{"tags": ["1.0", "2.', "JSON cut off"),
    ("tags-nan", '{"tags": NaN}', "NaN, which is not JSON"),
    ("tags-deep-nesting", '{"tags": ' + "[" * 100_000 + "]" * 100_000 + "}", "100,000 nested arrays"),
    ("tags-huge-integer", '{"tags": [' + "9" * 100_000 + "]}", "an integer of 100,000 digits"),
    ("tags-invalid-utf8", b'{"tags": ["\xff\xfe"]}'.decode("latin-1"), "bytes that are not UTF-8"),
]:
    _static(_name, "tags", _why, *_json_body(_text)[:2],
            _text.encode("latin-1") if _name == "tags-invalid-utf8" else _text)

_static("tags-content-length-huge", "tags", "declares a body of 10^20 bytes", 200,
        {"Content-Type": "application/json", "Content-Length": "99999999999999999999"}, b'{"tags": []}')


@_kind("tags-content-length-negative", "tags", "Content-Length: -1 and a body that is not JSON")
def _negative_length(h: _Handler) -> None:
    h.raw(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: -1\r\n\r\n{tags}")


@_kind("tags-content-length-not-ascii", "tags", "Content-Length: '²' (a digit to str.isdigit, not to int()); "
       "the body read to its end", expect="ok")
def _superscript_length(h: _Handler) -> None:
    h.raw(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: \xb2\r\nConnection: close\r\n\r\n"
          + json.dumps({"tags": [TAG]}).encode())


_static("tags-errors-string", "tags", '500 with {"errors": "x"}', 500, {"Content-Type": "application/json"},
        '{"errors": "x"}')
_static("tags-errors-garbage", "tags", "400 with errors of the wrong types", 400,
        {"Content-Type": "application/json"}, '{"errors": [1, {"code": 5, "message": ["x"]}]}')
_static("tags-error-escapes", "tags", "403 whose error code and message carry terminal escapes and 100 KB", 403,
        {"Content-Type": "application/json"},
        json.dumps({"errors": [{"code": "\x1b[31mDENIED\x1b[0m", "message": "\x1b]0;pwned\x07\r\n" + "A" * 100_000}]}))
_static("tags-teapot", "tags", "HTTP 418 with a plain-text body", 418,
        {"Content-Type": "text/plain"}, "I'm a teapot")


@_kind("tags-oversized-body", "tags", "20 MiB of tags, no Content-Length (read until close)")
def _oversized(h: _Handler) -> None:
    h.close_connection = True
    h.send_response(200)
    h.send_header("Content-Type", "application/json")
    h.send_header("Connection", "close")
    h.end_headers()
    try:
        h.wfile.write(b'{"tags": [')
        chunk = b'"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",' * 1000
        for _ in range((20 << 20) // len(chunk) + 1):
            h.wfile.write(chunk)
        h.wfile.write(b'"x"]}')
    except OSError:
        pass


@_kind("tags-gzip-bomb", "tags", "a gzip body of 64 KiB that inflates to 64 MiB, sent although not accepted")
def _gzip_bomb(h: _Handler) -> None:
    h.reply(200, h.server.gzip_bomb(), {"Content-Type": "application/json", "Content-Encoding": "gzip"})


@_kind("tags-content-length-lie", "tags", "declares 1,000 bytes, sends 12 and closes")
def _short(h: _Handler) -> None:
    h.raw(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"tags\": [\"1")


@_kind("tags-endless-pages", "tags", "every page links to a new next page")
def _endless(h: _Handler) -> None:
    page = int((parse_qs(urlsplit(h.path).query).get("last") or ["0"])[0] or 0)
    h.json(200, {"name": REPOSITORY, "tags": [f"p{page}"]},
           {"Link": f'</{h.kind.name}/v2/{REPOSITORY}/tags/list?n=1000&last={page + 1}>; rel="next"'})


@_kind("tags-link-loop", "tags", "the next page is the page itself")
def _self_link(h: _Handler) -> None:
    h.json(200, {"name": REPOSITORY, "tags": [TAG]},
           {"Link": f'</{h.kind.name}/v2/{REPOSITORY}/tags/list?n=1000>; rel="next"'})


@_kind("tags-link-cycle", "tags", "page A links to B, B links back to A")
def _cycle(h: _Handler) -> None:
    other = "b" if "last=b" not in h.path else "a"
    h.json(200, {"name": REPOSITORY, "tags": [TAG]},
           {"Link": f'</{h.kind.name}/v2/{REPOSITORY}/tags/list?n=1000&last={other}>; rel="next"'})


@_kind("tags-link-other-host", "tags", "the next page is on another host (the recorder)")
def _link_away(h: _Handler) -> None:
    h.json(200, {"name": REPOSITORY, "tags": [TAG]},
           {"Link": f'<{h.server.recorder_https}/v2/{REPOSITORY}/tags/list?last=x>; rel="next"'})


@_kind("tags-link-http", "tags", "the next page is plain http on the same host")
def _link_http(h: _Handler) -> None:
    h.json(200, {"name": REPOSITORY, "tags": [TAG]},
           {"Link": f'<{h.server.base.replace("https://", "http://")}/{h.kind.name}/v2/x/tags/list>; rel="next"'})


@_kind("tags-too-many", "tags", "one page of 60,000 tags")
def _too_many(h: _Handler) -> None:
    h.json(200, {"name": REPOSITORY, "tags": [f"t{i}" for i in range(60_000)]})


@_kind("tags-invalid-names", "tags", "tags that are not tag names: 5,000 characters, spaces, paths, controls")
def _invalid_names(h: _Handler) -> None:
    h.json(200, {"name": REPOSITORY, "tags": ["a" * 5000, "bad tag", "../../etc/passwd", "\u202e1.0", "",
                                               "-x", ".hidden", "a" * 129]})


@_kind("tags-duplicates", "tags", "the same tag listed 40,000 times (checked once)", expect="ok")
def _duplicates(h: _Handler) -> None:
    h.json(200, {"name": REPOSITORY, "tags": [TAG] * 40_000})


@_kind("tags-stall", "tags", "reads the request and never answers")
def _tags_stall(h: _Handler) -> None:
    h.stall()


@_kind("tags-drip-headers", "tags", "a header dripped one byte every 0.2 s (slowloris)")
def _tags_drip_headers(h: _Handler) -> None:
    h.drip(b"HTTP/1.1 200 OK\r\nX-Slow: ")


@_kind("tags-drip-body", "tags", "the body dripped one byte every 0.2 s")
def _tags_drip_body(h: _Handler) -> None:
    h.drip(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{\"tags\": [\"",
           b"a")


@_kind("tags-redirect-loop", "tags", "redirects to itself")
def _tags_loop(h: _Handler) -> None:
    h.reply(302, b"", {"Location": h.path})


@_kind("tags-redirect-other-host", "tags", "redirects to another host (the recorder)")
def _tags_away(h: _Handler) -> None:
    h.reply(307, b"", {"Location": f"{h.server.recorder_https}/steal{h.rest}"})


for _name, _value, _why in [
    ("tags-429-retry-after-huge", "1e30", "429 with Retry-After: 1e30"),
    ("tags-429-retry-after-negative", "-5", "429 with Retry-After: -5"),
    ("tags-429-retry-after-far-date", "Fri, 31 Dec 9999 23:59:59 GMT", "429 with Retry-After in year 9999"),
    ("tags-429-retry-after-garbage", "soon\u00e9", "429 with Retry-After: soon"),
]:
    _static(_name, "tags", _why, 429, {"Retry-After": _value, "Content-Type": "application/json"},
            '{"errors": [{"code": "TOOMANYREQUESTS", "message": "slow down"}]}', expect="backoff")

# Manifest HEAD: digests and sizes that lie, broken HTTP, stalls, header floods, redirects.
_GOOD = {"Content-Type": "application/vnd.oci.image.index.v1+json"}
for _name, _headers, _why in [
    ("head-no-digest", {}, "no Docker-Content-Digest"),
    ("head-digest-garbage", {"Docker-Content-Digest": "sha256:xyz"}, "Docker-Content-Digest: sha256:xyz"),
    ("head-digest-md5", {"Docker-Content-Digest": "md5:" + "a" * 32}, "an md5 digest"),
    ("head-digest-uppercase", {"Docker-Content-Digest": "sha256:" + "A" * 64}, "upper-case hex"),
    ("head-digest-two", {"Docker-Content-Digest": f"{DIGEST}, sha256:{'b' * 64}"}, "two digests in one header"),
    ("head-digest-huge", {"Docker-Content-Digest": "sha256:" + "a" * 50_000}, "a digest of 50,000 characters"),
    ("head-digest-path", {"Docker-Content-Digest": "sha256:../../../etc/passwd"}, "a digest that is a path"),
    ("head-content-length-negative", {"Docker-Content-Digest": DIGEST, "Content-Length": "-1"},
     "Content-Length: -1"),
    ("head-content-length-huge", {"Docker-Content-Digest": DIGEST, "Content-Length": "1e30"}, "Content-Length: 1e30"),
    ("head-content-length-text", {"Docker-Content-Digest": DIGEST, "Content-Length": "lots"}, "Content-Length: lots"),
    ("head-too-many-headers", {**{f"X-H{i}": "x" for i in range(150)}, "Docker-Content-Digest": DIGEST},
     "150 headers"),
    ("head-huge-headers", {**{f"X-Big{i}": "x" * 10_000 for i in range(10)}, "Docker-Content-Digest": DIGEST},
     "100 KB of headers"),
]:
    _static(_name, "manifest", _why, 200, {**_GOOD, "Content-Length": "300", **_headers})

_static("head-status-999", "manifest", "HTTP 999", 999, {"Docker-Content-Digest": DIGEST})
_static("head-status-304", "manifest", "HTTP 304 Not Modified, unasked", 304, {"Docker-Content-Digest": DIGEST})
_static("head-status-500", "manifest", "HTTP 500", 500, {"Content-Type": "text/html"})
_static("head-redirect-no-location", "manifest", "302 without Location", 302, {})


@_kind("head-401-always", "manifest", "401 with a fresh challenge whatever the token")
def _always_401(h: _Handler) -> None:
    h.json(401, {"errors": [{"code": "UNAUTHORIZED", "message": "try again"}]}, h.challenge())


_static("head-ratelimit-huge-number", "manifest", "valid, with a ratelimit-remaining of 5,000 digits", 200,
        {**_GOOD, "Content-Length": "300", "Docker-Content-Digest": DIGEST, "ratelimit-limit": "9" * 5000,
         "ratelimit-remaining": "9" * 5000}, expect="ok")
_static("head-media-type-garbage", "manifest", "valid digest, a Content-Type of 10 KB of junk", 200,
        {"Content-Type": "\x7f" + "z" * 10_000, "Content-Length": "300", "Docker-Content-Digest": DIGEST},
        expect="ok")


@_kind("head-status-garbage", "manifest", "a status line that is not HTTP")
def _bad_status(h: _Handler) -> None:
    h.raw(b"HTTP/1.1 abc OK\r\n\r\n")


@_kind("head-not-http", "manifest", "answers with another protocol's banner")
def _not_http(h: _Handler) -> None:
    h.raw(b"SSH-2.0-OpenSSH_9.6\r\n")


@_kind("head-close", "manifest", "closes the connection without answering")
def _close(h: _Handler) -> None:
    h.close_connection = True


@_kind("head-stall", "manifest", "never answers")
def _head_stall(h: _Handler) -> None:
    h.stall()


@_kind("head-drip-headers", "manifest", "a header dripped one byte every 0.2 s (slowloris)")
def _head_drip(h: _Handler) -> None:
    h.drip(b"HTTP/1.1 200 OK\r\nDocker-Content-Digest: sha256:")


@_kind("head-redirect-loop", "manifest", "redirects to itself")
def _head_loop(h: _Handler) -> None:
    h.reply(301, b"", {"Location": h.path})


@_kind("head-redirect-chain", "manifest", "redirects along an endless chain of new URLs on the same host")
def _head_chain(h: _Handler) -> None:
    h.reply(302, b"", {"Location": f"/{h.kind.name}/hop/1"})


def _next_hop(h: _Handler) -> None:
    hop = int(h.rest.rsplit("/", 1)[-1] or 0) if h.rest.startswith("/hop/") else 0
    h.reply(302, b"", {"Location": f"/{h.kind.name}/hop/{hop + 1}"})


@_kind("head-redirect-other-host", "manifest", "redirects to another host (the recorder)")
def _head_away(h: _Handler) -> None:
    h.reply(307, b"", {"Location": f"{h.server.recorder_https}/steal{h.rest}"})


@_kind("head-redirect-http", "manifest", "redirects to plain http (the http recorder)")
def _head_http(h: _Handler) -> None:
    h.reply(302, b"", {"Location": f"{h.server.recorder_http}/steal{h.rest}"})


@_kind("head-redirect-userinfo", "manifest", "redirects to https://user:pass@another host")
def _head_userinfo(h: _Handler) -> None:
    away = h.server.recorder_https.replace("https://", "https://admin:hunter2@")
    h.reply(302, b"", {"Location": f"{away}/steal"})


# The /v2/ probe and its challenge.
@_kind("base-stall", "base", "GET /v2/ never answers")
def _base_stall(h: _Handler) -> None:
    h.stall()


_static("base-500", "base", "GET /v2/ answers 500", 500, {"Content-Type": "text/plain"}, "oops")
_static("base-challenge-no-realm", "base", "a Bearer challenge without realm", 401,
        {"WWW-Authenticate": 'Bearer service="x"'})
_static("base-challenge-unterminated", "base", "a Bearer challenge with an unterminated quote", 401,
        {"WWW-Authenticate": 'Bearer realm="https://127.0.0.1'})
_static("base-challenge-javascript", "base", "a realm that is not a URL", 401,
        {"WWW-Authenticate": 'Bearer realm="javascript:alert(1)",service="x"'})


@_kind("base-redirect-other-host", "base", "GET /v2/ redirects to another host")
def _base_away(h: _Handler) -> None:
    h.reply(302, b"", {"Location": f"{h.server.recorder_https}/v2/"})


@_kind("realm-http", "base", "the token realm is plain http on another host (the http recorder)")
def _realm_http(h: _Handler) -> None:
    h.json(401, {}, {"WWW-Authenticate": f'Bearer realm="{h.server.recorder_http}/token",service="x"'})


@_kind("realm-other-host", "base", "the token realm is on another host (the recorder)")
def _realm_away(h: _Handler) -> None:
    h.json(401, {}, {"WWW-Authenticate": f'Bearer realm="{h.server.recorder_https}/token",service="x"'})


# Token endpoints answering garbage.
for _name, _text, _why in [
    ("token-not-json", "<html>login</html>", "an HTML page"),
    ("token-array", "[]", "an array"),
    ("token-missing", "{}", "no token"),
    ("token-number", '{"token": 123}', "a number for a token"),
    ("token-header-injection", json.dumps({"token": "abc\r\nX-Injected: 1"}), "a token with CR LF"),
    ("token-huge", json.dumps({"token": "a" * 100_000}), "a 100 KB token"),
    ("token-expires-string", json.dumps({"token": REGISTRY_TOKEN, "expires_in": "soon"}), 'expires_in: "soon"'),
    ("token-expires-negative", json.dumps({"token": REGISTRY_TOKEN, "expires_in": -60}), "expires_in: -60"),
    ("token-expires-bool", json.dumps({"token": REGISTRY_TOKEN, "expires_in": True}), "expires_in: true"),
]:
    _static(_name, "token", _why, 200, {"Content-Type": "application/json"}, _text)
_static("token-expires-huge", "token", "expires_in: 1e300 (kept at most 3 hours)", 200,
        {"Content-Type": "application/json"}, json.dumps({"token": REGISTRY_TOKEN, "expires_in": 1e300}),
        expect="ok")
_static("token-401", "token", "the token service refuses", 401, {"Content-Type": "application/json"},
        '{"errors": [{"code": "UNAUTHORIZED", "message": "no"}]}')


@_kind("token-redirect", "token", "the token service redirects to another host (the recorder)")
def _token_away(h: _Handler) -> None:
    h.reply(302, b"", {"Location": f"{h.server.recorder_https}/token"})


@_kind("token-redirect-same-host", "token", "the token service redirects on its own host")
def _token_hop(h: _Handler) -> None:
    h.reply(302, b"", {"Location": f"/{h.kind.name}/token2"})


@_kind("token-stall", "token", "the token service never answers")
def _token_stall(h: _Handler) -> None:
    h.stall()


@_kind("token-drip", "token", "the token service drips its answer")
def _token_drip(h: _Handler) -> None:
    h.drip(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"token\": \"")


# ACR: the app's Entra identity is exchanged for registry tokens; it must go nowhere else.
@_kind("acr-realm-other-host", "base", "the ACR realm is on another host (the recorder)", identity=True)
def _acr_away(h: _Handler) -> None:
    h.json(401, {}, {"WWW-Authenticate": f'Bearer realm="{h.server.recorder_https}/oauth2/token",'
                                         f'service="{h.kind.host}"'})


@_kind("acr-realm-http", "base", "the ACR realm is plain http (the http recorder)", identity=True)
def _acr_http(h: _Handler) -> None:
    h.json(401, {}, {"WWW-Authenticate": f'Bearer realm="{h.server.recorder_http}/oauth2/token",'
                                         f'service="{h.kind.host}"'})


@_kind("acr-realm-not-oauth", "base", "the ACR realm on the registry's host is not an /oauth2/token endpoint",
       identity=True)
def _acr_not_oauth(h: _Handler) -> None:
    h.json(401, {}, {"WWW-Authenticate": f'Bearer realm="{h.here}/token",service="{h.kind.host}"'})


_static("acr-exchange-not-json", "exchange", "the exchange answers HTML", 200, {"Content-Type": "text/html"},
        "<html/>", identity=True)
_static("acr-exchange-number", "exchange", "refresh_token is a number", 200, {"Content-Type": "application/json"},
        '{"refresh_token": 7}', identity=True)
_static("acr-token-not-object", "acr-token", "the ACR token endpoint answers an array", 200,
        {"Content-Type": "application/json"}, "[1]", identity=True)


@_kind("acr-exchange-redirect", "exchange", "the exchange redirects to another host (the recorder)", identity=True)
def _exchange_away(h: _Handler) -> None:
    h.reply(307, b"", {"Location": f"{h.server.recorder_https}/oauth2/exchange"})


# TLS: each of these has a listener of its own (see HostileRegistry._tls_listeners).
for _name, _why in [
    ("tls-untrusted", "a certificate from a CA nobody trusts"),
    ("tls-wrong-name", "a certificate from the stack's CA for another name"),
    ("tls-expired", "an expired certificate from the stack's CA"),
    ("tls-plain-http", "plain HTTP on the https endpoint"),
    ("tls-handshake-stall", "accepts and never says a word"),
    ("tls-close", "accepts and closes at once"),
]:
    _kind(_name, "tls", _why)(None)

# Referrers (REFERRER_KINDS): the OCI 1.1 referrers API, then the tag schema fallback.
def _is_tag_schema_tag(ref: str) -> bool:
    """`sha256-<64 hex>`: the referrers tag schema's tag for a subject (not cosign's `.sig` and friends)."""
    hexpart = ref.removeprefix("sha256-")
    return ref.startswith("sha256-") and len(hexpart) == 64 and all(c in "0123456789abcdef" for c in hexpart)


_HUGE: dict[str, bytes] = {}


def huge_referrers_index() -> bytes:
    """HUGE_REFERRERS well-formed descriptors, each of a different (absent) signature: about 17 MB."""
    if "index" not in _HUGE:
        _HUGE["index"] = referrers_index([
            {"mediaType": OCI_MANIFEST, "digest": "sha256:" + hashlib.sha256(str(i).encode()).hexdigest(),
             "size": 700, "artifactType": NOTARY_SIGNATURE} for i in range(HUGE_REFERRERS)])
    return _HUGE["index"]


for _name, _manifests, _why in [
    ("referrers-manifests-object", SIGNATURE_DESCRIPTOR, '"manifests" is an object, not a list'),
    ("referrers-manifests-string", SIGNATURE_DIGEST, '"manifests" is a string (a digest)'),
    ("referrers-manifests-null", None, '"manifests" is null'),
    ("referrers-descriptor-not-object", [SIGNATURE_DIGEST, 7, None, [SIGNATURE_DESCRIPTOR]],
     "descriptors that are a string, a number, null and a list"),
    ("referrers-digest-number", [{**SIGNATURE_DESCRIPTOR, "digest": 12345}], "a descriptor whose digest is a number"),
    ("referrers-digest-not-digest",
     [{**SIGNATURE_DESCRIPTOR, "digest": d} for d in ("latest", "sha256:../../../etc/passwd", "md5:" + "a" * 32,
                                                       "sha256:" + "A" * 64, "sha256:" + "a" * 50_000)],
     "digests that are not digests: a tag, a path, md5, upper-case hex, 50,000 characters"),
    ("referrers-artifact-type-number", [{**SIGNATURE_DESCRIPTOR, "artifactType": 42}], "artifactType is a number"),
    ("referrers-size-lies", [{**SIGNATURE_DESCRIPTOR, "size": -1}, {**SIGNATURE_DESCRIPTOR, "size": 10**30}],
     "the signature listed with size -1 and 10^30"),
]:
    _static(_name, "referrers", _why, 200, {"Content-Type": OCI_INDEX}, referrers_index(_manifests))

_static("referrers-top-level-array", "referrers", "the answer is a JSON array of descriptors", 200,
        {"Content-Type": OCI_INDEX}, json.dumps([SIGNATURE_DESCRIPTOR]))
_static("referrers-not-json", "referrers", "200 with an HTML page", 200, {"Content-Type": "text/html"},
        "<html><body>Welcome to nginx!</body></html>")
_static("referrers-media-type-manifest", "referrers", "200 with an image manifest (Content-Type and body), not an "
        "index", 200, {"Content-Type": OCI_MANIFEST}, SIGNATURE)
_static("referrers-media-type-html", "referrers", "200 with a well-formed referrers index served as text/html", 200,
        {"Content-Type": "text/html"}, referrers_index([SIGNATURE_DESCRIPTOR]))
_static("referrers-wrong-subject", "referrers", "lists a signature whose manifest names another subject", 200,
        {"Content-Type": OCI_INDEX}, referrers_index([referrer_descriptor(ELSEWHERE_DIGEST, ELSEWHERE_SIGNATURE)]))


@_kind("referrers-huge-index", "referrers", f"one index of {HUGE_REFERRERS:,} descriptors")
def _referrers_huge(h: _Handler) -> None:
    h.index(huge_referrers_index())


@_kind("referrers-self-subject", "referrers", "every subject is listed as its own referrer (beside the signature)",
       expect="ok")
def _referrers_self(h: _Handler) -> None:
    itself = referrer_descriptor(h.reference, INDEX, OCI_INDEX)
    h.index(referrers_index([itself, SIGNATURE_DESCRIPTOR] if h.reference == DIGEST else [itself]))


@_kind("referrers-cycle", "referrers", "a cycle: the image's referrer is the signature, the signature's referrer "
       "is the image (A -> B -> A)", expect="ok")
def _referrers_cycle(h: _Handler) -> None:
    if h.reference == DIGEST:
        h.index(referrers_index([SIGNATURE_DESCRIPTOR]))
    elif h.reference == SIGNATURE_DIGEST:
        h.index(referrers_index([referrer_descriptor(DIGEST, INDEX, OCI_INDEX)]))
    else:
        h.index(referrers_index([]))


def _referrers_page(h: _Handler, link: str) -> None:
    h.index(referrers_index([SIGNATURE_DESCRIPTOR] if h.reference == DIGEST else []), {"Link": f'<{link}>; rel="next"'})


@_kind("referrers-link-loop", "referrers", "the next page (Link header) is the page itself")
def _referrers_loop(h: _Handler) -> None:
    _referrers_page(h, f"/{h.kind.name}{h.rest}")


@_kind("referrers-link-cycle", "referrers", "page A links to B, B links back to A")
def _referrers_link_cycle(h: _Handler) -> None:
    other = "b" if "page=b" not in h.path else "a"
    _referrers_page(h, f"/{h.kind.name}{h.rest}?page={other}")


@_kind("referrers-endless-pages", "referrers", "every page links to a new next page")
def _referrers_endless(h: _Handler) -> None:
    page = int((parse_qs(urlsplit(h.path).query).get("page") or ["0"])[0] or 0)
    _referrers_page(h, f"/{h.kind.name}{h.rest}?page={page + 1}")


@_kind("referrers-link-other-host", "referrers", "the next page is on another host (the recorder): cross-origin")
def _referrers_link_away(h: _Handler) -> None:
    _referrers_page(h, f"{h.server.recorder_https}/v2/{REPOSITORY}/referrers/{h.reference}?page=2")


@_kind("referrers-redirect-other-host", "referrers", "redirects to another host (the recorder)")
def _referrers_away(h: _Handler) -> None:
    h.reply(307, b"", {"Location": f"{h.server.recorder_https}/steal{h.rest}"})


@_kind("referrers-stall-mid-body", "referrers", "sends the headers and half the index, then never the rest")
def _referrers_stall(h: _Handler) -> None:
    body = referrers_index([SIGNATURE_DESCRIPTOR])
    h.raw(f"HTTP/1.1 200 OK\r\nContent-Type: {OCI_INDEX}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
          + body[: len(body) // 2])
    h.stall()


@_kind("referrers-drip-body", "referrers", "the index dripped one byte every 0.2 s")
def _referrers_drip(h: _Handler) -> None:
    h.drip(f"HTTP/1.1 200 OK\r\nContent-Type: {OCI_INDEX}\r\nContent-Length: 1000000\r\n\r\n".encode()
           + b'{"manifests": [', b" ")


# The tag schema: no referrers API (404), a `sha256-<hex>` tag instead.
@_kind("referrers-tag-schema", "referrers-tag", "no referrers API; the tag schema's index lists the signature "
       "(well-formed: the fallback's control case)", expect="ok")
def _tag_schema(h: _Handler) -> None:
    h.index(referrers_index([SIGNATURE_DESCRIPTOR] if h.reference == TAG_SCHEMA_TAG else []))


@_kind("referrers-tag-plain-image", "referrers-tag", "no referrers API; the `sha256-<hex>` tag is a plain image "
       "manifest, not an index (the spec: the client SHOULD then assume no referrers; the app says so)")
def _tag_plain_image(h: _Handler) -> None:
    image = _canonical({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                   "digest": _sha256(EMPTY_CONFIG), "size": 2},
                        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                    "digest": _sha256(ENVELOPE), "size": len(ENVELOPE)}]})
    h.reply(200, image, {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": _sha256(image)})


@_kind("referrers-tag-manifests-object", "referrers-tag", 'no referrers API; the tag\'s index has "manifests" as '
       "an object")
def _tag_manifests_object(h: _Handler) -> None:
    h.index(referrers_index(SIGNATURE_DESCRIPTOR))


@_kind("referrers-tag-huge-index", "referrers-tag", f"no referrers API; the tag's index lists {HUGE_REFERRERS:,} "
       "descriptors")
def _tag_huge(h: _Handler) -> None:
    h.index(huge_referrers_index())


@_kind("referrers-tag-redirect-other-host", "referrers-tag", "no referrers API; the tag redirects to another host "
       "(the recorder)")
def _tag_away(h: _Handler) -> None:
    h.reply(307, b"", {"Location": f"{h.server.recorder_https}/steal{h.rest}"})


@_kind("referrers-tag-stall-mid-body", "referrers-tag", "no referrers API; the tag's index stops half-way and "
       "stalls")
def _tag_stall(h: _Handler) -> None:
    body = referrers_index([SIGNATURE_DESCRIPTOR])
    h.raw(f"HTTP/1.1 200 OK\r\nContent-Type: {OCI_INDEX}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
          + body[: len(body) // 2])
    h.stall()


KINDS_BY_NAME = {k.name: k for k in (*KINDS, *REFERRER_KINDS)}


# --- servers ---------------------------------------------------------------------------------------------
class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler, owner: HostileRegistry) -> None:
        super().__init__(address, handler)
        self.owner = owner
        self.kinds = KINDS_BY_NAME
        self.stopping = owner.stopping

    def handle_error(self, request, client_address) -> None:  # clients hanging up on us is the point
        pass

    @property
    def base(self) -> str:
        return self.owner.base

    @property
    def recorder_https(self) -> str:
        return self.owner.recorder_https

    @property
    def recorder_http(self) -> str:
        return self.owner.recorder_http

    def gzip_bomb(self) -> bytes:
        return self.owner.gzip_bomb()


class _HopHandler(_Handler):
    """The main handler, plus the endless redirect chain's later hops."""

    def _dispatch(self) -> None:
        path = urlsplit(self.path).path
        if "/hop/" in path:
            self.kind = self.server.kinds.get(path.split("/")[1])
            self.rest = "/" + path.split("/", 2)[2]
            _next_hop(self)
            return
        super()._dispatch()

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class _Recorder(BaseHTTPRequestHandler):
    """Another host: records whatever arrives, answers as a friendly token service would."""

    server: Any
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _record(self) -> None:
        length = self.headers.get("Content-Length")
        body = self.rfile.read(int(length)) if length and length.isdigit() and int(length) < 1 << 20 else b""
        with self.server.owner.lock:
            self.server.owner.recorded.append(Recorded(self.command, self.path, dict(self.headers.items()), body))
        data = json.dumps({"token": "recorder-token", "access_token": "recorder-token",
                           "refresh_token": "recorder-token", "tags": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Docker-Content-Digest", DIGEST)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _record


class _RecorderServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], owner: HostileRegistry) -> None:
        super().__init__(address, _Recorder)
        self.owner = owner


@dataclass
class HostileRegistry:
    """The hostile registry, its recorders and its TLS listeners, on free loopback ports."""

    host: str = layout.HOST
    stopping: threading.Event = field(default_factory=threading.Event)
    recorded: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    base: str = ""
    recorder_https: str = ""
    recorder_http: str = ""
    tls_endpoints: dict[str, str] = field(default_factory=dict)
    _servers: list[Any] = field(default_factory=list)
    _sockets: list[socket.socket] = field(default_factory=list)
    _bomb: bytes | None = None
    _folder: Path | None = None

    def start(self) -> HostileRegistry:
        ca.ensure_ca()
        self._folder = Path(tempfile.mkdtemp(prefix="hostile-registry-"))
        main = _Server((self.host, 0), _HopHandler, self)
        ca.serve_tls(main)
        self.base = f"https://{self.host}:{main.server_address[1]}"
        secure = _RecorderServer((self.host, 0), self)
        ca.serve_tls(secure)
        self.recorder_https = f"https://localhost:{secure.server_address[1]}"
        plain = _RecorderServer((self.host, 0), self)
        self.recorder_http = f"http://localhost:{plain.server_address[1]}"
        for server in (main, secure, plain):
            self._serve(server)
        self._tls_listeners()
        return self

    def stop(self) -> None:
        self.stopping.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for sock in self._sockets:
            sock.close()

    def __enter__(self) -> HostileRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # what the app is told
    def endpoint(self, kind: Kind) -> str:
        return self.tls_endpoints.get(kind.name) or f"{self.base}/{kind.name}"

    def endpoints(self, kinds: list[Kind] | None = None) -> dict[str, str]:
        """Registry host -> endpoint, for REGISTRY_ENDPOINTS."""
        return {k.host: self.endpoint(k) for k in (KINDS if kinds is None else kinds)}

    def endpoints_setting(self, kinds: list[Kind] | None = None) -> str:
        return ",".join(f"{host}={url}" for host, url in self.endpoints(kinds).items())

    # what reached another host
    def reset(self) -> None:
        with self.lock:
            self.recorded.clear()

    def credentials_received(self, secrets: tuple[str, ...] = ()) -> list[Recorded]:
        """Requests to the recorders that carried a credential: an Authorization or Cookie header, userinfo,
        a token or password field, or any of `secrets` anywhere."""
        found = []
        with self.lock:
            recorded = list(self.recorded)
        for request in recorded:
            names = {k.lower() for k in request.headers}
            text = request.path + " " + request.body.decode("latin-1") + " " + json.dumps(request.headers)
            if names & {"authorization", "cookie", "proxy-authorization"} or any(s and s in text for s in secrets) \
                    or any(f in text for f in ("access_token=", "refresh_token=", "password=")):
                found.append(request)
        return found

    # helpers
    def gzip_bomb(self) -> bytes:
        if self._bomb is None:
            self._bomb = gzip.compress(b"\0" * (64 << 20), compresslevel=9)
        return self._bomb

    def _serve(self, server) -> None:
        self._servers.append(server)
        threading.Thread(target=server.serve_forever, name=f"hostile-{len(self._servers)}", daemon=True).start()

    def _tls_listeners(self) -> None:
        assert self._folder is not None
        stack_ca = trustme.CA.from_pem(layout.CA_CERT.read_bytes(), layout.CA_KEY.read_bytes())
        stranger = trustme.CA(organization_name="nobody trusts this")
        past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
        certs = {
            "tls-untrusted": stranger.issue_cert("localhost", "127.0.0.1"),
            "tls-wrong-name": stack_ca.issue_cert("wrong.example"),
            "tls-expired": stack_ca.issue_cert("localhost", "127.0.0.1", not_before=past - datetime.timedelta(days=2),
                                               not_after=past),
        }
        for name, cert in certs.items():
            server = _Server((self.host, 0), _HopHandler, self)
            cert_file, key_file = self._folder / f"{name}.pem", self._folder / f"{name}.key"
            with open(cert_file, "wb") as out:
                for blob in cert.cert_chain_pems:
                    out.write(blob.bytes())
            cert.private_key_pem.write_to_path(str(key_file))
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(cert_file), str(key_file))
            server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
            self._serve(server)
            self.tls_endpoints[name] = f"https://{self.host}:{server.server_address[1]}/{name}"
        plain = _Server((self.host, 0), _HopHandler, self)
        self._serve(plain)
        self.tls_endpoints["tls-plain-http"] = f"https://{self.host}:{plain.server_address[1]}/tls-plain-http"
        for name, hold in (("tls-handshake-stall", True), ("tls-close", False)):
            listener = socket.create_server((self.host, 0))
            self._sockets.append(listener)
            threading.Thread(target=self._accept, args=(listener, hold), daemon=True).start()
            self.tls_endpoints[name] = f"https://{self.host}:{listener.getsockname()[1]}/{name}"

    def _accept(self, listener: socket.socket, hold: bool) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            if hold:
                threading.Thread(target=self._hold, args=(conn,), daemon=True).start()
            else:
                conn.close()

    def _hold(self, conn: socket.socket) -> None:
        self.stopping.wait(STALL_SECONDS)
        conn.close()


def main() -> None:
    registry = HostileRegistry().start()
    print(f"hostile registry on {registry.base} ({len(KINDS)} kinds); recorders {registry.recorder_https} "
          f"and {registry.recorder_http}")
    print(f"REGISTRY_ENDPOINTS entries:\n{registry.endpoints_setting()}")
    print(f"and for the {len(REFERRER_KINDS)} referrer kinds:\n{registry.endpoints_setting(REFERRER_KINDS)}")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        registry.stop()
        with registry.lock:
            for request in registry.recorded:
                print(f"recorded: {request.method} {request.path} {sorted(request.headers)}")


if __name__ == "__main__":
    main()
