"""Webhooks: signed JSON POSTs to the application's backend."""

from __future__ import annotations

from siogate.webhooks.dispatcher import (
    LATENCY_BUCKETS,
    WebhookDispatcher,
    WebhookSettings,
    WebhookStats,
)
from siogate.webhooks.signing import (
    DEFAULT_TOLERANCE,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookVerificationError,
    sign,
    signed_headers,
    verify_request,
    verify_signature,
)

__all__ = [
    "DEFAULT_TOLERANCE",
    "LATENCY_BUCKETS",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WebhookDispatcher",
    "WebhookSettings",
    "WebhookStats",
    "WebhookVerificationError",
    "sign",
    "signed_headers",
    "verify_request",
    "verify_signature",
]
