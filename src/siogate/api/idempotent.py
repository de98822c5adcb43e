"""The ``Idempotency-Key`` header on the API's POST routes (see ``siogate.idempotency``).

A request with a key is applied at most once per key: a repeat gets the first
response again, with ``Idempotent-Replayed: true``. Only 2xx responses are kept; a
failure releases the key so that a retry is applied.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

from ..errors import ApiError
from ..idempotency import (
    Claim,
    IdempotencyStore,
    StoredResponse,
    StoreUnavailable,
    fingerprint,
    valid_key,
)
from ..ratelog import RateLimitedLog
from ..transport.http import Request, Response

logger = logging.getLogger("siogate.api")
log = RateLimitedLog(logger)

HEADER = "idempotency-key"
REPLAYED = ("idempotent-replayed", "true")


def _error(status: int, code: str, message: str) -> Response:
    body = ApiError(status, code, message).to_json()
    return Response(status, json.dumps(body, separators=(",", ":")).encode())


class Idempotency:
    """Runs requests that carry an ``Idempotency-Key`` through a store."""

    def __init__(self, store: IdempotencyStore) -> None:
        self.store = store
        # Requests whose caller went away: they still finish and record their outcome.
        self._running: set[asyncio.Task[Response]] = set()

    async def run(self, request: Request, call: Callable[[], Awaitable[Response]]) -> Response:
        key = request.headers.get(HEADER)
        if key is None:
            return await call()
        if not valid_key(key):
            return _error(
                400,
                "invalid_idempotency_key",
                "Idempotency-Key must be 1-256 printable ASCII characters",
            )
        try:
            claim = await self.store.claim(
                key, fingerprint(request.method, request.path, request.body)
            )
        except StoreUnavailable as exc:
            return _unavailable(exc)
        if claim.state == "replay":
            assert claim.response is not None
            stored = claim.response
            return Response(
                stored.status,
                stored.body.encode(),
                content_type=stored.content_type,
                headers=[REPLAYED],
            )
        if claim.state == "mismatch":
            return _error(
                422,
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request",
            )
        if claim.state == "in_progress":
            return _error(
                409,
                "idempotency_key_in_progress",
                "a request with this Idempotency-Key is still being applied; retry later",
            )
        # Its own task, shielded: a client that times out and hangs up (which cancels
        # this handler) must not keep the outcome from being recorded, or its retry
        # would be applied a second time.
        task = asyncio.ensure_future(self._apply(key, claim, call))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return await asyncio.shield(task)

    async def _apply(
        self, key: str, claim: Claim, call: Callable[[], Awaitable[Response]]
    ) -> Response:
        try:
            response = await call()
        except BaseException:
            await self._release(key, claim)
            raise
        try:
            if 200 <= response.status < 300:
                stored = StoredResponse(
                    response.status, response.body.decode(), response.content_type
                )
                await self.store.complete(key, claim, stored)
            else:
                await self.store.release(key, claim)
        except (StoreUnavailable, UnicodeDecodeError) as exc:
            log.warning("idempotency", "idempotency key not recorded: %s", exc)
        return response

    async def _release(self, key: str, claim: Claim) -> None:
        try:
            await self.store.release(key, claim)
        except StoreUnavailable as exc:
            log.warning("idempotency", "idempotency key not released: %s", exc)


def _unavailable(exc: StoreUnavailable) -> Response:
    response = _error(503, "broker_unavailable", str(exc))
    response.headers.append(("retry-after", "1"))
    return response
