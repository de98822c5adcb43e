"""The HTTP API's credential: ``Authorization: Bearer <api-key>``."""

from __future__ import annotations

import hmac

__all__ = ["check_bearer"]


def check_bearer(header: str | None, api_key: str) -> bool:
    """Return whether an ``Authorization`` header value carries ``api_key``.

    The scheme is matched case-insensitively (RFC 9110 section 11.1) and the
    key is compared in constant time, so the response time does not reveal
    how much of a guessed key was right. A missing or malformed header, or an
    empty configured key, is never accepted.
    """
    if not header or not api_key:
        return False
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    credentials = credentials.strip()
    if not credentials:
        return False
    try:
        presented = credentials.encode("utf-8")
        expected = api_key.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates cannot come from a well-formed header.
        return False
    return hmac.compare_digest(presented, expected)
