"""`python -m dev.creds ...`: what tools people already use (az, skopeo) need to look at the local stack.

    python -m dev.creds env                    # export lines: the CA, the identity endpoint, ARM, login servers,
                                               # the proxy that stands in for *.azurecr.io's DNS
    python -m dev.creds login-server myregistry    # 127.0.0.1:5011, where <name>.azurecr.io is served locally
    python -m dev.creds skopeo myregistry      # --creds <null user>:<ACR refresh token> --cert-dir <stack CA>

The skopeo credentials are what `az acr login --expose-token` gives in Azure: an Entra token of the stack's
managed identity (the app's, from the identity endpoint) exchanged at the registry's own token service
(`/oauth2/exchange`) for an ACR refresh token, used as the password of the null user
00000000-0000-0000-0000-000000000000. It carries that identity's roles (push and pull on `myregistry`).
"""

from __future__ import annotations

import json
import shutil
import ssl
import sys
import urllib.parse
import urllib.request

from dev import layout

ACR_AUDIENCE = "https://containerregistry.azure.net"
NULL_USER = "00000000-0000-0000-0000-000000000000"


def acr_named(name: str) -> layout.AcrSpec:
    wanted = name.lower().removesuffix(".azurecr.io")
    for acr in layout.ACRS:
        if acr.name == wanted:
            return acr
    raise SystemExit(f"error: no registry {name!r} in the stack; it has {', '.join(a.name for a in layout.ACRS)}")


def login_server(acr: layout.AcrSpec) -> str:
    """host:port of the registry's login server on loopback (`<name>.azurecr.io` has no DNS here)."""
    return layout.acr_login_server_url(acr).removeprefix("https://")


def cert_dir() -> str:
    """A folder with only the stack CA as `ca.crt`, the layout skopeo's `--cert-dir` reads (a `.key` without a
    `.cert` beside it would be taken for a broken client certificate)."""
    folder = layout.STATE_DIR / "skopeo-certs"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(layout.CA_CERT, folder / "ca.crt")
    return str(folder)


def refresh_token(acr: layout.AcrSpec) -> str:
    """An ACR refresh token for the stack's managed identity, from the registry's own token service."""
    context = ssl.create_default_context(cafile=str(layout.CA_CERT))
    query = urllib.parse.urlencode({"api-version": "2019-08-01", "resource": ACR_AUDIENCE})
    asked = urllib.request.Request(f"{layout.IDENTITY_ENDPOINT}?{query}",
                                   headers={"X-IDENTITY-HEADER": layout.IDENTITY_HEADER})
    with urllib.request.urlopen(asked, timeout=30) as answer:
        entra = json.load(answer)["access_token"]
    form = urllib.parse.urlencode({"grant_type": "access_token", "service": acr.login_server,
                                   "access_token": entra}).encode()
    exchange = urllib.request.Request(f"{layout.acr_login_server_url(acr)}/oauth2/exchange", data=form)
    with urllib.request.urlopen(exchange, timeout=30, context=context) as answer:
        return json.load(answer)["refresh_token"]


def env_lines() -> list[str]:
    """Shell exports for the recipes in dev/azure_standin/README.md."""
    values = {"REQUESTS_CA_BUNDLE": str(layout.CA_CERT), "SSL_CERT_FILE": str(layout.CA_CERT),
              "IDENTITY_ENDPOINT": layout.IDENTITY_ENDPOINT, "IDENTITY_HEADER": layout.IDENTITY_HEADER,
              "STANDIN_ARM": f"{layout.ARM_ENDPOINT}/", "STANDIN_AAD": layout.AAD_ENDPOINT,
              "STANDIN_ARM_RESOURCE": layout.ARM_RESOURCE, "STANDIN_SUBSCRIPTION": layout.SUB_A,
              "AZURE_CONFIG_DIR": str(layout.STATE_DIR / "az"),  # the stack's own az login, apart from yours
              "AZURE_CORE_COLLECT_TELEMETRY": "no",
              # not HTTPS_PROXY itself: that would send every HTTPS call of the shell to a proxy that
              # refuses all but the stack's ACRs; the recipes set it per command
              "STANDIN_ACR_PROXY": layout.ACR_DNS_PROXY}
    values |= {f"{acr.name.upper()}_LOGIN_SERVER": login_server(acr) for acr in layout.ACRS}
    return [f"export {name}='{value}'" for name, value in values.items()]


def main(argv: list[str]) -> int:
    usage = "usage: python -m dev.creds env | login-server REGISTRY | skopeo REGISTRY"
    if argv == ["env"]:
        print("\n".join(env_lines()))
        return 0
    if len(argv) != 2 or argv[0] not in ("login-server", "skopeo"):
        print(usage, file=sys.stderr)
        return 2
    acr = acr_named(argv[1])
    if argv[0] == "login-server":
        print(login_server(acr))
        return 0
    try:
        token = refresh_token(acr)
    except OSError as err:
        print(f"error: cannot get a token from the stack ({err}): is it running? `make stack-up`", file=sys.stderr)
        return 2
    print(f"--creds {NULL_USER}:{token} --cert-dir {cert_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
