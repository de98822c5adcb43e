"""Webhook signatures (pure: no I/O, no clock; the time is passed in).

Every webhook request carries two headers:

* ``X-Siogate-Timestamp: <unix seconds>``, when the gateway sent it, as a decimal
  integer;
* ``X-Siogate-Signature: sha256=<hex>``, the HMAC-SHA256, keyed with the webhook secret,
  of the timestamp, one ``.`` and the exact request body: ``f"{timestamp}.".encode() +
  body``.

A receiver recomputes the HMAC over the header's text and the raw bytes it read, before
parsing them, and refuses a timestamp further than a tolerance (300 s by default) from
its own clock, so that a captured request cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re

from siogate.errors import SiogateError

__all__ = [
    "DEFAULT_TOLERANCE",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WebhookVerificationError",
    "sign",
    "signed_headers",
    "verify_request",
    "verify_signature",
]

SIGNATURE_HEADER = "X-Siogate-Signature"
"""The request header that carries the signature."""

TIMESTAMP_HEADER = "X-Siogate-Timestamp"
"""The request header that carries the signing time (unix seconds)."""

DEFAULT_TOLERANCE = 300.0
"""Seconds a timestamp may be off the receiver's clock, either way."""

_PREFIX = "sha256="
# Unix seconds, decimal; 15 digits reach far past any real clock.
_TIMESTAMP = re.compile(r"[0-9]{1,15}")


class WebhookVerificationError(SiogateError):
    """A webhook request that does not verify; ``code`` says why.

    ========================  ==============================================
    code                      meaning
    ========================  ==============================================
    ``missing_signature``     no ``X-Siogate-Signature`` header
    ``missing_timestamp``     no ``X-Siogate-Timestamp`` header
    ``malformed_signature``   not ``sha256=`` and 64 hex digits
    ``malformed_timestamp``   not a decimal integer of unix seconds
    ``signature_mismatch``    wrong secret, or body or timestamp changed
    ``timestamp_too_old``     signed more than ``tolerance`` seconds ago
    ``timestamp_in_future``   signed more than ``tolerance`` seconds ahead
    ========================  ==============================================
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _mac(body: bytes, secret: str, timestamp: str) -> str:
    signed = timestamp.encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The signature header value for ``body`` sent at ``timestamp``: ``sha256=<hex>``."""
    if timestamp < 0:
        raise ValueError("timestamp must not be negative")
    return _PREFIX + _mac(body, secret, str(timestamp))


def signed_headers(body: bytes, secret: str, now: float) -> dict[str, str]:
    """The two headers a request with ``body``, sent at ``now`` (unix seconds), carries."""
    timestamp = int(now)
    return {
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(body, secret, timestamp),
    }


def _presented(header: str) -> bytes | None:
    value = header.strip()
    if value[: len(_PREFIX)].lower() != _PREFIX:
        return None
    digest = value[len(_PREFIX) :].lower()
    if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
        return None
    return digest.encode("ascii")


def _timestamp_text(header: str) -> str | None:
    value = header.strip()
    return value if _TIMESTAMP.fullmatch(value) else None


def verify_signature(
    body: bytes, secret: str, signature: str | None, timestamp: str | None
) -> bool:
    """Whether ``signature`` signs ``timestamp`` and ``body`` under ``secret``.

    Checks the signature only, not how old the timestamp is (see :func:`verify_request`).
    The comparison takes the same time wherever the first wrong digit is. The
    ``sha256=`` prefix and the hex digits are accepted in either case, and surrounding
    whitespace in either header is ignored.
    """
    if signature is None or timestamp is None:
        return False
    presented = _presented(signature)
    text = _timestamp_text(timestamp)
    if presented is None or text is None:
        return False
    return hmac.compare_digest(presented, _mac(body, secret, text).encode("ascii"))


def verify_request(
    body: bytes,
    secret: str,
    signature: str | None,
    timestamp: str | None,
    *,
    now: float,
    tolerance: float = DEFAULT_TOLERANCE,
) -> None:
    """Check a webhook request; raise :class:`WebhookVerificationError` if it fails.

    ``body`` is the raw request body, ``signature`` and ``timestamp`` the values of the
    two headers (``None`` when absent), ``now`` the receiver's clock in unix seconds.
    The signature is checked before the time, so a request with a wrong secret is
    reported as such even when it is also old.
    """
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError("tolerance must be a non-negative number of seconds")
    if signature is None:
        raise WebhookVerificationError(
            "missing_signature", f"the request has no {SIGNATURE_HEADER} header"
        )
    if timestamp is None:
        raise WebhookVerificationError(
            "missing_timestamp", f"the request has no {TIMESTAMP_HEADER} header"
        )
    if _presented(signature) is None:
        raise WebhookVerificationError(
            "malformed_signature", f"{SIGNATURE_HEADER} is not sha256= and 64 hex digits"
        )
    text = _timestamp_text(timestamp)
    if text is None:
        raise WebhookVerificationError(
            "malformed_timestamp", f"{TIMESTAMP_HEADER} is not a decimal number of unix seconds"
        )
    if not verify_signature(body, secret, signature, text):
        raise WebhookVerificationError(
            "signature_mismatch",
            "the signature does not match the body and timestamp under this secret",
        )
    age = now - int(text)
    if age > tolerance:
        raise WebhookVerificationError(
            "timestamp_too_old",
            f"signed {age:.0f} s ago, more than the {tolerance:g} s tolerance "
            "(a replayed request, or a clock off)",
        )
    if -age > tolerance:
        raise WebhookVerificationError(
            "timestamp_in_future",
            f"signed {-age:.0f} s ahead of this clock, more than the {tolerance:g} s "
            "tolerance (a clock off)",
        )
