"""ACR login servers: one HTTPS listener per registry (`layout.AcrSpec.port`), as `<name>.azurecr.io` is.

ACR serves its token service on the login server itself: a registry challenge reads
`Bearer realm="https://<login server>/oauth2/token",service="<login server>"` and `/oauth2/exchange` sits
beside it at the root of the same host (the ACR data-plane spec in azure-rest-api-specs puts `/oauth2/exchange`
and `/oauth2/token` on the registry's `{url}`; azure-cli 2.91's `acr/_docker_utils.py`
`_get_aad_token_after_challenge` takes the realm's scheme and host and posts to `/oauth2/exchange` there, then
`/oauth2/token`, so a realm below a path, as the old `/acr/<name>/oauth2/token` on the ARM host, breaks
`az acr login`). Here the
`/oauth2/*` paths, ACR's `/acr/v1` listing and the OCI 1.1 referrers API (`/v2/<repo>/referrers/<digest>`,
which ACR serves and docker-registry 2.8 does not) are answered in-process (roles come from the stand-in's
world) and everything else is
passed, streamed, to the registry's storage: the docker-registry on `AcrSpec.storage_port`, whose token
auth names this listener's `/oauth2/token` as realm. Nothing of ACR's token service is on the ARM host.
"""

from __future__ import annotations

import http.client
import logging
import re
import ssl
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from dev import layout, referrers_index
from dev.azure_standin.acr_auth import serve_acr_auth
from dev.azure_standin.acr_listing import authorize, serve_listing
from dev.azure_standin.http_base import Request, Response
from dev.azure_standin.world import World
from dev.ca import serve_tls

log = logging.getLogger("azure_standin.login_server")
OAUTH = re.compile(r"/oauth2/(exchange|token)/?")
MANIFEST_PUT = re.compile(r"/v2/.+/manifests/[^/]+")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}
_CHUNK = 64 << 10


def _storage_context() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(layout.CA_CERT))


class LoginServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, world: World, acr: layout.AcrSpec, port: int | None = None) -> None:
        self.world = world
        self.acr = acr
        self.context = _storage_context()
        super().__init__((layout.HOST, acr.port if port is None else port), _Handler)
        serve_tls(self)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "azure-standin-acr"
    server: LoginServer

    def _serve(self) -> None:
        url = urlsplit(self.path)
        match = OAUTH.fullmatch(url.path)
        if match:
            self._token_service(url, match.group(1))
        elif url.path.startswith("/acr/"):
            self._acr_api(url)
        elif self.command in ("GET", "HEAD") and referrers_index.REFERRERS_PATH.fullmatch(unquote(url.path)):
            self._answer(url, self._referrers)
        else:
            self._pass_to_storage()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _serve

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return b"".join(self._chunks())
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _chunks(self):
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return
            yield self.rfile.read(size)
            self.rfile.readline()

    def _request(self, url: Any) -> Request:
        return Request(self.command, url.path, parse_qs(url.query, keep_blank_values=True),
                       {k.lower(): v for k, v in self.headers.items()}, self._read_body(), self.client_address[0])

    def _token_service(self, url: Any, endpoint: str) -> None:
        self._answer(url, lambda request: serve_acr_auth(self.server.world, request, self.server.acr, endpoint))

    def _acr_api(self, url: Any) -> None:
        """ACR's own listing API (`/acr/v1/<repo>/_tags`, `_manifests`), which docker-registry lacks."""
        self._answer(url, lambda request: serve_listing(request, self.server.acr))

    def _referrers(self, request: Request) -> Response:
        """The OCI 1.1 referrers API, which ACR serves (ACR passed the OCI 1.1 conformance tests, the ACR
        team's "Announcing support of OCI v1.1 specification in Azure Container Registry", 2024; azure-cli
        2.91 `acr/manifest.py` `acr_manifest_list_referrers` GETs `/v2/<repo>/referrers/<digest>` with
        `params={'artifactType': ...}`, a token asked with `pull` permission, and follows a `Link`) and
        docker-registry lacks. Built by dev/referrers_index.py from the registry's storage; authorized as a
        pull (a registry token granting `pull` on the repository), refused with ACR's 401 as the listing is.
        HEAD answers the GET's status and headers (the spec defines only GET; served rather than passed to
        docker-registry, which would say 404 "no API")."""
        match = referrers_index.REFERRERS_PATH.fullmatch(unquote(request.path))
        assert match is not None
        repository, digest = match.group("repo"), match.group("digest")
        if not referrers_index.REPOSITORY_NAME.fullmatch(repository):
            return Response(400, {"errors": [{"code": "NAME_INVALID", "message": "invalid repository name",
                                              "detail": {"name": repository}}]})
        refused = authorize(request, self.server.acr, repository, "pull")
        if refused is not None:
            return refused
        artifact_type = request.param("artifactType") or None
        found = referrers_index.answer(referrers_index.storage_root(self.server.acr), repository, digest,
                                       artifact_type, page_size=self.server.world.setting("referrers_page_size"),
                                       last=request.param("last"))
        return Response(found.status, found.encoded(), found.headers)

    def _answer(self, url: Any, serve: Any) -> None:
        try:
            response = serve(self._request(url))
        except Exception:
            log.exception("%s %s crashed", self.command, url.path)
            self._send(500, b'{"errors":[{"code":"UNKNOWN","message":"the stand-in failed"}]}',
                       {"Content-Type": "application/json"})
            return
        payload, content_type = response.encoded()
        headers = dict(response.headers)
        if content_type:
            headers["Content-Type"] = content_type
        self._send(response.status, payload, headers)

    def _send(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _pass_to_storage(self) -> None:
        """The request as it came (Host kept, so upload Locations name the login server), the answer streamed."""
        body = self._read_body()
        # a header sent several times (skopeo and containerd send one `Accept` per media type) is passed as
        # one comma-joined field (RFC 9110 5.3); keeping only the last one made the registry answer with a
        # schema-1 manifest, which ACR never serves
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            if name.lower() not in HOP_BY_HOP | {"content-length"}:
                headers[name] = f"{headers[name]}, {value}" if name in headers else value
        if body or self.command in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = str(len(body))
        connection = http.client.HTTPSConnection(layout.HOST, self.server.acr.storage_port,
                                                 context=self.server.context, timeout=60)
        try:
            try:
                connection.request(self.command, self.path, body=body, headers=headers)
                answer = connection.getresponse()
            except OSError as exc:
                self._send(502, f'{{"errors":[{{"code":"UNAVAILABLE","message":"storage: {type(exc).__name__}"}}]}}'
                           .encode(), {"Content-Type": "application/json"})
                return
            self.send_response(answer.status, answer.reason)
            length = answer.getheader("Content-Length")
            for name, value in answer.getheaders():
                if name.lower() not in HOP_BY_HOP:
                    self.send_header(name, value)
            subject = (referrers_index.subject_of(body) if self.command == "PUT" and answer.status == 201
                       and MANIFEST_PUT.fullmatch(urlsplit(self.path).path) else None)
            if subject is not None:  # the registry has the referrers API: clients need not push the tag schema
                self.send_header(referrers_index.SUBJECT_HEADER, subject)
            chunked = length is None and self.command != "HEAD" and answer.status not in (204, 304)
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if self.command == "HEAD":
                return
            while True:
                block = answer.read(_CHUNK)
                if not block:
                    break
                self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        finally:
            connection.close()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.client_address[0], format % args)
