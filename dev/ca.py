"""The stack's test CA: made once per state folder with trustme, reused by every service."""

from __future__ import annotations

import ssl

import trustme
from cryptography import x509

from dev import layout


def server_names() -> tuple[str, ...]:
    """The names the shared server certificate is valid for: loopback, and each ACR's login server
    (`<name>.azurecr.io`), which clients reach through the stand-in's DNS proxy (`dns_proxy.py`) and
    check the certificate against, as they would in Azure."""
    return ("localhost", "127.0.0.1", "::1", *(acr.login_server for acr in layout.ACRS))


def _missing_names() -> set[str]:
    """Names of `server_names()` the cached server certificate lacks (a state folder made before the
    ACR names were added): the leaf is then reissued by the same CA, so what trusts the CA keeps working."""
    cert = x509.load_pem_x509_certificate(layout.SERVER_CERT.read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(server_names())
    have = {str(n) for n in san.get_values_for_type(x509.DNSName)}
    have |= {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    return set(server_names()) - have


def _issue_server_cert(ca: trustme.CA) -> None:
    server = ca.issue_cert(*server_names())
    server.private_key_pem.write_to_path(str(layout.SERVER_KEY))
    with open(layout.SERVER_CERT, "wb") as out:  # leaf first, then the CA: a full chain
        for blob in server.cert_chain_pems:
            out.write(blob.bytes())


def ensure_ca() -> None:
    """Write the CA, the server certificate and the token-signing certificate if missing; reissue the
    server certificate (same CA) if it lacks one of `server_names()`."""
    if all(p.exists() for p in (layout.CA_CERT, layout.CA_KEY, layout.SERVER_CERT, layout.SERVER_KEY,
                                layout.TOKEN_SIGNING_CERT, layout.TOKEN_SIGNING_KEY)):
        if _missing_names():
            _issue_server_cert(trustme.CA.from_pem(layout.CA_CERT.read_bytes(), layout.CA_KEY.read_bytes()))
        return
    layout.CA_CERT.parent.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="acr-importer local stack")
    ca.cert_pem.write_to_path(str(layout.CA_CERT))
    ca.private_key_pem.write_to_path(str(layout.CA_KEY))
    _issue_server_cert(ca)
    # A separate leaf for signing registry tokens: docker-registry's `rootcertbundle` lists it and
    # tokens carry it in their x5c header.
    signer = ca.issue_cert("registry-token-signer")
    signer.private_key_pem.write_to_path(str(layout.TOKEN_SIGNING_KEY))
    signer.cert_chain_pems[0].write_to_path(str(layout.TOKEN_SIGNING_CERT))


def serve_tls(server) -> None:
    """Put a stdlib HTTP server behind TLS with the stack's certificate. The handshake happens on first
    read, in the request's thread, so one stalled client blocks nobody."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(layout.SERVER_CERT), str(layout.SERVER_KEY))
    server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)


def serve_until_stopped(server, banner: str) -> None:
    """Run a stand-in server in the foreground until Ctrl-C (the stack ends it with SIGTERM)."""
    import sys
    import time

    sys.stderr.write(f"{time.strftime('%H:%M:%S')} {banner}\n")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    ensure_ca()
    print(layout.CA_CERT)
