"""The listeners: HTTPS (ARM, control), plain HTTP (managed identity), one HTTPS login server per ACR
(its token service, ACR's listing API, and its registry API passed to the registry's storage), and the
CONNECT proxy that stands in for `*.azurecr.io`'s DNS (`dns_proxy.py`)."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer

from dev import layout
from dev.azure_standin.acr_auth import sp_can_pull
from dev.azure_standin.arm import Arm
from dev.azure_standin.control_api import serve_control
from dev.azure_standin.data_plane import DataPlane, MemoryDataPlane
from dev.azure_standin.dns_proxy import DnsProxy
from dev.azure_standin.events import EventGrid, serve_events
from dev.azure_standin.http_base import Request, Response, make_handler
from dev.azure_standin.identity import serve_identity
from dev.azure_standin.login_server import LoginServer
from dev.azure_standin.world import World
from dev.ca import serve_tls


class Standin:
    """The running stand-in: owns the world, both servers and their threads. The data plane is chosen
    per import from the `data_plane` setting, so one process serves registry and memory tests alike."""

    def __init__(self, data_plane: str = "registry", *, https_port: int = layout.AZURE_STANDIN_PORT,
                 identity_port: int = layout.IDENTITY_PORT) -> None:
        self.world = World(data_plane)
        self.memory = MemoryDataPlane(can_pull=lambda user, password, acr: sp_can_pull(self.world, user, password,
                                                                                      acr))
        self._registry: DataPlane | None = None
        self.arm = Arm(self.world, self.data_plane)
        self.event_grid = EventGrid()
        self.https = ThreadingHTTPServer((layout.HOST, https_port), make_handler(self.route_https, "azure-standin"))
        serve_tls(self.https)
        self.identity = ThreadingHTTPServer((layout.HOST, identity_port),
                                            make_handler(self.route_identity, "azure-standin-identity"))
        for server in (self.https, self.identity):
            server.daemon_threads = True
        self._threads: list[threading.Thread] = []
        self.login_servers = [LoginServer(self.world, acr) for acr in layout.ACRS]  # bound before health answers
        self.dns_proxy = DnsProxy()

    def data_plane(self) -> DataPlane:
        if self.world.setting("data_plane") == "memory":
            return self.memory
        if self._registry is None:
            from dev.azure_standin.registry_copy import RegistryDataPlane  # needs dev.oci, loaded on first use
            self._registry = RegistryDataPlane()
        return self._registry

    def route_https(self, request: Request) -> Response:
        if request.path.startswith("/_control"):
            if request.path.rstrip("/") == "/_control/reset" and request.method == "POST":
                self.event_grid.reset()
            return serve_events(self.event_grid, request) or serve_control(self.world, self.memory, request)
        return self.arm(request)

    def route_identity(self, request: Request) -> Response:
        return serve_identity(self.world, request)

    def start(self) -> None:
        for server in (*self.login_servers, self.dns_proxy, self.https, self.identity):
            thread = threading.Thread(target=server.serve_forever, name=f"serve-{server.server_port}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        for server in (self.https, self.identity, *self.login_servers, self.dns_proxy):
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
