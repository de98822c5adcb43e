"""Webhook body signatures (pure: no I/O).

Every webhook request carries ``X-Siogate-Signature: sha256=<hex>``, the
HMAC-SHA256 of the exact request body keyed with the webhook secret. A
receiver recomputes it over the raw bytes it read, before parsing them.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["SIGNATURE_HEADER", "sign", "verify_signature"]

SIGNATURE_HEADER = "X-Siogate-Signature"
"""The request header that carries the signature."""

_PREFIX = "sha256="


def sign(body: bytes, secret: str) -> str:
    """Return the signature header value for ``body``: ``sha256=<hex digest>``."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return _PREFIX + digest


def verify_signature(body: bytes, secret: str, header: str | None) -> bool:
    """Return whether ``header`` is the signature of ``body`` under ``secret``.

    The comparison takes the same time wherever the first wrong digit is. The
    ``sha256=`` prefix and the hex digits are accepted in either case.
    """
    if header is None:
        return False
    value = header.strip()
    if value[: len(_PREFIX)].lower() != _PREFIX:
        return False
    try:
        presented = value[len(_PREFIX) :].lower().encode("ascii")
    except UnicodeEncodeError:
        return False
    expected = sign(body, secret)[len(_PREFIX) :].encode("ascii")
    return hmac.compare_digest(presented, expected)
