"""Handshake tokens: HS256 JSON Web Tokens turned into an :class:`Identity`.

Verification is on the connect path, so its cost is part of the connect rate.
The signature check goes through PyJWT's :class:`jwt.PyJWS` (its parsing and
header handling are well reviewed), with two changes made once per verifier:

* the HMAC key is validated and encoded once, at construction, instead of on
  every call (PyJWT re-runs PEM, SSH, DER and JWK sniffing on each decode);
* the short-key warning is replaced by one log line at construction, instead
  of one :class:`~jwt.warnings.InsecureKeyLengthWarning` per token.

The registered claims are then checked here rather than by :class:`jwt.PyJWT`:
that skips PyJWT's per-call option merging (about 40% of the decode time) and
lets every refusal map to a short message that is safe to show to a client.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jwt import PyJWS
from jwt.algorithms import HMACAlgorithm
from jwt.exceptions import PyJWTError

# Minting is stdlib only (the light SDK distribution ships it without PyJWT); the claim
# limits live there so that both sides apply the same ones.
from siogate.auth.minting import MAX_CLAIM_LENGTH, MAX_NAMESPACES, MAX_ROOMS, mint_token
from siogate.auth.minting import is_namespace as _is_namespace
from siogate.auth.minting import is_valid_name as _is_valid_name
from siogate.errors import AuthError, ConfigError
from siogate.types import Room, UserId, is_socket_id

__all__ = [
    "ANONYMOUS",
    "MAX_CLAIM_LENGTH",
    "MAX_NAMESPACES",
    "MAX_ROOMS",
    "MAX_TOKEN_LENGTH",
    "MIN_SECRET_BYTES",
    "Identity",
    "JwtVerifier",
    "mint_token",
]

logger = logging.getLogger("siogate.auth")

# Limits
MAX_TOKEN_LENGTH = 8192
"""Longer tokens are refused before any decoding work."""
MIN_SECRET_BYTES = 32
"""RFC 7518 section 3.2: an HS256 key should be at least as long as the hash."""

_ALGORITHM = "HS256"
_ALGORITHMS = [_ALGORITHM]
# Identity.expires is clamped here (9999-12-31T23:59:59Z): a larger integer exp is a valid
# NumericDate but does not fit a float, and no socket lives that long anyway.
_LAST_DATE = 253_402_300_799


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a socket is, as established by its handshake token."""

    user: UserId | None
    """The ``sub`` claim; ``None`` for an anonymous socket."""
    rooms: tuple[Room, ...] = ()
    """Rooms from the ``rooms`` claim, joined on connect, in token order."""
    claims: Mapping[str, Any] = field(default_factory=dict)
    """Every claim of the verified token (empty for an anonymous socket)."""
    namespaces: frozenset[str] | None = None
    """Namespaces from the ``namespaces`` claim; ``None`` when the token does not limit them."""
    expires: float | None = None
    """The ``exp`` claim (seconds since the epoch); ``None`` for an anonymous socket."""


ANONYMOUS = Identity(user=None)
"""The identity of a socket that connected without a token."""


class _PinnedHS256(HMACAlgorithm):
    """HS256 bound to one secret, prepared once.

    PyJWS calls ``prepare_key`` and ``check_key_length`` on every verification.
    Both depend only on the key, which never changes for one verifier, so this
    answers them from the values computed in ``__init__``.
    """

    def __init__(self, secret: str) -> None:
        super().__init__(HMACAlgorithm.SHA256)
        try:
            self._key = super().prepare_key(secret)
        except PyJWTError as exc:
            # Empty secrets and asymmetric keys (the RS/HS confusion setup).
            raise ConfigError(f"unusable jwt secret: {exc}") from None

    def prepare_key(self, key: str | bytes) -> bytes:
        # The key argument is ignored on purpose: this object only ever
        # verifies with the secret it was built for.
        return self._key

    def check_key_length(self, key: bytes) -> str | None:
        # Reported once, by whoever builds the algorithm (see _build_jws).
        return None

    @property
    def key_bytes(self) -> int:
        return len(self._key)


def _build_jws(secret: str) -> tuple[PyJWS, int]:
    """Return a PyJWS that knows only HS256 with ``secret``, and the key length."""
    algorithm = _PinnedHS256(secret)
    jws = PyJWS(algorithms=_ALGORITHMS)
    jws.unregister_algorithm(_ALGORITHM)
    jws.register_algorithm(_ALGORITHM, algorithm)
    return jws, algorithm.key_bytes


def _is_numeric_date(value: object) -> bool:
    # bool is an int subclass. Python's JSON reader accepts NaN and Infinity,
    # which would make "exp" never expire. Huge ints are finite but overflow
    # math.isfinite, and compare exactly with floats anyway.
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)


