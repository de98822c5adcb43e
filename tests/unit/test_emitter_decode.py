"""The emitter's messages decoded without Redis: what is applied, refused, and counted.

The bytes here are built the way @socket.io/redis-emitter 5.x builds them (MessagePack
``[uid, packet, opts]`` broadcasts, JSON requests); tests/integration/test_emitter_compat.py
checks the same against the real npm package.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import time
from typing import Any

import msgpack
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from siogate.broker import EmitCommand, SocketsCommand, emitter_compat, wire
from siogate.broker.emitter_compat import (
    EmitterBridge,
    Malformed,
    ServerEvent,
    Unsupported,
    decode,
    pattern,
    value,
)
from siogate.broker.redis import _Backoff
from siogate.protocol.socketio import MAX_DEPTH
from siogate.types import Namespace, Room

KEY = "socket.io"


def broadcast(
    event: str = "hi",
    *args: Any,
    nsp: str | None = "/",
    rooms: list[Any] | None = None,
    exclude: list[Any] | None = None,
    flags: dict[str, Any] | None = None,
    uid: Any = "emitter",
    ptype: Any = 2,
) -> bytes:
    packet: dict[str, Any] = {"type": ptype, "data": [event, *args]}
    if nsp is not None:
        packet["nsp"] = nsp
    opts = {"rooms": rooms or [], "flags": {} if flags is None else flags, "except": exclude or []}
    data: bytes = msgpack.packb([uid, packet, opts])
    return data


def request(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def test_broadcast_to_rooms_except_in_a_namespace() -> None:
    data = broadcast("news", {"a": 1}, b"\x00\xff", nsp="/ns", rooms=["r1", "r2"], exclude=["x"])
    assert decode(KEY, "socket.io#/ns#", data) == [
        EmitCommand(
            Namespace("/ns"), "news", [{"a": 1}, b"\x00\xff"], (Room("r1"), Room("r2")), ("x",)
        )
    ]


def test_one_room_is_named_by_the_channel_too() -> None:
    data = broadcast("e", rooms=["room"])
    assert decode(KEY, "socket.io#/#room#", data)[0].rooms == ("room",)  # type: ignore[union-attr]
    assert decode(KEY, "socket.io#/#", data)[0].rooms == ("room",)  # type: ignore[union-attr]
    with pytest.raises(Malformed, match="names a room"):
        decode(KEY, "socket.io#/#other#", data)
    with pytest.raises(Malformed, match="names a room"):
        decode(KEY, "socket.io#/#a#", broadcast("e", rooms=["a", "b"]))


def test_missing_nsp_is_the_main_namespace_and_numeric_rooms_are_strings() -> None:
    [command] = decode(KEY, "socket.io#/#42#", broadcast("e", nsp=None, rooms=[42]))
    assert isinstance(command, EmitCommand)
    assert command.namespace == "/" and command.rooms == ("42",)


def test_flags_are_accepted_and_change_nothing() -> None:
    [command] = decode(KEY, "socket.io#/#", broadcast("e", flags={"volatile": True}))
    assert command == EmitCommand(Namespace("/"), "e", [])


@pytest.mark.parametrize(
    ("channel", "data", "match"),
    [
        ("socket.io#/#", b"\xc1", "not MessagePack"),
        ("socket.io#/#", msgpack.packb(["emitter", {}]), r"\[uid, packet, opts\]"),
        ("socket.io#/#", msgpack.packb([1, {"type": 2, "data": ["e"]}, {}]), "uid"),
        ("socket.io#/#", msgpack.packb(["e", [], {}]), "packet must be an object"),
        ("socket.io#/#", msgpack.packb(["e", {"type": 2, "data": ["e"]}, []]), "opts"),
        ("socket.io#/#", broadcast(ptype=9), "unknown packet type"),
        ("socket.io#/#", broadcast(ptype=True), "unknown packet type"),
        ("socket.io#/#", broadcast(ptype=2.0), "unknown packet type"),
        ("socket.io#/#", broadcast(nsp="ns"), "namespace"),
        ("socket.io#/#", broadcast(nsp="/" + "n" * 300), "namespace"),
        ("socket.io#/#", msgpack.packb(["e", {"type": 2, "data": []}, {}]), "event, ...args"),
        ("socket.io#/#", msgpack.packb(["e", {"type": 2, "data": [1]}, {}]), "event name"),
        ("socket.io#/#", broadcast(""), "event name"),
        ("socket.io#/#", broadcast("disconnect"), "reserved"),
        ("socket.io#/#", broadcast(rooms=[True]), "room"),
        ("socket.io#/#", broadcast(rooms=[None]), "room"),
        ("socket.io#/#", broadcast(rooms=["r" * 257]), "room"),
        ("socket.io#/#", broadcast(rooms=["r"] * 1001), "at most 1000"),
        ("socket.io#/#", broadcast(flags=[]), "flags"),  # type: ignore[arg-type]
        ("socket.io#/#", broadcast() + b"\x00", "not MessagePack"),
        ("socket.io#/ns#", broadcast(nsp="/"), "namespace"),
        ("socket.io#/#", msgpack.packb(["e", {"type": 2, "data": ["e", {1: 2}]}, {}]), "key"),
        ("socket.io#/#", broadcast("e", msgpack.ExtType(5, b"x")), "extension type 5"),
    ],
)
def test_malformed_broadcasts(channel: str, data: bytes, match: str) -> None:
    with pytest.raises(Malformed, match=match):
        decode(KEY, channel, data)


def test_broadcasts_of_other_packets_are_unsupported() -> None:
    with pytest.raises(Unsupported, match="type 3"):
        decode(KEY, "socket.io#/#", broadcast(ptype=3))
    data = msgpack.packb(["e", {"type": 2, "data": ["e"], "nsp": "/", "id": 4}, {}])
    with pytest.raises(Unsupported, match="ack"):
        decode(KEY, "socket.io#/#", data)


def test_values_as_socket_io_would_send_them() -> None:
    assert value([float("nan"), float("inf"), 1.5, None, True, "é", b"\x01"]) == [
        None,
        None,
        1.5,
        None,
        True,
        "é",
        b"\x01",
    ]
    # A JavaScript Date: a MessagePack timestamp, sent as Date.prototype.toJSON() would.
    when = datetime.datetime(2024, 2, 29, 12, 34, 56, 789000, tzinfo=datetime.UTC)
    data = msgpack.packb(["e", {"type": 2, "data": ["e", when], "nsp": "/"}, {}], datetime=True)
    [command] = decode(KEY, "socket.io#/#", data)
    assert command.args == ["2024-02-29T12:34:56.789Z"]  # type: ignore[union-attr]


def test_nesting_is_bounded() -> None:
    deep: Any = "leaf"
    for _ in range(MAX_DEPTH - 1):
        deep = [deep]
    # As a packet's data (depth 1, as the Socket.IO decoder counts) holding it: fine.
    assert value([deep]) is not None
    with pytest.raises(Malformed, match="deeper"):
        value([[deep]])
    # Deeper than msgpack's own stack: refused by the decoder, not a crash.
    with pytest.raises(Malformed):
        decode(KEY, "socket.io#/#", b"\x93\xa1e\x82\xa4type\x02\xa4data" + b"\x91" * 5000)


def test_requests_become_sockets_commands() -> None:
    join = request(type=2, opts={"rooms": ["a"], "except": ["b"]}, rooms=["x", "y"])
    assert decode(KEY, "socket.io-request#/ns#", join) == [
        SocketsCommand("join", Namespace("/ns"), rooms=("a",), room=Room("x"), exclude=("b",)),
        SocketsCommand("join", Namespace("/ns"), rooms=("a",), room=Room("y"), exclude=("b",)),
    ]
    leave = request(type=3, opts={"rooms": [], "except": []}, rooms=["x"])
    assert decode(KEY, "socket.io-request#/#", leave) == [
        SocketsCommand("leave", Namespace("/"), room=Room("x"))
    ]
    bye = request(type=4, opts={"rooms": ["a"], "except": []}, close=True)
    assert decode(KEY, "socket.io-request#/#", bye) == [
        SocketsCommand("disconnect", Namespace("/"), rooms=("a",), close=True)
    ]
    # The adapter may frame requests in MessagePack instead of JSON.
    packed = msgpack.packb({"type": 4, "opts": {"rooms": [], "except": ["z"]}, "close": False})
    assert decode(KEY, "socket.io-request#/#", packed) == [
        SocketsCommand("disconnect", Namespace("/"), exclude=("z",))
    ]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"{oops", "not JSON"),
        (b'{"type": NaN}', "not JSON"),
        (msgpack.packb([2]), "object"),
        (request(type="2"), "integer"),
        (request(type=True), "integer"),
        (request(type=2, opts=[], rooms=["x"]), "opts"),
        (request(type=2, opts={"rooms": "a"}, rooms=["x"]), "rooms"),
        (request(type=2, opts={}, rooms="x"), "rooms"),
        (request(type=4, opts={}, close="yes"), "close"),
        (b"\xc1", "not MessagePack"),
    ],
)
def test_malformed_requests(data: bytes, match: str) -> None:
    with pytest.raises(Malformed, match=match):
        decode(KEY, "socket.io-request#/#", data)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"type": 6, "requestId": "r", "data": ["ping"]}, "acknowledgement"),
        ({"type": 0, "requestId": "r", "rooms": []}, "SOCKETS"),
        ({"type": 1, "requestId": "r"}, "allRooms"),
        ({"type": 5, "requestId": "r", "opts": {}}, "fetchSockets"),
        ({"type": 7, "requestId": "r", "packet": {}, "opts": {}}, "ack"),
        ({"type": 2, "requestId": "r", "sid": "s", "room": "x"}, "one socket id"),
        ({"type": 99}, "request type 99"),
    ],
)
def test_unsupported_requests(fields: dict[str, Any], match: str) -> None:
    with pytest.raises(Unsupported, match=match):
        decode(KEY, "socket.io-request#/#", request(**fields))


def test_server_side_emit() -> None:
    data = request(uid="emitter", type=6, data=["cache:flush", {"k": 1}, None])
    assert decode(KEY, "socket.io-request#/ns#", data) == ServerEvent(
        Namespace("/ns"), "cache:flush", [{"k": 1}, None]
    )
    for bad in ([], [1], None, "x"):
        with pytest.raises(Malformed, match="serverSideEmit|event name"):
            decode(KEY, "socket.io-request#/#", request(type=6, data=bad))


def test_request_channel_names_the_namespace() -> None:
    with pytest.raises(Malformed, match="namespace"):
        decode(KEY, "socket.io-request#ns#", request(type=4, opts={}))


def test_other_keys() -> None:
    data = broadcast("e")
    assert decode("my*app", "my*app#/#", data)[0].event == "e"  # type: ignore[union-attr]
    with pytest.raises(Malformed):
        decode("my*app", "socket.io#/#", data)
    assert pattern("my*app?[x]\\") + "*" == "my\\*app\\?\\[x\\]\\\\*"


def test_sockets_commands_keep_except_and_close_across_nodes() -> None:
    command = SocketsCommand(
        "disconnect", Namespace("/"), rooms=(Room("a"),), exclude=(Room("b"),), close=True
    )
    message = wire.decode(wire.encode_commands("n1", [command]))
    assert wire.decode_commands(message) == [command]
    plain = SocketsCommand("join", Namespace("/"), rooms=(Room("a"),), room=Room("x"))
    text = wire.encode_commands("n1", [plain])
    assert b"except" not in text and b"close" not in text
    assert wire.decode_commands(wire.decode(text)) == [plain]


def test_the_bridge_counts_and_logs_without_raising(caplog: pytest.LogCaptureFixture) -> None:
    applied: list[list[Any]] = []
    bridge = EmitterBridge("redis://127.0.0.1:1/0", max_message=1024)
    bridge._handler = lambda commands: applied.append(list(commands))
    with caplog.at_level(logging.WARNING, "siogate.emitter"):
        bridge.receive(b"socket.io#/#", broadcast("ok", 1))
        bridge.receive(b"socket.io#/#", broadcast("big", "x" * 2000))
        bridge.receive(b"socket.io#/#", b"junk")
        bridge.receive(b"\xff#/#", broadcast("ok"))
        bridge.receive(b"socket.io-request#/#", request(type=6, data=["e"]))
    assert [c[0].event for c in applied] == ["ok"]
    assert (bridge.stats.applied, bridge.stats.invalid, bridge.stats.unsupported) == (1, 3, 1)
    assert "over the limit of 1024" in caplog.text
    assert "ignored serverSideEmit('e') in /: no handler has on_server_event" in caplog.text

    def broken(commands: Any) -> None:
        raise RuntimeError("boom")

    bridge._handler = broken
    bridge.receive(b"socket.io#/#", broadcast("ok"))  # logged, not raised
    assert bridge.stats.applied == 1


class ScriptedPubSub:
    """Stands in for redis-py's PubSub: replies to get_message from a script."""

    def __init__(self, script: list[dict[str, Any] | None]) -> None:
        self.script = script
        self.pings = 0

    async def psubscribe(self, *patterns: str) -> None:
        self.patterns = patterns

    async def ping(self) -> None:
        self.pings += 1

    async def get_message(self, timeout: float) -> dict[str, Any] | None:
        if not self.script:
            raise RedisConnectionError("end of script")
        return self.script.pop(0)


