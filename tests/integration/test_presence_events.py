"""presence:join / presence:leave to room members (``--presence-events``), end to end.

Real gateways (one process, then a two-node cluster on a private Redis) and
python-socketio clients. Negative checks close with a sentinel emit (see sioclient):
events reach a socket in order, so one not there before the sentinel never comes.
"""

# ruff: noqa: F811

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sioclient import Recorder, uid
from test_cluster import (  # noqa: F401 (fixtures)
    Cluster,
    Connect,
    cluster,
    connect,
    ok,
    sentinel,
    wait_peers,
)

from conftest import Gateway


async def joined(gw: Gateway, connect: Connect, user: str, rooms: list[str]) -> Recorder:
    return await connect(gw, token=gw.token(sub=user, rooms=rooms))


def presence(client: Recorder) -> list[tuple[str, dict[str, Any]]]:
    return [(ev, args[0]) for _, ev, args in client.events if ev.startswith("presence:")]


async def test_members_see_joins_and_leaves_single_node(
    start_gateway: Callable[..., Gateway], connect: Connect
) -> None:
    gw = start_gateway("--presence-events", "/")
    room = uid("chat")
    a = await joined(gw, connect, "ann", [room])
    b = await joined(gw, connect, "bob", [room])
    # A was alone when it came: nobody to tell. B's arrival (token rooms) reaches A.
    assert await a.wait_event("presence:join") == [{"room": room, "user": "bob", "socket": b.sid()}]
    # B leaves through the API: A is told; B itself hears nothing of its own moves.
    await ok(gw, "/v1/leave", {"sockets": [b.sid()], "room": room})
    assert await a.wait_event("presence:leave") == [
        {"room": room, "user": "bob", "socket": b.sid()}
    ]
    # B joins again through the API, then C connects with the room in its token.
    await ok(gw, "/v1/join", {"sockets": [b.sid()], "room": room})
    await a.wait_event("presence:join", count=2)
    c = await joined(gw, connect, "cid", [room])
    c_join = {"room": room, "user": "cid", "socket": c.sid()}
    assert await a.wait_event("presence:join", count=3) == [c_join]
    assert await b.wait_event("presence:join") == [c_join]
    # C disconnects: the others see it leave.
    c_sid = c.sid()
    await c.close()
    c_leave = {"room": room, "user": "cid", "socket": c_sid}
    assert await a.wait_event("presence:leave", count=2) == [c_leave]
    assert await b.wait_event("presence:leave") == [c_leave]
    await sentinel(gw, a, b)
    assert [ev for ev, _ in presence(b)] == ["presence:join", "presence:leave"]
    # Never about the user:<sub> rooms (ann and a second tab of hers share one).
    tab = await joined(gw, connect, "ann", [])
    await sentinel(gw, a, b, tab)
    assert all(data["room"] == room for _, data in presence(a))
    assert presence(tab) == []


async def test_two_tabs_of_one_user_are_two_joins(
    start_gateway: Callable[..., Gateway], connect: Connect
) -> None:
    gw = start_gateway("--presence-events", "*")
    room = uid("chat")
    a = await joined(gw, connect, "ann", [room])
    one = await joined(gw, connect, "bob", [room])
    two = await joined(gw, connect, "bob", [room])
    await a.wait_event("presence:join", count=2)
    sockets = [data["socket"] for ev, data in presence(a) if ev == "presence:join"]
    assert sockets == [one.sid(), two.sid()]


async def test_off_by_default_and_per_namespace(
    start_gateway: Callable[..., Gateway], connect: Connect
) -> None:
    room = uid("chat")
    for args in ((), ("--presence-events", "/other")):
        gw = start_gateway(*args)
        a = await joined(gw, connect, "ann", [room])
        b = await joined(gw, connect, "bob", [room])
        await ok(gw, "/v1/leave", {"sockets": [b.sid()], "room": room})
        await ok(gw, "/v1/join", {"sockets": [b.sid()], "room": room})
        await b.close()
        await sentinel(gw, a)
        assert presence(a) == [], args


@pytest.mark.redis
async def test_members_on_the_other_node_see_joins_and_leaves(
    cluster: Cluster, connect: Connect
) -> None:
    a_node = cluster.start_node("--presence-events", "/")
    b_node = cluster.start_node("--presence-events", "/")
    wait_peers([a_node, b_node])
    room = uid("chat")
    a = await joined(a_node, connect, "ann", [room])
    # Connect on B: A (on the other node) is told.
    b = await joined(b_node, connect, "bob", [room])
    b_data = {"room": room, "user": "bob", "socket": b.sid()}
    assert await a.wait_event("presence:join") == [b_data]
    # Leave and join through A's node for a socket on B: only B's node announces it.
    await ok(a_node, "/v1/leave", {"sockets": [b.sid()], "room": room})
    assert await a.wait_event("presence:leave") == [b_data]
    await ok(a_node, "/v1/join", {"sockets": [b.sid()], "room": room})
    assert await a.wait_event("presence:join", count=2) == [b_data]
    # A disconnects from its node: B hears of it.
    a_sid = a.sid()
    await a.close()
    assert await b.wait_event("presence:leave") == [{"room": room, "user": "ann", "socket": a_sid}]
    await sentinel(b_node, b)
    # Each change announced once, by the node holding the socket.
    assert [ev for ev, _ in presence(b)] == ["presence:leave"]
