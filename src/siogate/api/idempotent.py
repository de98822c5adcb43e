"""The ``Idempotency-Key`` header on the API's POST routes (see ``siogate.idempotency``).

A request with a key is applied at most once per key: a repeat gets the first
response again, with ``Idempotent-Replayed: true``. Only 2xx responses are kept; a
failure releases the key so that a retry is applied.

Two paths. A request whose whole effect is one broker publish and whose answer is known
before it is applied (:class:`OnePublish`: an emit without ack, a batch, a join, a
leave, a disconnect) is claimed, recorded and published in one step
(``IdempotencyStore.apply_once``; with Redis, one script in the broker's publish
pipeline). Any other (an emit with ack) is claimed, applied, then completed.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from ..broker import Command, Guard, GuardedPublisher
from ..errors import ApiError
from ..idempotency import (
    Claim,
    GuardedPublish,
    IdempotencyStore,
    StoredResponse,
    StoreUnavailable,
    fingerprint,
    valid_key,
)
from ..node import Node
from ..ratelog import RateLimitedLog
from ..transport.http import Request, Response

logger = logging.getLogger("siogate.api")
log = RateLimitedLog(logger)

HEADER = "idempotency-key"
REPLAYED = ("idempotent-replayed", "true")


def _error(status: int, code: str, message: str) -> Response:
    body = ApiError(status, code, message).to_json()
    return Response(status, json.dumps(body, separators=(",", ":")).encode())


@dataclass(frozen=True, slots=True)
class OnePublish:
    """A request whose whole effect is publishing ``commands``, answered with
    ``response`` once they are published."""

    commands: Sequence[Command]
    response: Response


Plan = Callable[[Request], "OnePublish | None"]
"""Reads a request as a :class:`OnePublish`; None when it is not one (an emit with ack).
Raises :class:`ApiError` for a request that is not valid."""


class Idempotency:
    """Runs requests that carry an ``Idempotency-Key`` through a store."""

    def __init__(self, store: IdempotencyStore) -> None:
        self.store = store
        # Requests whose caller went away: they still finish and record their outcome.
        self._running: set[asyncio.Task[Response]] = set()
        # The node's publish, and the broker's guarded one (Redis), once bound.
        self._publish: Callable[[Sequence[Command]], Awaitable[None]] | None = None
        self._guarded: Callable[[Sequence[Command], Guard], Awaitable[bytes | None]] | None = None

    def bind(self, node: Node) -> None:
        """Publish one-step requests through ``node`` (the API does it)."""
        self._publish = node.publish
        broker = node.broker
        self._guarded = broker.publish_guarded if isinstance(broker, GuardedPublisher) else None

    async def run(
        self,
        request: Request,
        call: Callable[[], Awaitable[Response]],
        plan: Plan | None = None,
    ) -> Response:
        key = request.headers.get(HEADER)
        if key is None:
            return await call()
        if not valid_key(key):
            return _error(
                400,
                "invalid_idempotency_key",
                "Idempotency-Key must be 1-256 printable ASCII characters",
            )
        fp = fingerprint(request.method, request.path, request.body)
        if plan is not None and self._publish is not None:
            try:
                one = plan(request)
            except ApiError:
                # Answered by the general path, after the key's checks (a reused key
                # is 422 whatever its new body is) and without keeping the key.
                one = None
            if one is not None:
                return await self._once(key, fp, one)
        try:
            claim = await self.store.claim(key, fp)
        except StoreUnavailable as exc:
            return _unavailable(exc)
        if claim.state != "new":
            return _not_applied(claim)
        # Its own task, shielded: a client that times out and hangs up (which cancels
        # this handler) must not keep the outcome from being recorded, or its retry
        # would be applied a second time.
        task = asyncio.ensure_future(self._apply(key, claim, call))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return await asyncio.shield(task)

    async def _once(self, key: str, fp: str, one: OnePublish) -> Response:
        """The one-step path. Not shielded like _apply: once the store has it, the
        publish and its record happen whether or not this caller still waits."""
        response = one.response
        commands = one.commands
        publish = self._publish
        assert publish is not None
        guarded: GuardedPublish | None = None
        if self._guarded is not None:
            publish_guarded = self._guarded

            def guarded(key: str, value: str, ttl_ms: int) -> Awaitable[bytes | None]:
                return publish_guarded(commands, Guard(key, value, ttl_ms))

        stored = _stored(response.status, response.body, response.content_type)
        try:
            claim = await self.store.apply_once(key, fp, stored, lambda: publish(commands), guarded)
        except StoreUnavailable as exc:
            return _unavailable(exc)
        if claim.state != "new":
            return _not_applied(claim)
        return response

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


@functools.lru_cache(maxsize=64)
def _stored(status: int, body: bytes, content_type: str) -> StoredResponse:
    # One-step answers are a few constant bodies: each is made once (and, being the
    # same object, written once by the Redis store, see idempotency._record_tail).
    return StoredResponse(status, body.decode(), content_type)


def _not_applied(claim: Claim) -> Response:
    """The answer to a request whose key was taken (``claim`` is not ``new``)."""
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
    return _error(
        409,
        "idempotency_key_in_progress",
        "a request with this Idempotency-Key is still being applied; retry later",
    )


def _unavailable(exc: StoreUnavailable) -> Response:
    response = _error(503, "broker_unavailable", str(exc))
    response.headers.append(("retry-after", "1"))
    return response
