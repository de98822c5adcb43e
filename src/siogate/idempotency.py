"""Idempotency keys: a request sent again with the same key is answered, not applied again.

A store remembers, per key, a fingerprint of the first request (a hash of its method,
path and body) and, once it succeeded, its response. :meth:`IdempotencyStore.claim`
answers one of:

* ``new``: the caller owns the key now; it applies the request, then calls
  :meth:`~IdempotencyStore.complete` (a 2xx response, kept for replay) or
  :meth:`~IdempotencyStore.release` (any failure: a retry may apply it).
* ``replay``: the stored response of the first request.
* ``in_progress``: the first request with this key has not finished.
* ``mismatch``: the key was used for a different request.

A request whose whole effect is one broker publish, and whose answer is known before it
is applied (an emit without ack, a batch, a join, a leave, a disconnect), goes through
:meth:`~IdempotencyStore.apply_once` instead: one step that claims the key with the
answer as its record and publishes. With Redis that step is one script in the broker's
publish pipeline (see :class:`siogate.broker.Guard`), so the key costs no round trip of
its own, and a concurrent repeat finds the answer already recorded (a replay, not
``in_progress``).

Two implementations: :class:`MemoryIdempotencyStore` (one process, bounded by count
and bytes, oldest evicted first) and :class:`RedisIdempotencyStore` (a cluster: the
claim is one atomic ``SET NX`` in Redis, so two nodes given the same key at the same
instant cannot both apply it). Both keep keys for ``ttl`` seconds after their
request completed. This module does no HTTP: the API wraps its routes with it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import secrets
import struct
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .errors import SiogateError

# Limits
MAX_KEY_LENGTH = 256
"""Characters in an ``Idempotency-Key``: 1 to this many, printable ASCII."""
MAX_STORED_BODY = 64 * 1024
"""Bytes of a response body kept for replay; a larger response is not kept (the key
is released, as if the request had failed, so a retry applies again)."""
MEMORY_MAX_KEYS = 100_000
"""Keys one process remembers without Redis; the oldest are forgotten first."""
MEMORY_MAX_BYTES = 64 * 1024 * 1024
"""Bytes of keys and stored bodies one process keeps without Redis (oldest go first)."""
DEFAULT_TTL = 24 * 3600.0
"""Seconds a completed key is remembered (``--idempotency-ttl``)."""
PENDING_TTL = 60.0
"""Seconds an unfinished claim holds its key at most: a node that died while applying
a request does not block that key longer than this."""
# Seconds a Redis round trip may take (as the broker's connections).
SOCKET_TIMEOUT = 2.0

ClaimState = Literal["new", "replay", "in_progress", "mismatch"]


class StoreUnavailable(SiogateError):
    """The store (Redis) could not be reached; nothing was claimed."""


_VALID_KEY = re.compile(f"[ -~]{{1,{MAX_KEY_LENGTH}}}")


def valid_key(key: str) -> bool:
    """1 to ``MAX_KEY_LENGTH`` printable ASCII characters (space included)."""
    return _VALID_KEY.fullmatch(key) is not None


def fingerprint(method: str, path: str, body: bytes) -> str:
    """What tells one request from another under the same key."""
    # Each part length-prefixed, so that no two (method, path, body) triples collide.
    data = _head(method, path) + _LENGTH.pack(len(body)) + body
    return hashlib.sha256(data).hexdigest()


_LENGTH = struct.Struct(">Q")


@functools.lru_cache(maxsize=64)
def _head(method: str, path: str) -> bytes:
    # The prefix of a fingerprint's input, for the few routes that take a key.
    m, p = method.encode(), path.encode()
    return _LENGTH.pack(len(m)) + m + _LENGTH.pack(len(p)) + p


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A response kept for replay: JSON bodies only, so it is stored as text."""

    status: int
    body: str
    content_type: str = "application/json"


