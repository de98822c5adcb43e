"""Paged listings and presence over a two-node cluster (real nodes, a private Redis).

The nodes, clients and helpers are those of ``test_cluster``; its fixtures are imported
here, so test parameters redefine their names on purpose.
"""

# ruff: noqa: F811

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sioclient import uid
from test_cluster import (  # noqa: F401 (fixtures)
    HEADERS,
    Connect,
    Gateway,
    cluster,
    connect,
    get,
    health,
    ok,
    two,
)

pytestmark = pytest.mark.redis


async def page_through(
    nodes: tuple[Gateway, Gateway], path: str, key: str, limit: int
) -> list[dict[str, Any]]:
    """Every page of a listing, asking the two nodes in turn (a cursor works on any)."""
    got: list[dict[str, Any]] = []
    cursor = None
    async with httpx.AsyncClient(headers=HEADERS, timeout=10) as client:
        for turn in range(200):
            params = {"limit": str(limit)} | ({"cursor": cursor} if cursor else {})
            r = await client.get(nodes[turn % 2].url + path, params=params)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["partial"] is False and body["nodes"]["answered"] == 2
            assert len(body[key]) <= limit
            got.extend(body[key])
            cursor = body["next_cursor"]
            if cursor is None:
                return got
    raise AssertionError("listing never ended")


async def test_sockets_on_both_nodes_page_once_each_in_order(
    two: tuple[Gateway, Gateway], connect: Connect
) -> None:
    a, b = two
    room = uid("spread")
    sids = set()
    for i in range(30):
        node = (a, b)[i % 3 == 0]
        client = await connect(node, token=node.token(f"s{i}", rooms=[room]))
        sids.add(client.sid())
    listing = await page_through(two, f"/v1/rooms/{room}/sockets", "sockets", 7)
    ids = [s["id"] for s in listing]
    assert len(ids) == 30 and set(ids) == sids and ids == sorted(ids)
    node_ids = {health(a)["node"], health(b)["node"]}
    assert {s["node"] for s in listing} == node_ids


async def test_rooms_shared_by_both_nodes_page_with_summed_counts(
    two: tuple[Gateway, Gateway], connect: Connect
) -> None:
    a, b = two
    ns = "/"
    tag = uid("shared")
    names = [f"{tag}-{i:02d}" for i in range(12)]
    # Rooms 0-7 on A, 4-11 on B (4-7 on both), 2 sockets each on B.
    await connect(a, token=a.token(f"{tag}-a", rooms=names[:8]))
    for n in range(2):
        await connect(b, token=b.token(f"{tag}-b{n}", rooms=names[4:]))
    listing = await page_through(two, "/v1/rooms", "rooms", 3)
    counts = {r["name"]: r["sockets"] for r in listing if r["name"].startswith(tag)}
    assert counts == {name: (1 if i < 4 else 3 if i < 8 else 2) for i, name in enumerate(names)}
    all_names = [r["name"] for r in listing]
    assert all_names == sorted(all_names) and len(all_names) == len(set(all_names)), ns


async def test_presence_counts_sockets_on_both_nodes(
    two: tuple[Gateway, Gateway], connect: Connect
) -> None:
    a, b = two
    dana, eve = uid("dana"), uid("eve")
    await connect(a, token=a.token(dana))
    await connect(b, token=b.token(dana))
    await connect(b, token=b.token(eve))
    for node in (a, b):
        body = await get(node, f"/v1/presence?user={dana}&user={eve}&user=offline-{dana}")
        assert body["users"] == {
            dana: {"online": True, "sockets": 2},
            eve: {"online": True, "sockets": 1},
            f"offline-{dana}": {"online": False, "sockets": 0},
        }
        assert body["partial"] is False and body["nodes"] == {"answered": 2, "missing": []}


async def test_room_presence_merges_users_over_nodes(
    two: tuple[Gateway, Gateway], connect: Connect
) -> None:
    a, b = two
    room = uid("hall")
    for node, user in ((a, "fay"), (b, "fay"), (b, "gus"), (a, "hal"), (a, "hal"), (b, "ivy")):
        await connect(node, token=node.token(user, rooms=[room]))
    for node in (a, b):
        anonymous = await connect(node)
        await ok(node, "/v1/join", {"sockets": [anonymous.sid()], "room": room})
    users = await page_through(two, f"/v1/rooms/{room}/presence", "users", 2)
    assert users == [
        {"user": "fay", "sockets": 2},
        {"user": "gus", "sockets": 1},
        {"user": "hal", "sockets": 2},
        {"user": "ivy", "sockets": 1},
    ]
    body = await get(b, f"/v1/rooms/{room}/presence")
    assert body["anonymous"] == 2 and len(body["users"]) == 4 and body["next_cursor"] is None
