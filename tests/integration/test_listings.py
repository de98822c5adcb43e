"""Paged listings and presence on one real ``siogate serve`` process.

Sockets are python-socketio clients (``Recorder``). Every test uses rooms, users and
namespaces of its own, so they share one gateway.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sioclient import Recorder, uid

from conftest import Gateway, spawn_gateway

MAX_LIMIT = 1_000


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = spawn_gateway("--allow-anonymous", log_dir=tmp_path_factory.mktemp("gw"))
    yield g
    g.stop()


@pytest.fixture
async def api(gw: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {gw.api_key}"}
    async with httpx.AsyncClient(base_url=gw.url, headers=headers, timeout=30) as client:
        yield client


@pytest.fixture
async def clients() -> AsyncIterator[list[Recorder]]:
    made: list[Recorder] = []
    yield made
    for start in range(0, len(made), 50):
        await asyncio.gather(*(r.close() for r in made[start : start + 50]))


async def connect_many(
    gw: Gateway, made: list[Recorder], tokens: list[str | None], namespace: str = "/"
) -> list[Recorder]:
    """Connect one WebSocket client per token (None: anonymous), 25 at a time."""
    out: list[Recorder] = []
    for start in range(0, len(tokens), 25):
        batch = [
            Recorder(
                gw.url,
                auth=None if token is None else {"token": token},
                namespaces=[namespace],
                transports=["websocket"],
            )
            for token in tokens[start : start + 25]
        ]
        made.extend(batch)
        out.extend(await asyncio.gather(*(r.connect() for r in batch)))
    return out


async def pages(
    api: httpx.AsyncClient, path: str, key: str, limit: int, **params: str
) -> list[dict[str, Any]]:
    """Every page of a listing, following next_cursor until it is null."""
    got: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1_000):
        query = {**params, "limit": str(limit)}
        if cursor is not None:
            query["cursor"] = cursor
        r = await api.get(path, params=query)
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body[key]) <= limit
        got.append(body)
        cursor = body["next_cursor"]
        if cursor is None:
            return got
    raise AssertionError("listing never ended")


def error_code(r: httpx.Response) -> str:
    assert r.status_code == 400, r.text
    code: str = r.json()["error"]["code"]
    return code


def b64(value: Any) -> str:
    raw = json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# ---------------------------------------------------------------- paging


async def test_250_sockets_in_pages_of_100_each_once_in_id_order(
    gw: Gateway, api: httpx.AsyncClient, clients: list[Recorder]
) -> None:
    room = uid("crowd")
    tokens: list[str | None] = [gw.token(f"u{i:03d}", rooms=[room]) for i in range(250)]
    connected = await connect_many(gw, clients, tokens)
    sids = {c.sid() for c in connected}
    path = f"/v1/rooms/{room}/sockets"

    listing = await pages(api, path, "sockets", 100)
    assert [len(p["sockets"]) for p in listing] == [100, 100, 50]
    ids = [s["id"] for p in listing for s in p["sockets"]]
    assert len(ids) == len(set(ids)) == 250 and set(ids) == sids
    assert ids == sorted(ids)
    # The same order again, and the unpaged form (250 <= 1,000) agrees with the pages.
    assert [s["id"] for p in await pages(api, path, "sockets", 100) for s in p["sockets"]] == ids
    whole = (await api.get(path)).json()
    assert [s["id"] for s in whole["sockets"]] == ids and whole["next_cursor"] is None
    # Cursors survive changes: a socket that leaves between pages moves nothing else.
    first = (await api.get(path, params={"limit": "100"})).json()
    await connected[[c.sid() for c in connected].index(ids[150])].close()
    rest = await api.get(path, params={"limit": "100", "cursor": first["next_cursor"]})
    assert [s["id"] for s in rest.json()["sockets"]] == ids[100:150] + ids[151:201]


async def test_rooms_page_by_name(
    gw: Gateway, api: httpx.AsyncClient, clients: list[Recorder]
) -> None:
    ns = f"/{uid('rooms')}"
    names = [f"r{i:02d}" for i in range(25)]
    await connect_many(
        gw, clients, [gw.token("x", rooms=names), gw.token("y", rooms=names[:5])], ns
    )
    listing = await pages(api, "/v1/rooms", "rooms", 4, namespace=ns)
    rooms = [(r["name"], r["sockets"]) for p in listing for r in p["rooms"]]
    expected = sorted(
        [(n, 2 if n in names[:5] else 1) for n in names] + [("user:x", 1), ("user:y", 1)]
    )
    assert rooms == expected
    assert len(listing) == 7 and listing[-1]["next_cursor"] is None
    # An exact fit ends with next_cursor null, not with an empty page.
    exact = await pages(api, "/v1/rooms", "rooms", 27, namespace=ns)
    assert len(exact) == 1 and len(exact[0]["rooms"]) == 27


async def test_unpaged_listing_over_the_maximum_is_refused_and_pages_work(
    gw: Gateway, api: httpx.AsyncClient, clients: list[Recorder]
) -> None:
    ns = f"/{uid('big')}"
    tokens: list[str | None] = [
        gw.token(f"b{i}", rooms=[f"room-{i:02d}-{j:03d}" for j in range(100)]) for i in range(11)
    ]
    await connect_many(gw, clients, tokens, ns)
    r = await api.get("/v1/rooms", params={"namespace": ns})
    assert error_code(r) == "too_many_results" and "limit" in r.json()["error"]["message"]
    listing = await pages(api, "/v1/rooms", "rooms", MAX_LIMIT, namespace=ns)
    assert [len(p["rooms"]) for p in listing] == [1_000, 111]
    # A cursor without a limit gets the default page size.
    r = await api.get("/v1/rooms", params={"namespace": ns, "cursor": listing[0]["next_cursor"]})
    assert len(r.json()["rooms"]) == 100


async def test_bad_limits_and_cursors_are_refused(gw: Gateway, api: httpx.AsyncClient) -> None:
    room = uid("room")
    sockets = f"/v1/rooms/{room}/sockets"
    for limit in ("0", "1001", "-1", "abc", "", "1.5", "10000000"):
        r = await api.get(sockets, params={"limit": limit})
        assert error_code(r) == "invalid_field", limit
    assert error_code(await api.get(f"{sockets}?limit=1&limit=2")) == "invalid_field"

    good = {"v": 1, "of": "sockets", "ns": "/", "room": room, "after": "x"}
    assert (await api.get(sockets, params={"cursor": b64(good)})).status_code == 200
    bad = [
        "",
        "!!!",
        "a",
        "bm90IGpzb24",  # "not json"
        b64(good) + "=",
        b64([1, 2]),
        b64({**good, "v": 2}),
        b64({**good, "after": 5}),
        b64({**good, "after": ""}),
        b64({**good, "extra": 1}),
        b64({k: v for k, v in good.items() if k != "room"}),
        b64({**good, "room": "another"}),
        b64({**good, "ns": "/other"}),
        b64({**good, "of": "rooms"}),
        "A" * 10_000,
    ]
    for cursor in bad:
        r = await api.get(sockets, params={"cursor": cursor})
        assert error_code(r) == "invalid_cursor", cursor
    # A cursor of the rooms listing does not page a room's presence, and so on.
    rooms_cursor = b64({"v": 1, "of": "rooms", "ns": "/", "after": "x"})
    assert (await api.get("/v1/rooms", params={"cursor": rooms_cursor})).status_code == 200
    r = await api.get(f"/v1/rooms/{room}/presence", params={"cursor": rooms_cursor})
    assert error_code(r) == "invalid_cursor"


# ---------------------------------------------------------------- presence


async def test_presence_of_users(
    gw: Gateway, api: httpx.AsyncClient, clients: list[Recorder]
) -> None:
    alice, bob, carol = uid("alice"), uid("bob"), uid("carol")
    await connect_many(gw, clients, [gw.token(alice), gw.token(alice), gw.token(bob)])
    # A socket of carol put in alice's room does not make alice count it.
    (intruder,) = await connect_many(gw, clients, [gw.token(carol)])
    r = await api.post("/v1/join", json={"sockets": [intruder.sid()], "room": f"user:{alice}"})
    assert r.status_code == 200

    r = await api.get("/v1/presence", params=[("user", alice), ("user", bob), ("user", "nobody")])
    assert r.status_code == 200, r.text
    assert r.json() == {
        "users": {
            alice: {"online": True, "sockets": 2},
            bob: {"online": True, "sockets": 1},
            "nobody": {"online": False, "sockets": 0},
        },
        "partial": False,
        "nodes": {"answered": 1, "missing": []},
    }
    # Repeats are answered once; other namespaces have their own sockets.
    r = await api.get(f"/v1/presence?user={bob}&user={bob}")
    assert r.json()["users"] == {bob: {"online": True, "sockets": 1}}
    r = await api.get("/v1/presence", params={"user": alice, "namespace": "/elsewhere"})
    assert r.json()["users"] == {alice: {"online": False, "sockets": 0}}


async def test_presence_requests_are_checked(gw: Gateway, api: httpx.AsyncClient) -> None:
    assert error_code(await api.get("/v1/presence")) == "invalid_field"
    many = [("user", f"u{i}") for i in range(101)]
    assert error_code(await api.get("/v1/presence", params=many)) == "invalid_field"
    assert (await api.get("/v1/presence", params=many[:100])).status_code == 200
    assert error_code(await api.get("/v1/presence", params={"user": ""})) == "invalid_field"
    assert error_code(await api.get("/v1/presence", params={"user": "x" * 257})) == "invalid_field"
    r = await api.get("/v1/presence", params={"user": "a", "limit": "1"})
    assert error_code(r) == "invalid_field"
    async with httpx.AsyncClient() as anonymous:
        assert (await anonymous.get(f"{gw.url}/v1/presence?user=a")).status_code == 401


async def test_room_presence_lists_distinct_users_in_pages(
    gw: Gateway, api: httpx.AsyncClient, clients: list[Recorder]
) -> None:
    room = uid("lobby")
    # 40 users with 2 sockets each, one with 3, and 5 anonymous sockets.
    tokens: list[str | None] = [gw.token(f"p{i:02d}", rooms=[room]) for i in range(40)] * 2
    tokens += [gw.token("zed", rooms=[room])] * 3
    tokens += [None] * 5
    connected = await connect_many(gw, clients, tokens)
    anonymous = [c.sid() for c in connected[-5:]]
    r = await api.post("/v1/join", json={"sockets": anonymous, "room": room})
    assert r.status_code == 200

    path = f"/v1/rooms/{quote(room)}/presence"
    listing = await pages(api, path, "users", 15)
    users = [(u["user"], u["sockets"]) for p in listing for u in p["users"]]
    assert users == [(f"p{i:02d}", 2) for i in range(40)] + [("zed", 3)]
    assert [len(p["users"]) for p in listing] == [15, 15, 11]
    assert all(p["anonymous"] == 5 and p["partial"] is False for p in listing)
    whole = (await api.get(path)).json()
    assert len(whole["users"]) == 41 and whole["anonymous"] == 5 and whole["next_cursor"] is None
    empty = (await api.get(f"/v1/rooms/{uid('none')}/presence")).json()
    assert empty["users"] == [] and empty["anonymous"] == 0
