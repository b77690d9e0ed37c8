"""The stack's test CA: made once per state folder with trustme, reused by every service."""

from __future__ import annotations

import ssl

import trustme

from dev import layout


def ensure_ca() -> None:
    """Write the CA, the loopback server certificate and the token-signing certificate if missing."""
    if all(p.exists() for p in (layout.CA_CERT, layout.SERVER_CERT, layout.SERVER_KEY,
                                layout.TOKEN_SIGNING_CERT, layout.TOKEN_SIGNING_KEY)):
        return
    layout.CA_CERT.parent.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="acr-importer local stack")
    ca.cert_pem.write_to_path(str(layout.CA_CERT))
    ca.private_key_pem.write_to_path(str(layout.CA_KEY))
    server = ca.issue_cert("localhost", "127.0.0.1", "::1")
    server.private_key_pem.write_to_path(str(layout.SERVER_KEY))
    with open(layout.SERVER_CERT, "wb") as out:  # leaf first, then the CA: a full chain
        for blob in server.cert_chain_pems:
            out.write(blob.bytes())
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