async def test_a_burst_behind_a_pong_does_not_drop_the_subscription(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A PING sent just before a burst is answered after it; working through the burst
    may take longer than the PING deadline, and that must not count as a dead
    connection (a reconnect would lose the rest of the burst)."""
    monkeypatch.setattr(emitter_compat, "PING_INTERVAL", 0.0)
    monkeypatch.setattr(emitter_compat, "SOCKET_TIMEOUT", 0.05)
    burst = [
        {"type": "pmessage", "channel": b"socket.io#/#", "data": broadcast("m", i)}
        for i in range(5)
    ]
    pubsub = ScriptedPubSub(
        [{"type": "psubscribe"}, {"type": "psubscribe"}, None, *burst, {"type": "pong"}]
    )
    applied: list[Any] = []

    def slow(commands: Any) -> None:
        time.sleep(0.03)  # 5 x 30 ms: past the 50 ms deadline before the PONG is read
        applied.append(commands[0].args[0])

    bridge = EmitterBridge("redis://127.0.0.1:1/0")
    bridge._handler = slow
    with pytest.raises(RedisConnectionError, match="end of script"):
        await bridge._listen(pubsub, _Backoff())  # type: ignore[arg-type]
    assert pubsub.pings == 1
    assert applied == [0, 1, 2, 3, 4]
    assert pubsub.patterns == ("socket.io#*", "socket.io-request#*")
    assert bridge.stats.connected


async def test_a_quiet_subscription_without_pong_is_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(emitter_compat, "PING_INTERVAL", 0.0)
    monkeypatch.setattr(emitter_compat, "SOCKET_TIMEOUT", 0.05)

    class Silent(ScriptedPubSub):
        async def get_message(self, timeout: float) -> dict[str, Any] | None:
            await asyncio.sleep(0.02)
            return None

    pubsub = Silent([])
    bridge = EmitterBridge("redis://127.0.0.1:1/0")
    with pytest.raises(RedisConnectionError, match="no answer to PING"):
        await asyncio.wait_for(bridge._listen(pubsub, _Backoff()), 5)  # type: ignore[arg-type]


def test_the_bridge_hands_server_events_to_the_node() -> None:
    bridge = EmitterBridge("redis://127.0.0.1:1/0")
    got: list[tuple[str, str, list[Any]]] = []

    def take(namespace: str, event: str, args: list[Any]) -> bool:
        got.append((namespace, event, args))
        return True

    bridge._handler = lambda commands: None
    bridge._server_event = take
    bridge.receive(b"socket.io-request#/#", request(type=6, data=["e", 1]))
    assert got == [("/", "e", [1])]
    assert (bridge.stats.applied, bridge.stats.unsupported) == (1, 0)
    bridge._server_event = lambda namespace, event, args: False  # no on_server_event
    bridge.receive(b"socket.io-request#/#", request(type=6, data=["e", 1]))
    assert (bridge.stats.applied, bridge.stats.unsupported) == (1, 1)