@dataclass(frozen=True, slots=True)
class Claim:
    """What :meth:`IdempotencyStore.claim` found; ``response`` is set for ``replay``."""

    state: ClaimState
    response: StoredResponse | None = None
    # Identify this claim to complete() and release(): a claim that expired and was
    # taken by another request is not overwritten by the first one finishing late.
    token: str = ""
    fingerprint: str = ""


Publish = Callable[[], Awaitable[None]]
"""Applies a request whose whole effect is one broker publish."""
GuardedPublish = Callable[[str, str, int], Awaitable[bytes | None]]
"""``(key, value, ttl_ms)``: the same publish, made only if the Redis key ``key`` is
free, which it then holds ``value`` for ``ttl_ms``, in one atomic step. None when
published; else the key's value, and nothing was published (see
:class:`siogate.broker.GuardedPublisher`)."""


_APPLIED = Claim("new")
"""What apply_once answers when it applied the request (nothing to complete or release)."""


class IdempotencyStore(Protocol):
    """Where keys are claimed and responses kept."""

    async def claim(self, key: str, fingerprint: str) -> Claim:
        """Claim ``key`` for a request, or say why it cannot be applied now."""

    async def apply_once(
        self,
        key: str,
        fingerprint: str,
        response: StoredResponse,
        publish: Publish,
        guarded: GuardedPublish | None,
    ) -> Claim:
        """Apply a one-publish request under ``key`` unless the key is taken, with
        ``response`` as its answer. ``new``: applied (by ``guarded`` where the store
        can use it, else by ``publish``) and recorded; any other state says, as
        :meth:`claim` does, why nothing was applied. Errors of the publish propagate;
        the key is then free again, unless the publish may have happened."""

    async def complete(self, key: str, claim: Claim, response: StoredResponse) -> None:
        """Keep ``response`` for replay under a key this request claimed."""

    async def release(self, key: str, claim: Claim) -> None:
        """Forget a claimed key: the request failed, a retry may apply it."""

    async def close(self) -> None:
        """Release connections."""


def storable(response: StoredResponse) -> bool:
    if not 200 <= response.status < 300:
        return False
    body = response.body
    # A character is at most 4 bytes of UTF-8: most bodies need no encoding to tell.
    return len(body) * 4 <= MAX_STORED_BODY or len(body.encode()) <= MAX_STORED_BODY


async def apply_in_steps(
    store: IdempotencyStore, key: str, fingerprint: str, response: StoredResponse, publish: Publish
) -> Claim:
    """apply_once as claim, publish, complete: what a store without a guarded publish
    does. A repeat that comes while the publish runs is ``in_progress``."""
    claim = await store.claim(key, fingerprint)
    if claim.state != "new":
        return claim
    try:
        await publish()
    except Exception:
        await store.release(key, claim)
        raise
    # Cancelled instead (the client hung up): whether the broker still publishes is
    # not known here, so the claim stays pending, at most PENDING_TTL.
    await store.complete(key, claim, response)
    return claim


# ------------------------------------------------------------------ one process


@dataclass(slots=True)
class _Entry:
    fingerprint: str
    token: str
    expires: float  # monotonic
    response: StoredResponse | None = None  # None while in progress
    size: int = 0


def _found_entry(entry: _Entry, fingerprint: str) -> Claim:
    if entry.fingerprint != fingerprint:
        return Claim("mismatch")
    if entry.response is None:
        return Claim("in_progress")
    return Claim("replay", entry.response)