class JwtVerifier:
    """Verify HS256 handshake tokens signed with one shared secret.

    Only ``HS256`` is accepted, whatever the token header says, so ``alg: none``
    and RS/HS confusion tokens are refused. ``exp`` is required; ``nbf`` is
    honoured; ``leeway`` (seconds) absorbs clock skew for both. With ``issuer``
    the ``iss`` claim must equal it; with ``audience`` the ``aud`` claim (a
    string or a list of strings) must name it, and without one a token that
    names any audience is refused. Every refusal raises
    :class:`~siogate.errors.AuthError` with a short message that may be sent to
    the client as is.
    """

    def __init__(
        self,
        secret: str,
        *,
        leeway: float = 0.0,
        issuer: str | None = None,
        audience: str | None = None,
    ) -> None:
        if leeway < 0 or not math.isfinite(leeway):
            raise ConfigError("jwt leeway must be a finite number >= 0")
        self._jws, key_bytes = _build_jws(secret)
        self._secret = secret
        self._leeway = float(leeway)
        self._issuer = issuer
        self._audience = audience
        if key_bytes < MIN_SECRET_BYTES:
            logger.warning(
                "jwt secret shorter than %d bytes (%d): tokens are easier to forge",
                MIN_SECRET_BYTES,
                key_bytes,
            )

    @property
    def leeway(self) -> float:
        """Seconds of clock skew allowed on ``exp`` and ``nbf``."""
        return self._leeway

    def verify(self, token: object) -> Identity:
        """Return the identity that ``token`` proves, or raise AuthError."""
        # 1. Cheap shape checks, before any decoding work.
        if token is None or token == "":
            raise AuthError("missing token")
        if not isinstance(token, str):
            raise AuthError("invalid token")
        if len(token) > MAX_TOKEN_LENGTH:
            raise AuthError("token too long")

        # 2. Header, algorithm and signature (PyJWS).
        try:
            decoded = self._jws.decode_complete(token, self._secret, algorithms=_ALGORITHMS)
            claims = json.loads(decoded["payload"])
        except (PyJWTError, ValueError, RecursionError):
            raise AuthError("invalid token") from None
        if not isinstance(claims, dict):
            raise AuthError("invalid token")

        # 3. Registered time claims.
        now = time.time()
        exp = claims.get("exp")
        if exp is None:
            raise AuthError("token has no exp")
        if not _is_numeric_date(exp):
            raise AuthError("invalid exp claim")
        if exp <= now - self._leeway:
            raise AuthError("token expired")
        nbf = claims.get("nbf")
        if nbf is not None:
            if not _is_numeric_date(nbf):
                raise AuthError("invalid nbf claim")
            if nbf > now + self._leeway:
                raise AuthError("token not yet valid")
        # "iat" is informational: its type is checked, but a value slightly in
        # the future (the issuer's clock runs ahead) does not refuse the token.
        iat = claims.get("iat")
        if iat is not None and not _is_numeric_date(iat):
            raise AuthError("invalid iat claim")
        self._check_issuer_and_audience(claims)

        # 4. siogate claims.
        sub = claims.get("sub")
        if sub is not None and not _is_valid_name(sub):
            raise AuthError("invalid sub claim")
        rooms = claims.get("rooms")
        if rooms is None:
            room_names: tuple[Room, ...] = ()
        elif (
            isinstance(rooms, list)
            and len(rooms) <= MAX_ROOMS
            and all(_is_valid_name(room) for room in rooms)
        ):
            room_names = tuple(rooms)
        else:
            raise AuthError("invalid rooms claim")
        if any(is_socket_id(room) for room in room_names):
            # Such a name addresses one socket; joining it could read its direct emits.
            raise AuthError("invalid rooms claim: a room name may not be shaped like a socket id")
        namespaces = claims.get("namespaces")
        if namespaces is None:
            scope = None
        elif (
            isinstance(namespaces, list)
            and len(namespaces) <= MAX_NAMESPACES
            and all(_is_namespace(ns) for ns in namespaces)
        ):
            scope = frozenset(namespaces)
        else:
            raise AuthError("invalid namespaces claim")

        return Identity(
            user=None if sub is None else UserId(sub),
            rooms=room_names,
            claims=claims,
            namespaces=scope,
            expires=float(min(exp, _LAST_DATE)),
        )

    def _check_issuer_and_audience(self, claims: dict[str, Any]) -> None:
        if self._issuer is not None and claims.get("iss") != self._issuer:
            raise AuthError("token issuer not accepted")
        aud = claims.get("aud")
        if self._audience is None:
            # A token addressed to some audience was meant for another service that
            # shares the secret; this gateway names no audience, so it refuses it.
            if aud:
                raise AuthError("token audience not accepted")
            return
        if isinstance(aud, str):
            named = aud == self._audience
        elif isinstance(aud, list) and all(isinstance(a, str) for a in aud):
            named = self._audience in aud
        elif aud is None:
            named = False
        else:
            raise AuthError("invalid aud claim")
        if not named:
            raise AuthError("token audience not accepted")
