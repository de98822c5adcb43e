"""Idempotency keys at the store level (memory and a real Redis) and the API glue.

The HTTP behaviour through real ``siogate serve`` processes is in
``tests/integration/test_idempotency.py``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from conftest import RedisServer
from siogate.api.idempotent import Idempotency
from siogate.idempotency import (
    MAX_STORED_BODY,
    IdempotencyStore,
    MemoryIdempotencyStore,
    RedisIdempotencyStore,
    StoredResponse,
    fingerprint,
    valid_key,
)
from siogate.transport.http import Request, Response

OK = StoredResponse(200, '{"ok":true}')
FP = fingerprint("POST", "/v1/emit", b'{"event":"a"}')


def test_keys_and_fingerprints() -> None:
    assert valid_key("a") and valid_key("x" * 256) and valid_key("a b~!")
    for bad in ("", "x" * 257, "é", "a\tb", "a\x7f", "a\nb"):
        assert not valid_key(bad), bad
    assert fingerprint("POST", "/v1/emit", b"{}") != fingerprint("POST", "/v1/batch", b"{}")
    assert fingerprint("POST", "/a", b"b") != fingerprint("POST", "/ab", b"")
    assert fingerprint("POST", "/a", b"x") == fingerprint("POST", "/a", b"x")


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[IdempotencyStore]:
    made: IdempotencyStore
    if request.param == "memory":
        made = MemoryIdempotencyStore(60)
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        made = RedisIdempotencyStore(server.url, prefix="unit", ttl=60)
    yield made
    await made.close()


async def test_claim_replay_mismatch_and_in_progress(store: IdempotencyStore) -> None:
    first = await store.claim("k", FP)
    assert first.state == "new"
    assert (await store.claim("k", FP)).state == "in_progress"
    assert (await store.claim("k", "other")).state == "mismatch"
    await store.complete("k", first, OK)
    replay = await store.claim("k", FP)
    assert (replay.state, replay.response) == ("replay", OK)
    assert (await store.claim("k", "other")).state == "mismatch"
    assert (await store.claim("another", FP)).state == "new"


async def test_release_frees_the_key_for_a_retry(store: IdempotencyStore) -> None:
    first = await store.claim("k", FP)
    await store.release("k", first)
    second = await store.claim("k", "a different body is fine now")
    assert second.state == "new"
    # A late release or complete of the first claim does not touch the second one.
    await store.release("k", first)
    await store.complete("k", first, OK)
    assert (await store.claim("k", "a different body is fine now")).state == "in_progress"


async def test_failures_and_large_bodies_are_not_kept(store: IdempotencyStore) -> None:
    for status, body in [(503, "{}"), (200, "x" * (MAX_STORED_BODY + 1))]:
        claim = await store.claim("k", FP)
        assert claim.state == "new"
        await store.complete("k", claim, StoredResponse(status, body))
    claim = await store.claim("k", FP)
    assert claim.state == "new"
    await store.complete("k", claim, StoredResponse(200, "x" * MAX_STORED_BODY))
    assert (await store.claim("k", FP)).state == "replay"


async def test_keys_expire_after_the_ttl(redis_server: RedisServer) -> None:
    for store in (
        MemoryIdempotencyStore(0.3),
        RedisIdempotencyStore(redis_server.url, prefix="ttl", ttl=0.3),
    ):
        claim = await store.claim("k", FP)
        await store.complete("k", claim, OK)
        assert (await store.claim("k", FP)).state == "replay"
        await asyncio.sleep(0.5)
        assert (await store.claim("k", FP)).state == "new"
        await store.close()


async def test_memory_store_is_bounded_oldest_first() -> None:
    store = MemoryIdempotencyStore(60, max_keys=3)
    for key in "abcd":
        await store.complete(key, await store.claim(key, FP), OK)
    assert len(store) == 3
    assert (await store.claim("a", FP)).state == "new"  # evicted: the oldest
    assert (await store.claim("d", FP)).state == "replay"
    by_bytes = MemoryIdempotencyStore(60, max_bytes=3 * (1 + len(FP) + 1000))
    for key in "abcd":
        claim = await by_bytes.claim(key, FP)
        await by_bytes.complete(key, claim, StoredResponse(200, "x" * 1000))
    assert len(by_bytes) == 3
    assert (await by_bytes.claim("a", FP)).state == "new"


async def test_redis_claims_race_to_one_winner(redis_server: RedisServer) -> None:
    # Two "nodes" (two stores, two connection pools) and 50 concurrent claims.
    nodes = [RedisIdempotencyStore(redis_server.url, prefix="race") for _ in range(2)]
    try:
        claims = await asyncio.gather(*(nodes[i % 2].claim("same", FP) for i in range(50)))
        assert sorted(c.state for c in claims).count("new") == 1
        assert {c.state for c in claims} == {"new", "in_progress"}
    finally:
        for node in nodes:
            await node.close()


async def test_redis_values_are_json_under_the_prefix(redis_server: RedisServer) -> None:
    store = RedisIdempotencyStore(redis_server.url, prefix="json")
    try:
        await store.complete("k", await store.claim("k", FP), OK)
        keys = await store._redis.keys("*")
        assert len(keys) == 1 and keys[0].startswith(b"json:idempotency:")
        value = json.loads(await store._redis.get(keys[0]))
        assert value == {"fp": FP, "status": 200, "body": '{"ok":true}', "type": "application/json"}
        assert 0 < await store._redis.ttl(keys[0]) <= 86_400
    finally:
        await store.close()


# ---------------------------------------------------------------- the API glue


def request(key: str | None, body: bytes = b'{"event":"a"}') -> Request:
    headers = {} if key is None else {"idempotency-key": key}
    return Request("POST", "/v1/emit", "", headers, body)


class Slow:
    """A route handler that answers ``status`` once released; counts its calls."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.calls = 0
        self.go = asyncio.Event()

    async def __call__(self) -> Response:
        self.calls += 1
        await self.go.wait()
        return Response(self.status, b'{"ok":true}' if self.status == 200 else b"{}")


