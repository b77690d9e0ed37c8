"""Tokens the stand-ins issue and check: Entra-like access tokens and registry (distribution) tokens.

Entra-like tokens are ES256 JWTs carrying `tid`, `oid`, `appid` and `aud`, signed with the stack's
token-signing key, so the Azure CLI can decode them and the stand-ins can verify them. Registry tokens
follow the distribution token spec (`access` claim) and carry the signing certificate in `x5c`, which
docker-registry verifies against its `rootcertbundle`.
"""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from dev import layout

ENTRA_ISSUER = f"https://sts.windows.net/{layout.TENANT_ID}/"
REGISTRY_ISSUER = "acr-importer-local-stack"


def _signing_key() -> bytes:
    return layout.TOKEN_SIGNING_KEY.read_bytes()


def _signing_cert_x5c() -> list[str]:
    cert = x509.load_pem_x509_certificate(layout.TOKEN_SIGNING_CERT.read_bytes())
    return [base64.b64encode(cert.public_bytes(Encoding.DER)).decode()]


def _public_key():
    return x509.load_pem_x509_certificate(layout.TOKEN_SIGNING_CERT.read_bytes()).public_key()


def mint_entra_token(identity: layout.Identity, audience: str, ttl: int = 3600) -> str:
    now = int(time.time())
    claims = {"aud": audience, "iss": ENTRA_ISSUER, "iat": now, "nbf": now, "exp": now + ttl,
              "tid": layout.TENANT_ID, "oid": identity.object_id, "appid": identity.client_id,
              "sub": identity.object_id, "idtyp": "app", "uti": uuid.uuid4().hex}
    return jwt.encode(claims, _signing_key(), algorithm="ES256")


def verify_entra_token(token: str, audience: str | None = None) -> dict[str, Any]:
    """Claims of a valid token; raises jwt.PyJWTError otherwise. Audience is checked when given."""
    return jwt.decode(token, _public_key(), algorithms=["ES256"], issuer=ENTRA_ISSUER,
                      audience=audience, options={"verify_aud": audience is not None})


def mint_registry_token(*, subject: str, service: str, access: list[dict[str, Any]], ttl: int = 300) -> str:
    """A distribution bearer token; `access` entries are {"type", "name", "actions"} as granted."""
    now = int(time.time())
    claims = {"iss": REGISTRY_ISSUER, "sub": subject, "aud": service, "iat": now, "nbf": now - 5,
              "exp": now + ttl, "jti": uuid.uuid4().hex, "access": access}
    return jwt.encode(claims, _signing_key(), algorithm="ES256", headers={"x5c": _signing_cert_x5c()})


def verify_registry_token(token: str, service: str) -> dict[str, Any]:
    return jwt.decode(token, _public_key(), algorithms=["ES256"], issuer=REGISTRY_ISSUER, audience=service)