class MemoryIdempotencyStore:
    """Keys of one process, in insertion order: the oldest is the first to go."""

    def __init__(
        self,
        ttl: float = DEFAULT_TTL,
        *,
        max_keys: int = MEMORY_MAX_KEYS,
        max_bytes: int = MEMORY_MAX_BYTES,
    ) -> None:
        self._ttl = ttl
        self._max_keys = max_keys
        self._max_bytes = max_bytes
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _expire(self, now: float) -> None:
        # Entries are kept in the order of their expiry (complete() moves one to the
        # end with the full TTL, pending ones have a shorter one but are few and are
        # checked one by one on lookup), so the scan stops at the first live one.
        entries = self._entries
        while entries:
            key, entry = next(iter(entries.items()))
            if entry.expires > now:
                break
            self._drop(key)

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry.size

    def _evict(self) -> None:
        while self._entries and (
            len(self._entries) > self._max_keys or self._bytes > self._max_bytes
        ):
            self._drop(next(iter(self._entries)))

    async def claim(self, key: str, fingerprint: str) -> Claim:
        now = time.monotonic()
        self._expire(now)
        entry = self._entries.get(key)
        if entry is not None and entry.expires <= now:
            self._drop(key)
            entry = None
        if entry is None:
            token = secrets.token_hex(8)
            size = len(key) + len(fingerprint)
            self._entries[key] = _Entry(
                fingerprint, token, now + min(self._ttl, PENDING_TTL), size=size
            )
            self._bytes += size
            self._evict()
            return Claim("new", token=token, fingerprint=fingerprint)
        return _found_entry(entry, fingerprint)

    async def apply_once(
        self,
        key: str,
        fingerprint: str,
        response: StoredResponse,
        publish: Publish,
        guarded: GuardedPublish | None,
    ) -> Claim:
        # claim, publish, complete (as _in_steps, without its tokens and lookups): the
        # memory broker's publish does not wait, so this is one step of the event loop,
        # and a broker that does wait leaves repeats in_progress meanwhile.
        now = time.monotonic()
        self._expire(now)
        entry = self._entries.get(key)
        if entry is not None and entry.expires <= now:
            self._drop(key)
            entry = None
        if entry is not None:
            return _found_entry(entry, fingerprint)
        if not storable(response):
            return await apply_in_steps(self, key, fingerprint, response, publish)
        size = len(key) + len(fingerprint) + len(response.body)
        entry = _Entry(fingerprint, "", now + min(self._ttl, PENDING_TTL), None, size)
        self._entries[key] = entry
        self._bytes += size
        try:
            await publish()
        except Exception:
            if self._entries.get(key) is entry:
                self._drop(key)
            raise
        if self._entries.get(key) is entry:
            entry.response = response
            entry.expires = time.monotonic() + self._ttl
            self._entries.move_to_end(key)
        self._evict()
        return _APPLIED

    async def complete(self, key: str, claim: Claim, response: StoredResponse) -> None:
        entry = self._entries.get(key)
        if entry is None or entry.token != claim.token:
            return  # evicted or expired meanwhile: nothing to replay
        if not storable(response):
            self._drop(key)
            return
        entry.response = response
        entry.expires = time.monotonic() + self._ttl
        size = len(key) + len(entry.fingerprint) + len(response.body)
        self._bytes += size - entry.size
        entry.size = size
        self._entries.move_to_end(key)
        self._evict()

    async def release(self, key: str, claim: Claim) -> None:
        entry = self._entries.get(key)
        if entry is not None and entry.token == claim.token and entry.response is None:
            self._drop(key)

    async def close(self) -> None:
        self._entries.clear()
        self._bytes = 0


# ------------------------------------------------------------------ a cluster

# Claim atomically: SET NX, else return what is there. One round trip, and no window
# in which two nodes both see the key missing.
_CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return false
end
return redis.call('GET', KEYS[1])
"""
# Replace (complete) or delete (release) the value only while it is still this
# request's own pending claim.
_COMPLETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return false
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def _dumps(value: dict[str, object]) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@functools.lru_cache(maxsize=64)
def _record_tail(response: StoredResponse) -> str:
    """A stored record after its fingerprint, written by hand for the one-step path,
    where answers are a few constant bodies (so each is written once). The same JSON as
    complete() stores: either path reads the other's keys."""
    body = json.dumps(response.body, ensure_ascii=False)
    kind = json.dumps(response.content_type, ensure_ascii=False)
    return f'","status":{response.status},"body":{body},"type":{kind}}}'


