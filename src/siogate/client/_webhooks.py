"""Checking that a webhook request comes from the gateway, and recently."""

from __future__ import annotations

import time

from siogate.webhooks.signing import (
    DEFAULT_TOLERANCE,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookVerificationError,
    verify_request,
)

__all__ = [
    "DEFAULT_TOLERANCE",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WebhookVerificationError",
    "verify_webhook",
]


def verify_webhook(
    body: bytes,
    signature_header: str | None,
    timestamp_header: str | None,
    secret: str,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> None:
    """Check a webhook request; raise :class:`WebhookVerificationError` if it fails.

    ``body`` must be the raw request bytes, before any JSON parsing;
    ``signature_header`` and ``timestamp_header`` the values of ``X-Siogate-Signature``
    and ``X-Siogate-Timestamp`` (``None`` when the request lacks one). The signature
    covers the timestamp and the body; a timestamp more than ``tolerance`` seconds
    from ``now`` (default: this machine's clock) either way is refused, so a captured
    request cannot be replayed later. The error's ``code`` says what failed
    (``signature_mismatch``, ``timestamp_too_old``, ...). The digests are compared in
    constant time.
    """
    verify_request(
        body,
        secret,
        signature_header,
        timestamp_header,
        now=time.time() if now is None else now,
        tolerance=tolerance,
    )
