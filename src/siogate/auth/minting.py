"""Minting handshake tokens, and the claim limits that both minting and checking apply.

Stdlib only (``hmac``, ``hashlib``, ``base64``, ``json``): the light SDK distribution
(``siogate-client``, see ``clients/python``) ships this module so that ``Client.token()``
works with httpx as its only dependency. Verification stays in :mod:`siogate.auth.jwt`,
on PyJWT. The token is the same compact JWS that ``jwt.PyJWS().encode(payload, secret,
algorithm="HS256")`` makes (a unit test compares them byte for byte).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from typing import Any

from siogate.errors import ConfigError
from siogate.types import is_socket_id

__all__ = [
    "MAX_CLAIM_LENGTH",
    "MAX_NAMESPACES",
    "MAX_ROOMS",
    "is_namespace",
    "is_valid_name",
    "mint_token",
]

# Limits
MAX_CLAIM_LENGTH = 256
"""Longest accepted ``sub`` and longest accepted room name in ``rooms``."""
MAX_ROOMS = 100
"""Most entries accepted in the ``rooms`` claim."""
MAX_NAMESPACES = 100
"""Most entries accepted in the ``namespaces`` claim."""

# PyJWS writes its header with sorted keys and no spaces; the same bytes here keep the
# minted tokens identical to the ones this module replaced.
_HEADER = b'{"alg":"HS256","typ":"JWT"}'


def is_valid_name(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_CLAIM_LENGTH


def is_namespace(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_CLAIM_LENGTH and value[0] == "/"


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def mint_token(
    secret: str,
    *,
    sub: str | None,
    rooms: Sequence[str] = (),
    ttl: float = 3600,
    now: float | None = None,
    namespaces: Sequence[str] | None = None,
    issuer: str | None = None,
    audience: str | None = None,
) -> str:
    """Return an HS256 token that :class:`~siogate.auth.JwtVerifier` with ``secret`` accepts.

    ``exp`` and ``iat`` are whole seconds (JWT NumericDate); ``exp`` is
    ``now + ttl`` rounded down. ``rooms`` is included only when non-empty;
    ``namespaces`` (the namespaces the token may join), ``iss`` and ``aud``
    only when given. Values that the verifier would refuse raise
    :class:`ValueError` here; an empty secret raises :class:`ConfigError`.
    """
    if not secret:
        raise ConfigError("unusable jwt secret: HMAC key must not be empty.")
    if sub is not None and not is_valid_name(sub):
        raise ValueError(f"sub must be a non-empty string of at most {MAX_CLAIM_LENGTH} chars")
    room_list = list(rooms)
    if len(room_list) > MAX_ROOMS or not all(is_valid_name(room) for room in room_list):
        raise ValueError(
            f"rooms must be at most {MAX_ROOMS} non-empty strings "
            f"of at most {MAX_CLAIM_LENGTH} chars"
        )
    if any(is_socket_id(room) for room in room_list):
        raise ValueError("a room name may not be shaped like a socket id (20 of A-Z a-z 0-9 _ -)")
    scope = None if namespaces is None else list(namespaces)
    if scope is not None and (
        len(scope) > MAX_NAMESPACES or not all(is_namespace(ns) for ns in scope)
    ):
        raise ValueError(
            f"namespaces must be at most {MAX_NAMESPACES} names starting with '/' "
            f"of at most {MAX_CLAIM_LENGTH} chars"
        )
    issued = time.time() if now is None else now
    claims: dict[str, Any] = {"iat": int(issued), "exp": int(issued + ttl)}
    if sub is not None:
        claims["sub"] = sub
    if room_list:
        claims["rooms"] = room_list
    if scope is not None:
        claims["namespaces"] = scope
    if issuer is not None:
        claims["iss"] = issuer
    if audience is not None:
        claims["aud"] = audience
    payload = json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    signing_input = _b64(_HEADER) + b"." + _b64(payload)
    signature = hmac.new(secret.encode("utf-8"), signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + _b64(signature)).decode("ascii")
