"""Real OCI registries (CNCF distribution, Debian's `docker-registry`) standing in for Docker Hub, MCR,
a private registry and the ACR data planes: one process per registry, each over TLS on loopback.

This module knows how each registry is configured and how to tell it is up; `dev.stack` runs the processes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import bcrypt
import requests

from dev import layout, tokens

REGISTRY_BINARY = "/usr/bin/docker-registry"
RegistrySpec = layout.UpstreamSpec | layout.AcrSpec


def all_specs() -> tuple[RegistrySpec, ...]:
    return (*layout.UPSTREAMS, *layout.ACRS)


def spec_named(name_or_host: str) -> RegistrySpec:
    """The registry an upstream/ACR name, a host (`docker.io`) or an ACR login server refers to."""
    key = name_or_host.lower()
    for spec in all_specs():
        hosts = spec.hosts if isinstance(spec, layout.UpstreamSpec) else (spec.login_server,)
        if key == spec.name or key in hosts:
            return spec
    raise KeyError(f"no local registry is named {name_or_host!r}")


def service_name(spec: RegistrySpec) -> str:
    kind = "acr" if isinstance(spec, layout.AcrSpec) else "registry"
    return f"{kind}-{spec.name}"


def listen_port(spec: RegistrySpec) -> int:
    """The docker-registry's own port: an upstream's address, or the storage behind an ACR login server."""
    return spec.storage_port if isinstance(spec, layout.AcrSpec) else spec.port


def base_url(spec: RegistrySpec) -> str:
    """The docker-registry itself (for an ACR, its storage, behind the stand-in's login server)."""
    return f"https://{layout.HOST}:{listen_port(spec)}"


def registry_dir(spec: RegistrySpec) -> Path:
    return layout.STATE_DIR / "registries" / spec.name


def config_path(spec: RegistrySpec) -> Path:
    return registry_dir(spec) / "config.yml"


def _auth_section(spec: RegistrySpec) -> dict:
    if isinstance(spec, layout.AcrSpec):
        return {"token": {"realm": layout.acr_token_realm(spec), "service": spec.login_server,
                          "issuer": tokens.REGISTRY_ISSUER, "rootcertbundle": str(layout.TOKEN_SIGNING_CERT)}}
    if spec.auth == "none":
        return {}
    if spec.auth == "basic":
        return {"htpasswd": {"realm": spec.hosts[0], "path": str(registry_dir(spec) / "htpasswd")}}
    if spec.auth == "token":
        return {"token": {"realm": layout.DOCKERHUB_TOKEN_REALM, "service": layout.DOCKERHUB_SERVICE,
                          "issuer": tokens.REGISTRY_ISSUER, "rootcertbundle": str(layout.TOKEN_SIGNING_CERT)}}
    raise ValueError(f"registry {spec.name}: unknown auth kind {spec.auth!r}")


def registry_config(spec: RegistrySpec) -> dict:
    """The distribution configuration for one registry (JSON is valid YAML, so it is written as JSON)."""
    config = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
        "storage": {
            "filesystem": {"rootdirectory": str(registry_dir(spec) / "data")},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {
            "addr": f"{layout.HOST}:{listen_port(spec)}",
            # A fixed secret keeps upload state valid across restarts; loopback-only test value.
            "secret": f"local-stack-upload-secret-{spec.name}",
            "tls": {"certificate": str(layout.SERVER_CERT), "key": str(layout.SERVER_KEY)},
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        },
    }
    auth = _auth_section(spec)
    if auth:
        config["auth"] = auth
    if isinstance(spec, layout.AcrSpec):  # pushes (ours and the stand-in's imports) become ImagePushed events
        config["notifications"] = {"endpoints": [{
            "name": "azure-standin", "url": layout.acr_registry_events_url(spec), "timeout": "2s",
            "threshold": 3, "backoff": "1s",
            "ignore": {"actions": ["pull"], "mediatypes": ["application/octet-stream"]}}]}
    return config


def htpasswd_lines(users: dict[str, str]) -> str:
    """htpasswd content with bcrypt hashes, the only scheme distribution accepts."""
    return "".join(f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=5)).decode()}\n"
                   for user, pw in sorted(users.items()))


def _htpasswd_is_current(path: Path, users: dict[str, str]) -> bool:
    if not path.exists():
        return False
    entries = dict(line.split(":", 1) for line in path.read_text().splitlines() if ":" in line)
    return entries.keys() == users.keys() and all(
        bcrypt.checkpw(pw.encode(), entries[user].encode()) for user, pw in users.items())


def write_config(spec: RegistrySpec) -> Path:
    """Write the registry's config (and htpasswd) under STATE_DIR; returns the config path."""
    folder = registry_dir(spec)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    if isinstance(spec, layout.UpstreamSpec) and spec.auth == "basic":
        htpasswd = folder / "htpasswd"
        if not _htpasswd_is_current(htpasswd, spec.users):
            htpasswd.write_text(htpasswd_lines(spec.users))
            htpasswd.chmod(0o600)
    path = config_path(spec)
    path.write_text(json.dumps(registry_config(spec), indent=2) + "\n")
    return path


def command(spec: RegistrySpec) -> list[str]:
    binary = shutil.which("docker-registry") or REGISTRY_BINARY
    return [binary, "serve", str(config_path(spec))]


def is_ready(spec: RegistrySpec, timeout: float = 1.0) -> bool:
    """True when `/v2/` answers 200 (anonymous) or 401 (auth required) over TLS trusted via the stack CA."""
    try:
        answer = requests.get(f"{base_url(spec)}/v2/", verify=str(layout.CA_CERT), timeout=timeout)
    except (requests.RequestException, OSError):
        return False
    return answer.status_code in (200, 401) and "registry/2.0" in answer.headers.get(
        "Docker-Distribution-API-Version", "")


def wipe_data(spec: RegistrySpec) -> None:
    """Forget every image in a (stopped) registry."""
    shutil.rmtree(registry_dir(spec) / "data", ignore_errors=True)
