"""A scriptable HTTPS front for the Docker Hub registry stand-in: what docker-registry cannot do itself.

It forwards every `/v2/` request to the Docker Hub registry process and adds Docker Hub's
`ratelimit-limit` / `ratelimit-remaining` headers (manifest GETs count as pulls, HEADs do not, as on
Docker Hub). It counts requests per method and kind (`HEAD manifests`, `GET tags`, `GET referrers`, ...),
and can be told to answer 429 with `Retry-After`. It serves the OCI 1.1 referrers API
(`GET /v2/<repo>/referrers/<digest>`), which Docker Hub has served since 2025 (awslabs/soci-snapshotter issue
#1828: "Docker Hub added support for Referrers API"; dotnet/docker-tools PR #2071 logs `HTTP 200 GET
https://registry-1.docker.io/v2/.../referrers/sha256:...`) and docker-registry 2.8 does not, from the
registry's storage (dev/referrers_index.py), authorized as a pull (a token from the Docker Hub token server
granting `pull` on the repository, else 401 with the registry's Bearer challenge); and answers a manifest PUT
carrying a `subject` with `OCI-Subject`, as a registry with the API does.
The app reads Docker Hub through it (REGISTRY_ENDPOINTS on the stack); ACR imports copy from the registry
directly, so the counts are the app's own reads.

Control (loopback only): `GET|DELETE /_front/stats`, `POST /_front/faults` `{"status": 429,
"retry_after": 30, "count": 1}` (count null: until cleared), `DELETE /_front/faults`, `POST /_front/referrers`
`{"page_size": 2}` (null: one page), `GET /_front/health`.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import jwt
import requests
from requests.adapters import HTTPAdapter

from dev import ca, layout, referrers_index, tokens

PULL_LIMIT = 100
WINDOW = "w=21600"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "content-length",
              "proxy-authenticate", "proxy-authorization", "host"}


def request_kind(path: str) -> str:
    """`manifests`, `tags`, `blobs`, `referrers`, `base` (/v2/) or `other`, from a registry API path."""
    if path.rstrip("/") == "/v2":
        return "base"
    for kind in ("manifests", "tags", "blobs", "referrers"):
        if f"/{kind}/" in path:
            return kind
    return "other"


def paginate_tags(path: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    """Pages of `n` tags after `last`, with a `Link` to the next page, as Docker Hub serves them
    (distribution 2.8 ignores `n` on tag lists)."""
    url = urlsplit(path)
    query = parse_qs(url.query)
    tags = sorted(body.get("tags") or [])
    if "last" in query:
        tags = [t for t in tags if t > query["last"][0]]
    out = dict(headers)
    if "n" in query:
        size = max(1, int(query["n"][0]))
        if len(tags) > size:
            out["Link"] = f'<{url.path}?n={size}&last={quote(tags[size - 1])}>; rel="next"'
        tags = tags[:size]
    return json.dumps({"name": body.get("name"), "tags": tags}).encode(), out


class FrontServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], upstream: str):
        super().__init__(address, _Handler)
        self.upstream = upstream
        self.lock = threading.Lock()
        self.stats: Counter[str] = Counter()
        self.pulls = 0
        self.fault: dict[str, Any] | None = None
        self.referrers_page_size: int | None = None  # None: the referrers API answers in one page
        self.session = requests.Session()
        self.session.mount("https://", HTTPAdapter(pool_maxsize=64))
        self.session.verify = str(layout.CA_CERT)

    def take_fault(self) -> dict[str, Any] | None:
        with self.lock:
            fault = self.fault
            if fault is None:
                return None
            if fault.get("count") is not None:
                fault["count"] -= 1
                if fault["count"] <= 0:
                    self.fault = None
            return fault


class _Handler(BaseHTTPRequestHandler):
    server: FrontServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # the registry behind logs every request
        pass

    def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, doc: Any) -> None:
        self._reply(status, json.dumps(doc).encode(), {"Content-Type": "application/json"})

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _control(self, path: str) -> None:
        server = self.server
        if path == "/_front/health":
            self._json(200, {"status": "ok"})
        elif path == "/_front/stats" and self.command == "GET":
            with server.lock:
                self._json(200, {"requests": dict(server.stats), "pulls": server.pulls})
        elif path == "/_front/stats" and self.command == "DELETE":
            with server.lock:
                server.stats.clear()
                server.pulls = 0
            self._json(200, {})
        elif path == "/_front/faults" and self.command == "POST":
            fault = json.loads(self._body() or b"{}")
            with server.lock:
                server.fault = {"status": int(fault.get("status", 429)), "retry_after": fault.get("retry_after"),
                                "count": fault.get("count")}
            self._json(200, server.fault)
        elif path == "/_front/referrers" and self.command == "POST":
            page_size = json.loads(self._body() or b"{}").get("page_size")
            if page_size is not None and (not isinstance(page_size, int) or page_size < 1):
                self._json(400, {"details": "page_size must be a positive integer or null"})
                return
            with server.lock:
                server.referrers_page_size = page_size
            self._json(200, {"page_size": page_size})
        elif path == "/_front/faults" and self.command == "DELETE":
            with server.lock:
                server.fault = None
            self._json(200, {})
        else:
            self._json(404, {"details": "not found"})

    def _forward(self) -> None:
        server = self.server
        path = urlsplit(self.path).path
        kind = request_kind(path)
        body = self._body()
        with server.lock:
            server.stats[f"{self.command} {kind}"] += 1
        fault = server.take_fault() if path.startswith("/v2/") and kind != "base" else None
        if fault is not None:
            headers = {"Content-Type": "application/json", **self._limit_headers()}
            if fault.get("retry_after") is not None:
                headers["Retry-After"] = str(fault["retry_after"])
            self._reply(fault["status"], json.dumps({"errors": [{"code": "TOOMANYREQUESTS", "message":
                        "You have reached your pull rate limit."}]}).encode(), headers)
            return
        if kind == "referrers" and self.command in ("GET", "HEAD"):
            self._referrers()
            return
        headers = {k: ", ".join(self.headers.get_all(k) or []) for k in set(self.headers.keys())
                   if k.lower() not in HOP_BY_HOP}  # Go clients send one Accept line per media type
        try:
            answer = server.session.request(self.command, server.upstream + self.path, headers=headers,
                                            data=body or None, allow_redirects=False, timeout=60)
        except requests.RequestException as exc:
            self._json(502, {"details": f"upstream: {type(exc).__name__}"})
            return
        if kind == "manifests" and self.command == "GET" and answer.status_code == 200:
            with server.lock:
                server.pulls += 1
        out = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
        if kind == "manifests":
            out.update(self._limit_headers())
            subject = referrers_index.subject_of(body) if self.command == "PUT" and answer.status_code == 201 else None
            if subject is not None:
                out[referrers_index.SUBJECT_HEADER] = subject
        if kind == "tags" and self.command == "GET" and answer.status_code == 200:
            self._reply(200, *paginate_tags(self.path, answer.json(), out))
            return
        if self.command == "HEAD":
            self.send_response(answer.status_code)
            for key, value in out.items():
                self.send_header(key, value)
            self.send_header("Content-Length", answer.headers.get("Content-Length", "0"))
            self.end_headers()
            return
        self._reply(answer.status_code, answer.content, out)

    def _referrers(self) -> None:
        url = urlsplit(self.path)
        match = referrers_index.REFERRERS_PATH.fullmatch(unquote(url.path))
        if match is None:
            self._json(404, {"errors": [{"code": "NOT_FOUND", "message": "not found"}]})
            return
        repository, digest = match.group("repo"), match.group("digest")
        if not referrers_index.REPOSITORY_NAME.fullmatch(repository):
            self._json(400, {"errors": [{"code": "NAME_INVALID", "message": "invalid repository name",
                                         "detail": {"name": repository}}]})
            return
        refusal = self._pull_refusal(repository)
        if refusal is not None:
            self._reply(401, json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required",
                                                     "detail": [{"Type": "repository", "Class": "",
                                                                 "Name": repository, "Action": "pull"}]}]}).encode(),
                        {"Content-Type": "application/json", "WWW-Authenticate": refusal})
            return
        artifact_type = (parse_qs(url.query).get("artifactType") or [""])[0] or None
        with self.server.lock:
            page_size = self.server.referrers_page_size
        found = referrers_index.answer(referrers_index.storage_root(layout.DOCKERHUB), repository, digest,
                                       artifact_type, page_size=page_size,
                                       last=(parse_qs(url.query).get("last") or [""])[0] or None)
        self._reply(found.status, found.encoded(), found.headers)

    def _pull_refusal(self, repository: str) -> str | None:
        """None when the bearer token grants `pull` on the repository, else the challenge to answer with."""
        challenge = (f'Bearer realm="{layout.DOCKERHUB_TOKEN_REALM}",service="{layout.DOCKERHUB_SERVICE}",'
                     f'scope="repository:{repository}:pull"')
        header = self.headers.get("Authorization", "")
        if header[:7].lower() != "bearer ":
            return challenge
        try:
            claims = tokens.verify_registry_token(header[7:].strip(), service=layout.DOCKERHUB_SERVICE)
        except jwt.PyJWTError:
            return challenge
        for grant in claims.get("access") or []:
            if grant.get("type") == "repository" and grant.get("name") == repository and "pull" in (
                    grant.get("actions") or []):
                return None
        return challenge + ',error="insufficient_scope"'

    def _limit_headers(self) -> dict[str, str]:
        with self.server.lock:
            remaining = max(0, PULL_LIMIT - self.server.pulls)
        return {"ratelimit-limit": f"{PULL_LIMIT};{WINDOW}", "ratelimit-remaining": f"{remaining};{WINDOW}",
                "docker-ratelimit-source": "127.0.0.1"}

    def _dispatch(self) -> None:
        path = urlsplit(self.path).path
        if path.startswith("/_front/"):
            self._control(path)
        else:
            self._forward()

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch


def make_server(port: int = layout.DOCKERHUB_FRONT_PORT) -> FrontServer:
    ca.ensure_ca()
    server = FrontServer((layout.HOST, port), f"https://{layout.HOST}:{layout.DOCKERHUB.port}")
    ca.serve_tls(server)
    return server


def base_url() -> str:
    return f"https://{layout.HOST}:{layout.DOCKERHUB_FRONT_PORT}"


def is_ready(timeout: float = 1.0) -> bool:
    try:
        return requests.get(f"{base_url()}/_front/health", verify=str(layout.CA_CERT),
                            timeout=timeout).status_code == 200
    except (requests.RequestException, OSError):
        return False


class FrontControl:
    """The test side of the front: counts and scripted faults."""

    def __init__(self) -> None:
        self._session = requests.Session()
        self._session.verify = str(layout.CA_CERT)
        self._session.trust_env = False  # else REQUESTS_CA_BUNDLE (a system bundle) overrides the stack's CA

    def stats(self) -> dict[str, int]:
        return self._session.get(f"{base_url()}/_front/stats", timeout=5).json()["requests"]

    def reset(self) -> None:
        self._session.delete(f"{base_url()}/_front/stats", timeout=5).raise_for_status()
        self._session.delete(f"{base_url()}/_front/faults", timeout=5).raise_for_status()
        self.referrers_page_size(None)

    def referrers_page_size(self, size: int | None) -> None:
        """Pages of `size` referrers with a `Link` to the next (None: one page, the default)."""
        self._session.post(f"{base_url()}/_front/referrers", json={"page_size": size}, timeout=5).raise_for_status()

    def fail(self, status: int = 429, *, retry_after: float | None = None, count: int | None = None) -> None:
        self._session.post(f"{base_url()}/_front/faults", json={"status": status, "retry_after": retry_after,
                                                               "count": count}, timeout=5).raise_for_status()


def main() -> None:
    server = make_server()
    ca.serve_until_stopped(server, f"Docker Hub front on {base_url()} -> {server.upstream}")


if __name__ == "__main__":
    main()
