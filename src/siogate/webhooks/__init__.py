"""Webhooks: signed JSON POSTs to the application's backend."""

from __future__ import annotations

from siogate.webhooks.dispatcher import (
    LATENCY_BUCKETS,
    WebhookDispatcher,
    WebhookSettings,
    WebhookStats,
)
from siogate.webhooks.signing import SIGNATURE_HEADER, sign, verify_signature

__all__ = [
    "LATENCY_BUCKETS",
    "SIGNATURE_HEADER",
    "WebhookDispatcher",
    "WebhookSettings",
    "WebhookStats",
    "sign",
    "verify_signature",
]