class RedisIdempotencyStore:
    """Keys shared by every node of a cluster: ``<prefix>:idempotency:<sha256 of key>``.

    Each value is JSON: ``{"fp": ..., "token": ...}`` while the first request runs
    (expiring after ``PENDING_TTL``), then ``{"fp": ..., "status": ..., "body": ...,
    "type": ...}`` for ``ttl`` seconds.
    """

    def __init__(self, url: str, *, prefix: str = "siogate", ttl: float = DEFAULT_TTL) -> None:
        self._prefix = prefix
        self._ttl_ms = max(1, int(ttl * 1000))
        self._pending_ms = min(self._ttl_ms, int(PENDING_TTL * 1000))
        # The broker's connection settings: fail fast, never retry behind the caller's back.
        self._redis = Redis.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=SOCKET_TIMEOUT,
            socket_keepalive=True,
            retry=Retry(NoBackoff(), 0),
        )
        self._claim = self._redis.register_script(_CLAIM)
        self._complete = self._redis.register_script(_COMPLETE)
        self._release = self._redis.register_script(_RELEASE)

    def _key(self, key: str) -> str:
        # Hashed: a client's key may hold any printable character, and its length
        # should not decide the size of Redis key names.
        return f"{self._prefix}:idempotency:{hashlib.sha256(key.encode()).hexdigest()}"

    @staticmethod
    def _pending(fingerprint: str, token: str) -> str:
        return _dumps({"fp": fingerprint, "token": token})

    async def claim(self, key: str, fingerprint: str) -> Claim:
        token = secrets.token_hex(8)
        try:
            found = await self._claim(
                keys=[self._key(key)],
                args=[self._pending(fingerprint, token), self._pending_ms],
            )
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"Redis did not answer the idempotency check: {exc}") from exc
        if found is None:
            return Claim("new", token=token, fingerprint=fingerprint)
        return _found(found, fingerprint)

    async def apply_once(
        self,
        key: str,
        fingerprint: str,
        response: StoredResponse,
        publish: Publish,
        guarded: GuardedPublish | None,
    ) -> Claim:
        if guarded is None or not storable(response):
            return await apply_in_steps(self, key, fingerprint, response, publish)
        record = '{"fp":"' + fingerprint + _record_tail(response)
        found = await guarded(self._key(key), record, self._ttl_ms)
        if found is None:
            return _APPLIED
        return _found(found, fingerprint)

    async def complete(self, key: str, claim: Claim, response: StoredResponse) -> None:
        pending = self._pending(claim.fingerprint, claim.token)
        try:
            if storable(response):
                stored = _dumps(
                    {
                        "fp": claim.fingerprint,
                        "status": response.status,
                        "body": response.body,
                        "type": response.content_type,
                    }
                )
                await self._complete(keys=[self._key(key)], args=[pending, stored, self._ttl_ms])
            else:
                await self._release(keys=[self._key(key)], args=[pending])
        except (RedisError, OSError) as exc:
            # Applied, but not recorded: the claim expires after PENDING_TTL, and a
            # retry after that applies again.
            raise StoreUnavailable(f"Redis did not record the response: {exc}") from exc

    async def release(self, key: str, claim: Claim) -> None:
        try:
            await self._release(
                keys=[self._key(key)], args=[self._pending(claim.fingerprint, claim.token)]
            )
        except (RedisError, OSError) as exc:
            # The key answers in_progress until the claim expires (PENDING_TTL).
            raise StoreUnavailable(f"Redis did not release the key: {exc}") from exc

    async def close(self) -> None:
        await self._redis.aclose()


def _found(found: bytes, fingerprint: str) -> Claim:
    """What a key's value in Redis says to a request with ``fingerprint``."""
    try:
        value = json.loads(found)
        if value["fp"] != fingerprint:
            return Claim("mismatch")
        if "status" not in value:
            return Claim("in_progress")
        response = StoredResponse(int(value["status"]), str(value["body"]), str(value["type"]))
    except (ValueError, KeyError, TypeError):
        # Not ours (another program under this prefix?): never apply twice.
        return Claim("in_progress")
    return Claim("replay", response)


_memory: type[IdempotencyStore] = MemoryIdempotencyStore
_redis: type[IdempotencyStore] = RedisIdempotencyStore
