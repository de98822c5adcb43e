"""The recovery log the workers' primary keeps (siogate.broker.relay_log): offsets,
trimming, the session records' ownership rules, and a worker's client through the same
JSON calls the relay carries."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from test_broker import Node

from siogate.broker import BrokerUnavailable, EmitCommand, SocketsCommand, wire
from siogate.broker.local import LocalRelay, logged, split_logged
from siogate.broker.recovering_local import RecoveringLocalBroker
from siogate.broker.relay_log import RelayLog, RelayLogClient
from siogate.broker.streams import Gap, Overflow, Session, parse_offset
from siogate.types import Namespace, Room, Sid

NS = Namespace("/")
SID = Sid("node0001-abcdefghijklmnop")
PID = "p" * 32


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def entry(event: str, *rooms: str) -> bytes:
    return wire.encode_commands("w1", [EmitCommand(NS, event, [event], tuple(map(Room, rooms)))])


def join(room: str) -> bytes:
    return wire.encode_commands("w1", [SocketsCommand("join", NS, (SID,), (), Room(room))])


def test_offsets_increase_within_a_millisecond_and_when_the_clock_goes_back() -> None:
    clock = Clock()
    log = RelayLog(window=10, clock=clock)
    first = log.append([entry("a"), entry("b")])
    clock.now -= 5
    later = log.append([entry("c")])
    clock.now += 10
    last = log.append([entry("d")])
    points = [parse_offset(o) for o in first + later + last]
    assert points == [(1_000_000, 0), (1_000_000, 1), (1_000_000, 2), (1_005_000, 0)]
    assert log.last_offset() == last[0]


def test_entries_after_an_offset_and_what_is_not_one() -> None:
    log = RelayLog(window=10, clock=Clock())
    offsets = log.append([entry("a"), entry("b"), entry("c")])
    assert [o for o, _ in log.entries_after(offsets[0])] == offsets[1:]
    assert log.entries_after(offsets[2]) == []
    assert [e for _, e in log.entries_after("0-0")] == [entry("a"), entry("b"), entry("c")]
    for bad in ("nope", "99999999999999-0"):
        with pytest.raises(Gap):
            log.entries_after(bad)


def test_trimmed_by_count_and_age_then_older_offsets_are_a_gap() -> None:
    clock = Clock()
    log = RelayLog(window=10, max_log=3, clock=clock)
    offsets = log.append([entry(str(i)) for i in range(5)])
    assert log.length == 3
    with pytest.raises(Gap):
        log.entries_after(offsets[0])
    assert [o for o, _ in log.entries_after(offsets[1])] == offsets[2:]
    assert len(log.entries_after("0-0", check=False)) == 3
    clock.now += 11
    newest = log.append([entry("new")])
    assert log.length == 1
    with pytest.raises(Gap):
        log.entries_after(offsets[-2])
    # Nothing after the newest trimmed entry is gone.
    assert [o for o, _ in log.entries_after(offsets[-1])] == newest
    assert log.entries_after(newest[0]) == []


def test_more_than_scan_limit_entries_is_an_overflow() -> None:
    log = RelayLog(window=10, scan_limit=2, clock=Clock())
    offsets = log.append([entry(str(i)) for i in range(4)])
    with pytest.raises(Overflow):
        log.entries_after("0-0")
    assert len(log.entries_after(offsets[1])) == 2


def test_a_long_log_is_compacted_and_keeps_its_order() -> None:
    log = RelayLog(window=10, max_log=100, clock=Clock())
    offsets: list[str] = []
    for i in range(10_000):
        offsets += log.append([entry(str(i))])
    assert log.length == 100
    kept = log.entries_after(offsets[-101])
    assert [o for o, _ in kept] == offsets[-100:]


def test_records_are_written_only_by_their_owner_and_claimed_whatever_their_state() -> None:
    clock = Clock()
    log = RelayLog(window=10, live_ttl=60, clock=clock)
    fields = Session(SID, NS, "u1", {Room("a")}, "1-0", since="1-0").to_fields()
    assert log.save(PID, "w1", fields)
    assert not log.save(PID, "w2", fields)
    assert not log.park(PID, "w2", "2-0", "")
    assert log.park(PID, "w1", "2-0", "1-5")
    assert log.claim(PID, "/other", json.dumps("u1"), "w2") is None
    assert log.claim(PID, "/", json.dumps("u2"), "w2") is None
    claimed = log.claim(PID, "/", json.dumps("u1"), "w2")
    assert claimed is not None
    previous, state, gen, raw = claimed
    assert (previous, state, gen) == ("w1", "parked", 1)
    assert raw["parked_at"] == "2-0" and raw["written"] == "1-5"
    # The old owner can no longer park, change or end it.
    assert not log.park(PID, "w1", "3-0", "")
    assert not log.save(PID, "w1", fields)
    assert not log.end(PID, "w1")
    assert log.claim(PID, "/", json.dumps("u1"), "w3") is not None
    assert log.end(PID, "w3")
    assert log.claim(PID, "/", json.dumps("u1"), "w3") is None


def test_a_parked_record_lasts_the_window_and_a_live_one_its_ttl() -> None:
    clock = Clock()
    log = RelayLog(window=10, live_ttl=60, clock=clock)
    fields = Session(SID, NS, None, set(), "1-0").to_fields()
    log.save("a" * 32, "w1", fields)
    log.save("b" * 32, "w1", fields)
    log.park("a" * 32, "w1", "1-0", "")
    clock.now += 11
    assert log.claim("a" * 32, "/", "null", "w2") is None
    assert log.record_count == 1
    clock.now += 50
    assert log.claim("b" * 32, "/", "null", "w2") is None
    assert log.record_count == 0


def test_room_history_newest_last_with_since_and_limit() -> None:
    clock = Clock()
    log = RelayLog(window=10, max_log=10, clock=clock)
    offsets = log.append([entry("m0", "chat"), entry("x", "other"), join("chat")])
    offsets += log.append([entry("m1", "chat"), entry("m2", "chat")])
    found = log.room_history("/", "chat", None, 10)
    assert found is not None
    assert [o for o, _ in found[0]] == [offsets[0], offsets[3], offsets[4]] and found[1]
    last = log.room_history("/", "chat", None, 2)
    assert last is not None and [o for o, _ in last[0]] == offsets[3:] and not last[1]
    page = log.room_history("/", "chat", offsets[0], 1)
    assert page is not None and [o for o, _ in page[0]] == [offsets[3]] and not page[1]
    assert log.room_history("/", "chat", "nope", 1) is None
    assert log.room_history("/other-ns", "chat", None, 10) == ([], True)


def test_a_logged_frame_round_trips_and_a_malformed_one_is_refused() -> None:
    entries, message = [entry("a"), entry("b")], b'{"v":1,"commands":[]}'
    assert split_logged(logged(entries, message)) == (entries, message)
    for bad in (
        b"",
        logged([], message),
        logged(entries, b"not json"),
        logged(entries, message)[:9],
    ):
        with pytest.raises(Exception) as caught:
            split_logged(bad)
        assert isinstance(caught.value, ValueError | IndexError) or "unpack" in str(caught.value)


async def test_a_workers_client_recovers_a_session_through_the_calls() -> None:
    log = RelayLog(window=10, clock=Clock())

    async def call(request: bytes) -> bytes:
        body = json.loads(request)
        assert body["op"] == "rlog"
        return json.dumps(log.serve(body)).encode()

    first = RelayLogClient(call, node="w1", window=10)
    second = RelayLogClient(call, node="w2", window=10)
    start = await first.last_offset("/")
    assert await first.save(PID, Session(SID, NS, "u1", {Room("a")}, start, since=start))
    seen = log.append([entry("seen", "a")])[0]
    assert await first.park(PID, seen, seen)
    log.append([entry("missed", "a"), join("b"), entry("to-b", "b"), entry("not-mine", "c")])
    got = await second.recover(PID, seen, "/", "u1")
    assert got is not None
    claimed, replay = got
    assert claimed.previous_node == "w1" and claimed.previous_state == "parked"
    assert [event[1] for event in replay.events] == ["missed", "to-b"]
    assert replay.rooms == {Room("a"), Room("b")}
    # The first worker lost it: its writes are refused now.
    assert not await first.park(PID)
    # A forged pid, or an offset not handed out, recovers nothing.
    assert await second.recover("f" * 32, seen, "/", "u1") is None
    assert await second.recover(PID, "99999999999999-0", "/", "u1") is None
    history = await second.room_history("/", "b", None, 10)
    assert history is not None and [c.event for _, c in history[0]] == ["to-b"]


async def test_a_client_whose_primary_does_not_answer_raises_broker_unavailable() -> None:
    async def call(request: bytes) -> bytes:
        raise BrokerUnavailable("the workers' relay is gone")

    client = RelayLogClient(call, node="w1", window=10)
    with pytest.raises(BrokerUnavailable):
        await client.last_offset("/")


async def started(relay: LocalRelay, count: int) -> list[tuple[RecoveringLocalBroker, Node]]:
    out = []
    for name in "abc"[:count]:
        broker = RecoveringLocalBroker(
            relay.path, advertise_url=f"http://{name}:1", window=10, max_missed=100
        )
        node = Node(name)
        await broker.start(node.apply, node.answer)
        out.append((broker, node))
    for broker, _ in out:
        async with asyncio.timeout(5):
            while broker.stats.peers != count - 1:
                await asyncio.sleep(0.01)
    return out


async def test_every_worker_applies_every_logged_command_in_the_logs_order(
    tmp_path: Path,
) -> None:
    log = RelayLog(window=10)
    relay = LocalRelay(str(tmp_path / "relay.sock"), log=log)
    await relay.start()
    nodes = await started(relay, 3)
    try:
        sends = [
            (broker, [EmitCommand(NS, node.name, [i])])
            for i in range(100)
            for broker, node in nodes
        ]
        answers = await asyncio.gather(*(b.publish_logged(c) for b, c in sends))
        # Each publisher got its command's offset, applied on its own worker by then.
        assert all(len(a) == 1 and parse_offset(a[0]) for a in answers)
        orders = []
        for _, node in nodes:
            batches = await node.wait_batches(300)
            orders.append([(c.offset, c.event, c.args) for batch in batches for c in batch])
        assert orders[0] == orders[1] == orders[2]
        offsets = [parse_offset(o) for o, _, _ in orders[0]]
        assert offsets == sorted(offsets) and len(set(offsets)) == 300
        assert sorted((a[0] for a in answers), key=parse_offset) == [o for o, _, _ in orders[0]]
        assert log.length == 300
    finally:
        for broker, _ in nodes:
            await broker.close()
        await relay.close()


async def test_a_publish_the_relay_did_not_log_is_refused_not_left_hanging(
    tmp_path: Path,
) -> None:
    relay = LocalRelay(str(tmp_path / "relay.sock"))  # no log
    await relay.start()
    [(broker, node)] = await started(relay, 1)
    try:
        async with asyncio.timeout(5):
            with pytest.raises(BrokerUnavailable):
                await broker.publish_logged([EmitCommand(NS, "e", [])])
        assert node.applied == [] and broker.stats.publish_failures == 1
    finally:
        await broker.close()
        await relay.close()


def test_room_history_finds_a_room_written_in_either_json_form() -> None:
    # A lone surrogate elsewhere in the message makes the encoder escape the whole of
    # it to ASCII, the room name included: history must still find it.
    log = RelayLog(window=10, clock=Clock())
    plain = wire.encode_commands("w1", [EmitCommand(NS, "a", ["ok"], (Room("café"),))])
    escaped = wire.encode_commands("w1", [EmitCommand(NS, "b", ["\ud800"], (Room("café"),))])
    assert "café".encode() in plain and b"caf\\u00e9" in escaped
    offsets = log.append([plain, entry("x", "cafe"), escaped])
    found = log.room_history("/", "café", None, 10)
    assert found is not None and [o for o, _ in found[0]] == [offsets[0], offsets[2]]
    assert set(wire.string_forms("café")) == {'"café"'.encode(), b'"caf\\u00e9"'}