async def test_concurrent_repeat_is_409_then_replayed() -> None:
    idem = Idempotency(MemoryIdempotencyStore())
    slow = Slow()
    first = asyncio.create_task(idem.run(request("k"), slow))
    await asyncio.sleep(0.01)
    busy = await idem.run(request("k"), slow)
    assert busy.status == 409 and b"idempotency_key_in_progress" in busy.body
    slow.go.set()
    assert (await first).status == 200
    again = await idem.run(request("k"), slow)
    assert (again.status, again.body) == (200, b'{"ok":true}')
    assert ("idempotent-replayed", "true") in again.headers
    reused = await idem.run(request("k", b"{}"), slow)
    assert reused.status == 422 and b"idempotency_key_reused" in reused.body
    assert slow.calls == 1


async def test_a_caller_that_goes_away_still_records_the_outcome() -> None:
    # The HTTP layer cancels the handler when the client hangs up (a client-side
    # timeout): the request is applied anyway, so its key must not be released.
    idem = Idempotency(MemoryIdempotencyStore())
    slow = Slow()
    first = asyncio.create_task(idem.run(request("k"), slow))
    await asyncio.sleep(0.01)
    first.cancel()
    slow.go.set()
    await asyncio.sleep(0.01)
    again = await idem.run(request("k"), slow)
    assert (again.status, slow.calls) == (200, 1)
    assert ("idempotent-replayed", "true") in again.headers


@pytest.mark.parametrize("status", [400, 503])
async def test_failures_release_the_key(status: int) -> None:
    idem = Idempotency(MemoryIdempotencyStore())
    failing = Slow(status)
    failing.go.set()
    assert (await idem.run(request("k"), failing)).status == status
    ok = Slow()
    ok.go.set()
    response = await idem.run(request("k"), ok)
    assert response.status == 200 and not response.headers
    assert ok.calls == 1


async def test_an_exception_releases_the_key() -> None:
    idem = Idempotency(MemoryIdempotencyStore())

    async def broken() -> Response:
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        await idem.run(request("k"), broken)
    ok = Slow()
    ok.go.set()
    assert (await idem.run(request("k"), ok)).status == 200


@pytest.mark.parametrize("key", ["", "x" * 257, "é", "a\x01"])
async def test_invalid_keys_are_400(key: str) -> None:
    idem = Idempotency(MemoryIdempotencyStore())
    never = Slow()
    response = await idem.run(request(key), never)
    assert response.status == 400 and b"invalid_idempotency_key" in response.body
    assert never.calls == 0


async def test_no_key_no_store() -> None:
    store = MemoryIdempotencyStore()
    ok = Slow()
    ok.go.set()
    for _ in range(2):
        assert (await Idempotency(store).run(request(None), ok)).status == 200
    assert (ok.calls, len(store)) == (2, 0)


async def test_redis_down_is_503(redis_server: RedisServer) -> None:
    redis_server.stop()
    store = RedisIdempotencyStore(redis_server.url)
    try:
        never = Slow()
        response = await Idempotency(store).run(request("k"), never)
        assert response.status == 503 and b"broker_unavailable" in response.body
        assert ("retry-after", "1") in response.headers
        assert never.calls == 0
    finally:
        await store.close()
