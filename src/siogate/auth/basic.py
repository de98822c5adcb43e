"""HTTP Basic credentials for people in a browser (the dashboard): the admin's user name
and bcrypt-hashed password, or the API key as the password.

A browser cannot send ``Authorization: Bearer`` when it opens a page, but it asks for a
user name and password after a ``401`` with ``WWW-Authenticate: Basic`` and then sends
them with every request to the same origin and directory, so the page's own requests
(``/v1/stats``) carry them too. The API key never appears in a URL.

A bcrypt check costs about 0.1 s of a core (cost 10), so it runs in a thread, at most
:data:`MAX_CHECKS` at once (more are refused, not queued), and a header that passed is
remembered for :data:`REMEMBER_SECONDS` under a keyed hash, so that a page polling every
two seconds costs one bcrypt check, not one per request.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

import bcrypt

__all__ = ["BasicAuth", "parse_basic"]

# bcrypt reads at most 72 bytes of a password; longer ones are refused, not cut.
MAX_PASSWORD_BYTES = 72
MAX_HEADER = 1024
MAX_CHECKS = 4
REMEMBER_SECONDS = 300.0
MAX_REMEMBERED = 256


def parse_basic(header: str | None) -> tuple[str, bytes] | None:
    """``(user name, password bytes)`` from an ``Authorization: Basic`` value, or None."""
    if not header or len(header) > MAX_HEADER:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    if not colon:
        return None
    try:
        # RFC 7617: UTF-8 when the challenge says charset="UTF-8", as ours does.
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None


class BasicAuth:
    """Checks ``Authorization: Basic`` values against the admin credentials (when a
    password hash is configured) and the API key (any user name)."""

    def __init__(
        self,
        *,
        api_key: str,
        username: str,
        password_hash: bytes | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api_key = api_key.encode("utf-8")
        self._username = username.encode("utf-8")
        self._password_hash = password_hash
        self._clock = clock
        # Keyed so that the memory of passed headers says nothing without the key.
        self._key = secrets.token_bytes(32)
        self._passed: OrderedDict[bytes, float] = OrderedDict()
        self._checks = 0

    def _digest(self, header: str) -> bytes:
        return hmac.new(self._key, header.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()

    def remembered(self, header: str | None) -> bool:
        """Whether ``header`` passed a check less than :data:`REMEMBER_SECONDS` ago."""
        if not header:
            return False
        digest = self._digest(header)
        until = self._passed.get(digest)
        if until is None:
            return False
        if until < self._clock():
            del self._passed[digest]
            return False
        return True

    def _remember(self, header: str) -> None:
        digest = self._digest(header)
        self._passed[digest] = self._clock() + REMEMBER_SECONDS
        self._passed.move_to_end(digest)
        while len(self._passed) > MAX_REMEMBERED:
            self._passed.popitem(last=False)

    async def check(self, header: str | None) -> bool:
        """Whether ``header`` carries the API key or the admin's name and password."""
        if self.remembered(header):
            return True
        parsed = parse_basic(header)
        if parsed is None or header is None:
            return False
        user, password = parsed
        if self._api_key and hmac.compare_digest(password, self._api_key):
            self._remember(header)
            return True
        if self._password_hash is None or len(password) > MAX_PASSWORD_BYTES:
            return False
        if self._checks >= MAX_CHECKS:
            return False
        self._checks += 1
        try:
            matches = await asyncio.to_thread(bcrypt.checkpw, password, self._password_hash)
        except ValueError:
            matches = False
        finally:
            self._checks -= 1
        name_ok = hmac.compare_digest(user.encode("utf-8"), self._username)
        if matches and name_ok:
            self._remember(header)
            return True
        return False
