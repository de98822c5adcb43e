"""Socket ids and room names are kept apart (issue #9, item 8).

Every socket is addressable by its id in ``rooms`` and ``except``. A room *named* like
another socket's id must never exist: the old hub resolved such a name to the named
room first, so a client that got itself into a room named after a victim's id received
the victim's direct emits (and the victim did not).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import socketio
from sioclient import Recorder, uid

from conftest import Gateway, spawn_gateway


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = spawn_gateway(log_dir=tmp_path_factory.mktemp("gw"))
    yield g
    g.stop()


@pytest.fixture
async def recorders() -> AsyncIterator[list[Recorder]]:
    made: list[Recorder] = []
    yield made
    for recorder in made:
        await recorder.close()


async def connect(gw: Gateway, made: list[Recorder], user: str, rooms: list[str]) -> Recorder:
    recorder = Recorder(
        gw.url, auth={"token": gw.token(user, rooms=rooms)}, transports=["websocket"]
    )
    made.append(recorder)
    return await recorder.connect()


def emit(gw: Gateway, event: str, **body: object) -> None:
    r = gw.api("POST", "/v1/emit", json={"event": event, **body})
    assert r.status_code == 200, r.text


async def test_a_token_room_named_like_a_socket_id_is_refused(
    gw: Gateway, recorders: list[Recorder]
) -> None:
    victim = await connect(gw, recorders, uid("victim"), [])
    victim_id = victim.sid()
    # The attacker's token asks for a room named exactly like the victim's socket id:
    # the handshake is refused, saying why.
    with pytest.raises(socketio.exceptions.ConnectionError):
        await connect(gw, recorders, uid("attacker"), [victim_id, "lobby"])
    refused = recorders[-1].connect_errors
    assert refused and "shaped like a socket id" in refused[0]["message"]

    attacker = await connect(gw, recorders, uid("attacker"), ["lobby"])
    secret, sentinel = uid("secret"), uid("sentinel")
    emit(gw, secret, data="for the victim only", rooms=[victim_id])
    emit(gw, sentinel, rooms=["lobby", victim_id])
    assert (await victim.wait_event(secret)) == ["for the victim only"]
    await attacker.wait_event(sentinel)
    # Emits arrive in order: the sentinel came after the secret, so it never will.
    assert attacker.received(secret) == []

    # The socket-id-shaped name is no room: the listings do not show it, and the
    # "sockets in" listing of the victim's id is the victim alone.
    rooms = gw.api("GET", "/v1/rooms").json()["rooms"]
    assert victim_id not in [r["name"] for r in rooms]
    listed = gw.api("GET", f"/v1/rooms/{victim_id}/sockets").json()["sockets"]
    assert [s["id"] for s in listed] == [victim_id]

    # except: [victim_id] leaves out the victim only, not the attacker.
    everyone = uid("everyone")
    emit(gw, everyone, rooms=["lobby"], **{"except": [victim_id]})
    await attacker.wait_event(everyone)


async def test_joining_a_room_named_like_a_socket_id_is_refused(
    gw: Gateway, recorders: list[Recorder]
) -> None:
    victim = await connect(gw, recorders, uid("victim"), [])
    attacker = await connect(gw, recorders, uid("attacker"), [])
    victim_id, attacker_id = victim.sid(), attacker.sid()
    for path in ("/v1/join", "/v1/leave"):
        r = gw.api("POST", path, json={"room": victim_id, "sockets": [attacker_id]})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "invalid_field"
        assert "shape of a socket id" in error["message"]

    secret, sentinel = uid("secret"), uid("sentinel")
    emit(gw, secret, rooms=[victim_id])
    emit(gw, sentinel, rooms=[attacker_id])
    await victim.wait_event(secret)
    await attacker.wait_event(sentinel)
    assert attacker.received(secret) == []


async def test_room_names_of_other_shapes_still_work(
    gw: Gateway, recorders: list[Recorder]
) -> None:
    member = await connect(gw, recorders, uid("member"), [])
    # 19 and 21 characters, and 20 with a character outside the id alphabet.
    names = ["a" * 19, "b" * 21, "c" * 19 + "."]
    for name in names:
        r = gw.api("POST", "/v1/join", json={"room": name, "sockets": [member.sid()]})
        assert r.status_code == 200, r.text
    event = uid("named")
    emit(gw, event, rooms=names)
    await member.wait_event(event)
    rooms = gw.api("GET", "/v1/rooms").json()["rooms"]
    assert set(names) <= {room["name"] for room in rooms}
