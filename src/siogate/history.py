"""Offsets for emits, and the recent events of each room (``GET /v1/rooms/<room>/history``).

Every emit applied on the node gets an offset, ``<run>-<n>``: ``run`` is random per
process, ``n`` counts up. Connection state recovery (siogate.recovery) sends it to
clients as the last event argument; room history lists events by it and pages with
``since``. An offset of another run, or one not handed out yet, is not accepted.

Room history keeps, per room of a namespace, the last ``size`` events emitted to it
(rooms named in the emit; not broadcasts and not socket ids, which are private), none
older than ``ttl`` seconds, and at most ``max_messages`` over all rooms (the oldest go
first). Sans-I/O: times are passed in.
"""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass
from typing import Any

from .broker import EmitCommand
from .types import Namespace, Room, is_socket_id


class Offsets:
    """The node's offset counter."""

    def __init__(self) -> None:
        self.run = secrets.token_hex(4)
        self._prefix = self.run + "-"
        # The last offset handed out (0: none yet).
        self.last = 0

    def next(self) -> tuple[int, str]:
        self.last = n = self.last + 1
        return n, self._prefix + str(n)

    def format(self, n: int) -> str:
        return self._prefix + str(n)

    def parse(self, offset: object) -> int | None:
        """``n`` of an offset this run handed out; None for anything else."""
        if not isinstance(offset, str):
            return None
        run, _, n = offset.partition("-")
        if run != self.run or not n.isdigit() or len(n) > 18:
            return None
        value = int(n)
        return value if value <= self.last else None


@dataclass(frozen=True, slots=True)
class HistoryOptions:
    # Events kept per room, and for how long (seconds).
    size: int
    ttl: float
    # Events kept over all rooms.
    max_messages: int = 100_000


@dataclass(frozen=True, slots=True)
class Message:
    seq: int
    ts: int  # milliseconds since the epoch
    at: float  # monotonic seconds, for the ttl
    event: str
    args: list[Any]
    exclude: tuple[Room, ...]


class _Room:
    __slots__ = ("messages", "dropped")

    def __init__(self) -> None:
        self.messages: deque[Message] = deque()
        # The newest seq dropped from this room (0: none): a reader asking from an
        # older offset cannot get everything.
        self.dropped = 0


class RoomHistory:
    """The recent events of every room of this node's emits."""

    def __init__(self, options: HistoryOptions) -> None:
        self.options = options
        self._rooms: dict[tuple[Namespace, Room], _Room] = {}
        # Every kept message's room, oldest first (the global cap drops from here).
        self._order: deque[tuple[tuple[Namespace, Room], int]] = deque()
        # The newest seq dropped from a room that is no longer kept at all.
        self._dropped = 0

    def __len__(self) -> int:
        return len(self._order)

    def record(self, seq: int, ts: int, at: float, command: EmitCommand) -> None:
        if not command.rooms:
            return
        message = Message(seq, ts, at, command.event, command.args, command.exclude)
        for room in command.rooms:
            if is_socket_id(room):
                continue
            key = (command.namespace, room)
            state = self._rooms.get(key)
            if state is None:
                state = self._rooms[key] = _Room()
            state.messages.append(message)
            self._order.append((key, seq))
            self._expire(state, at)
            while len(state.messages) > self.options.size:
                state.dropped = state.messages.popleft().seq
        order = self._order
        while len(order) > self.options.max_messages or (order and self._gone(order[0])):
            key, seq = order.popleft()
            state = self._rooms.get(key)
            if state is not None and state.messages and state.messages[0].seq == seq:
                state.dropped = state.messages.popleft().seq
            if state is not None and not state.messages:
                # Forget the empty room; the global mark keeps its answers honest.
                self._dropped = max(self._dropped, state.dropped)
                del self._rooms[key]

    def _gone(self, entry: tuple[tuple[Namespace, Room], int]) -> bool:
        # Already dropped from its room (by size or age): nothing left to remove.
        state = self._rooms.get(entry[0])
        return state is None or not state.messages or state.messages[0].seq > entry[1]

    def _expire(self, state: _Room, now: float) -> None:
        oldest = now - self.options.ttl
        messages = state.messages
        while messages and messages[0].at < oldest:
            state.dropped = messages.popleft().seq

    def since(
        self, namespace: Namespace, sid: str, rooms: set[Room], after: int, now: float
    ) -> list[Message]:
        """What a socket in ``rooms`` was sent after offset ``after`` (those rooms'
        messages, each once, by offset; not those that excluded it)."""
        found: dict[int, Message] = {}
        for room in rooms:
            state = self._rooms.get((namespace, room))
            if state is None:
                continue
            self._expire(state, now)
            for m in reversed(state.messages):
                if m.seq <= after:
                    break
                found[m.seq] = m
        return [
            m
            for _, m in sorted(found.items())
            if not any(r == sid or r in rooms for r in m.exclude)
        ]

    def query(
        self, namespace: Namespace, room: Room, since: int | None, limit: int, now: float
    ) -> tuple[list[Message], bool]:
        """Messages of ``room`` oldest first, and whether they are complete.

        With ``since``: the first ``limit`` after it; complete when nothing after it was
        dropped and ``limit`` cut nothing. Without: the last ``limit``; complete when
        nothing was ever dropped from the room and ``limit`` cut nothing.
        """
        state = self._rooms.get((namespace, room))
        if state is None:
            return [], (since if since is not None else 0) >= self._dropped
        self._expire(state, now)
        kept = list(state.messages)
        if since is None:
            return kept[-limit:], state.dropped == 0 and len(kept) <= limit
        after = [m for m in kept if m.seq > since]
        return after[:limit], state.dropped <= since and len(after) <= limit
