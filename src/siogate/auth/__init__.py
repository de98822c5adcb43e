"""Credentials: handshake JWTs for browsers, an API key for backends."""

from __future__ import annotations

from siogate.auth.api_key import check_bearer
from siogate.auth.basic import BasicAuth
from siogate.auth.jwt import ANONYMOUS, Identity, JwtVerifier, mint_token

__all__ = [
    "ANONYMOUS",
    "BasicAuth",
    "Identity",
    "JwtVerifier",
    "check_bearer",
    "mint_token",
]
