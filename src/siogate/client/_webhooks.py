"""Checking that a webhook request comes from the gateway."""

from __future__ import annotations

from siogate.webhooks import SIGNATURE_HEADER, verify_signature

__all__ = ["SIGNATURE_HEADER", "verify_webhook"]


def verify_webhook(body: bytes, signature_header: str | None, secret: str) -> bool:
    """Return whether ``signature_header`` signs ``body`` with the webhook ``secret``.

    ``body`` must be the raw request bytes, before any JSON parsing, and
    ``signature_header`` the value of ``X-Siogate-Signature`` (``None`` when the
    request has none). The digests are compared in constant time. The signature
    covers the body only: it carries no timestamp, so it proves where a request
    came from, not when.
    """
    return verify_signature(body, secret, signature_header)
