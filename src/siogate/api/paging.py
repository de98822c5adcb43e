"""Page sizes and cursors of the HTTP API's listings.

A cursor is the URL-safe base64 (no padding) of a small JSON object naming the listing
it belongs to and the last key the previous page returned::

    {"v": 1, "of": "sockets", "ns": "/", "room": "news", "after": "jkX3VWQTnCylINS_R2NP"}

It carries no node id and no position: every node orders a listing the same way (by
key, code point order), so any node of a cluster can continue from any cursor. Clients
must treat it as opaque; it is checked strictly when it comes back, and one that does
not decode, or belongs to another listing (kind, namespace or room), is refused with
``400 invalid_cursor``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass

from ..errors import ApiError

# Entries per page when a cursor comes without a limit, and the most one page may hold.
DEFAULT_LIMIT = 100
MAX_LIMIT = 1_000
# A listing asked for without limit or cursor answers whole, up to MAX_LIMIT entries;
# over that it is refused (too_many_results) rather than silently cut.

# Users one GET /v1/presence may ask about.
MAX_PRESENCE_USERS = 100

CURSOR_VERSION = 1
# Keys are names of at most 256 characters; with the room and the namespace, and UTF-8
# at 4 bytes a character, a genuine cursor stays well under this.
MAX_CURSOR = 6_000
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
_LIMIT = re.compile(r"[0-9]{1,7}")


@dataclass(frozen=True, slots=True)
class PageRequest:
    """What a listing request asks for."""

    # The last key of the previous page (from the cursor), or None for the first page.
    after: str | None
    limit: int
    # False when neither limit nor cursor was given (the unpaged form).
    paged: bool


def invalid_cursor(message: str) -> ApiError:
    return ApiError(400, "invalid_cursor", message)


def too_many_results(what: str) -> ApiError:
    return ApiError(
        400,
        "too_many_results",
        f"more than {MAX_LIMIT} {what}: ask for pages with ?limit= (at most {MAX_LIMIT}) "
        "and follow next_cursor",
    )


def encode_cursor(of: str, scope: dict[str, str], after: str) -> str:
    body = {"v": CURSOR_VERSION, "of": of, **scope, "after": after}
    raw = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(text: str, of: str, scope: dict[str, str]) -> str:
    """The ``after`` key of a cursor made by :func:`encode_cursor` for this listing."""
    if not text or len(text) > MAX_CURSOR or not _BASE64URL.fullmatch(text):
        raise invalid_cursor("cursor is not one this listing returned")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
        # One spelling per cursor: unused low bits in the last character must be zero.
        if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != text:
            raise ValueError("not canonical base64")
        body = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, RecursionError):
        raise invalid_cursor("cursor is not one this listing returned") from None
    expected = {"v", "of", "after", *scope}
    if (
        not isinstance(body, dict)
        or set(body) != expected
        or body["v"] != CURSOR_VERSION
        or not isinstance(body["after"], str)
        or not body["after"]
    ):
        raise invalid_cursor("cursor is not one this listing returned")
    if body["of"] != of or any(body[k] != v for k, v in scope.items()):
        raise invalid_cursor("cursor belongs to another listing (route, namespace or room)")
    after: str = body["after"]
    return after


def page_request(
    limit: str | None, cursor: str | None, of: str, scope: dict[str, str]
) -> PageRequest:
    """Parse the ``limit`` and ``cursor`` query parameters of a listing."""
    if limit is None:
        size = DEFAULT_LIMIT if cursor is not None else MAX_LIMIT
    elif _LIMIT.fullmatch(limit) and 1 <= int(limit) <= MAX_LIMIT:
        size = int(limit)
    else:
        raise ApiError(400, "invalid_field", f"limit must be an integer from 1 to {MAX_LIMIT}")
    after = None if cursor is None else decode_cursor(cursor, of, scope)
    return PageRequest(after, size, limit is not None or cursor is not None)
