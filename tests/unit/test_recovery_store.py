"""The bounds of siogate.recovery and siogate.history, without a network."""

from __future__ import annotations

import asyncio
from typing import Any

from siogate.broker import EmitCommand
from siogate.history import HistoryOptions, Offsets, RoomHistory
from siogate.hub import Outgoing, Socket
from siogate.protocol.session import Session
from siogate.recovery import Ended, Parked, RecoveryOptions, RecoveryStore
from siogate.types import Namespace, Room, Sid, UserId

NS = Namespace("/")


class Link:
    def __init__(self) -> None:
        self.session = Session("s")

    def flush(self) -> None:
        pass

    def write_broadcast(self, outgoing: Outgoing) -> None:
        pass

    def close(self, reason: str) -> None:
        pass


def emit(*rooms: str, exclude: tuple[str, ...] = ()) -> EmitCommand:
    return EmitCommand(NS, "e", [1], tuple(Room(r) for r in rooms), tuple(Room(r) for r in exclude))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def store(**options: Any) -> tuple[RecoveryStore, list[tuple[Sid, str, Ended]], Clock]:
    ended: list[tuple[Sid, str, Ended]] = []
    clock = Clock()
    s = RecoveryStore(
        RecoveryOptions(**{"window": 60.0, **options}),
        lambda socket, reason, why: ended.append((socket.id, reason, why)),
        Offsets(),
        clock,
    )
    return s, ended, clock


def socket(sid: str = "A" * 20, *rooms: str) -> Socket:
    s = Socket(Sid(sid), NS, UserId("u"), Link())
    s.rooms.update(Room(r) for r in rooms)
    return s


def send(s: RecoveryStore, command: EmitCommand, *to: Socket) -> str:
    seq, offset = s.offsets.next()
    out = Outgoing([offset])
    for target in to:
        target.link.write_broadcast(out)
    s.log(seq, command, out)
    return offset


async def test_a_socket_over_its_missed_cap_ends_with_overflow() -> None:
    s, ended, _ = store(max_missed=3)
    a = socket("A" * 20, "r")
    pid = s.connected(a)
    assert s.park(a, "transport close")
    for _ in range(3):
        send(s, emit("r"), a)
    assert ended == [] and s.kept == 3
    send(s, emit("r"), a)
    assert ended == [(a.id, "transport close", "overflow")]
    assert s.kept == 0 and s.claim({"pid": pid}, NS, "u") is None


async def test_the_global_cap_trims_the_log_first_then_ends_sockets() -> None:
    s, ended, _ = store(max_messages=5)
    a = socket("A" * 20, "r")
    s.connected(a)
    for _ in range(10):
        send(s, emit("other"))
    assert s.logged_count == 5
    s.park(a, "ping timeout")
    for _ in range(5):
        send(s, emit("r"), a)
    assert s.logged_count + s.kept <= 5 + 1  # the entry being logged
    send(s, emit("r"), a)
    assert ended and ended[0][2] == "overflow"


async def test_a_trimmed_log_refuses_a_claim_that_needs_it() -> None:
    s, _, clock = store(window=10.0)
    a = socket("A" * 20, "r")
    pid = s.connected(a)
    seen = send(s, emit("r"), a)
    send(s, emit("r"), a)  # written to the dead transport: the tail
    clock.now += 11  # past the window: the next log() drops both
    send(s, emit("x"))
    s.park(a, "transport close")
    assert s.claim({"pid": pid, "offset": seen}, NS, "u") is None


async def test_a_claim_replays_the_tail_then_the_kept_events() -> None:
    s, _, _ = store()
    a, b = socket("A" * 20, "r"), socket("B" * 20, "r")
    pid = s.connected(a)
    s.connected(b)
    seen = send(s, emit("r"), a, b)
    tail = [
        send(s, emit("r"), a, b),
        send(s, emit(a.id)),
        send(s, emit()),  # broadcast
    ]
    send(s, emit("r", exclude=(a.id,)), b)  # not for a
    send(s, emit(b.id), b)  # not for a
    assert s.park(a, "transport close")
    later = send(s, emit("r"), a, b)
    parked = s.claim({"pid": pid, "offset": seen}, NS, "u")
    assert isinstance(parked, Parked)
    assert [messages[0] for messages in parked.replay] == [*tail, later]
    # Claimed once: the pid is live again, not parked.
    assert s.claim({"pid": pid, "offset": seen}, NS, "u") is None


async def test_park_only_for_losses() -> None:
    s, _, _ = store()
    a = socket()
    s.connected(a)
    assert not s.park(a, "client namespace disconnect")
    assert not s.park(a, "server shutting down")
    assert s.park(a, "token expired")
    assert s.parked_count == 1
    s.end_all("server shutting down")
    assert s.parked_count == 0
    await asyncio.sleep(0)


def test_history_caps_per_room_globally_and_by_age() -> None:
    h = RoomHistory(HistoryOptions(size=3, ttl=10.0, max_messages=4))
    for seq in range(1, 6):
        h.record(seq, 0, 0.0, emit("a"))
    got, complete = h.query(NS, Room("a"), None, 100, 0.0)
    assert [m.seq for m in got] == [3, 4, 5] and not complete
    for seq in range(6, 9):
        h.record(seq, 0, 1.0, emit("b"))
    # The global cap dropped a's oldest two (3, 4) to make room for b's three.
    assert len(h) == 4
    assert h.query(NS, Room("a"), 4, 100, 1.0) == (h.query(NS, Room("a"), None, 100, 1.0)[0], True)
    got, complete = h.query(NS, Room("a"), 3, 100, 1.0)
    assert [m.seq for m in got] == [5] and complete is False
    got, complete = h.query(NS, Room("b"), None, 100, 20.0)  # all too old
    assert got == [] and complete is False
    # Socket ids and broadcasts are not room history.
    h.record(9, 0, 20.0, emit("C" * 20))
    h.record(10, 0, 20.0, emit())
    assert h.query(NS, Room("C" * 20), None, 100, 20.0) == ([], True)


def test_offsets_of_another_run_or_the_future_are_refused() -> None:
    o, other = Offsets(), Offsets()
    _, first = o.next()
    assert o.parse(first) == 1
    assert o.parse(other.next()[1]) is None
    assert o.parse(f"{o.run}-2") is None  # not handed out yet
    assert o.parse(f"{o.run}-x") is None and o.parse(1) is None and o.parse(None) is None


async def test_a_logged_emit_replays_with_its_attachments() -> None:
    # The log keeps a lone text packet as is and a packet with attachments whole.
    s, _, _ = store()
    a = socket("A" * 20, "r")
    pid = s.connected(a)
    seen = send(s, emit("r"), a)
    seq, offset = s.offsets.next()
    s.log(seq, emit("r"), Outgoing([f"451-{offset}", b"\x00\x01"]))
    text = send(s, emit("r"), a)
    assert s.park(a, "transport close")
    parked = s.claim({"pid": pid, "offset": seen}, NS, "u")
    assert isinstance(parked, Parked)
    assert [list(m) for m in parked.replay] == [[f"451-{offset}", b"\x00\x01"], [text]]
