"""Connection state recovery (the Socket.IO 4.6+ protocol), on one node.

With ``--recovery-window SECONDS`` every socket gets a private session id (``pid``) in
its CONNECT answer, and every event packet sent by a room, user, broadcast or direct
emit carries one more, trailing string argument: its offset. The stock client keeps
the last offset it handed to a listener and, on reconnection, sends ``{pid, offset}``
in its CONNECT auth.

When a socket loses its transport (:data:`RECOVERABLE`), it is not forgotten: it stays
in the hub with its rooms, and its link is replaced by a :class:`Parked` one that keeps
a reference to every broadcast written to it (the same encoded :class:`Outgoing` the
live recipients got, so a message costs one reference per parked socket). Joins,
leaves and direct emits made over the API while it is away act on it as on any socket.
A CONNECT with its pid within the window (:meth:`RecoveryStore.claim`) gets the same
socket back: the events after the client's offset that were sent before the loss was
noticed (taken from the node's log, filtered by the rooms the socket had then), then
the events parked since, in offset order, all written before the node can apply
anything newer (the claim and the writes happen in one call on the event loop).

Past the window, past a cap, or on a server-side disconnect the socket ends for good and
the node forgets it as if it had just left (``end`` callback), with its original reason.

Offsets come from :class:`siogate.history.Offsets` (one per emit, shared with room
history), so an offset from another run or one never handed out is recognised and the
client gets a new socket.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from .broker import EmitCommand
from .history import Offsets
from .hub import Outgoing, Socket
from .protocol.engineio import EncodedPacket
from .protocol.session import (
    REASON_PING_TIMEOUT,
    REASON_TRANSPORT_CLOSE,
    REASON_TRANSPORT_ERROR,
    Session,
    State,
)
from .types import Room, Sid

# Losses a socket may recover from. A client or server namespace disconnect, a slow
# consumer cut or a shutdown end the socket at once. "token expired" (siogate.node) is
# a loss on purpose: the client reconnects with a fresh token and keeps its socket.
RECOVERABLE = frozenset(
    {REASON_TRANSPORT_CLOSE, REASON_TRANSPORT_ERROR, REASON_PING_TIMEOUT, "token expired"}
)

# Why a parked socket ended for good (the disconnect webhook's "recovery" field).
Ended = Literal["expired", "overflow", "disconnected"]


@dataclass(frozen=True, slots=True)
class RecoveryOptions:
    """How long and how much a node keeps for sockets that lost their transport."""

    # Seconds a socket waits for its client after a transport loss.
    window: float
    # Events kept for one disconnected socket; one more ends it (it could not be
    # replayed whole).
    max_missed: int = 10_000
    # Messages kept by the node in all: log entries plus events kept for disconnected
    # sockets. The log is trimmed first; a socket whose next event does not fit ends.
    max_messages: int = 1_000_000


# One emit sent with an offset, kept for the window: (offset seq, monotonic time,
# namespace, rooms, exclude, its encoded packets: the text alone, the usual case, or a
# tuple of the text and its attachments). A plain tuple of strings, numbers and tuples
# of those: the garbage collector stops tracking it, so a log of many thousand entries
# adds nothing to its collections (slotted objects cost ~20% of the peak emit rate in GC
# passes, bench/recovery_cost.py).
_Packets = EncodedPacket | tuple[EncodedPacket, ...]
_Entry = tuple[int, float, str, tuple[Room, ...], tuple[Room, ...], _Packets]
_SEQ: Final = 0
_AT: Final = 1
_NS: Final = 2
_ROOMS: Final = 3
_EXCLUDE: Final = 4
_PACKETS: Final = 5


class Parked:
    """The link of a socket whose transport is gone (implements ``hub.Link``).

    Broadcasts written to it are kept (by reference) until the client claims the
    socket or the window ends; anything else sent to it is dropped, as for a closed
    session.
    """

    __slots__ = (
        "store",
        "session",
        "socket",
        "pid",
        "reason",
        "rooms",
        "since",
        "detached",
        "missed",
        "replay",
        "timer",
    )

    def __init__(
        self, store: RecoveryStore, socket: Socket, pid: str, reason: str, since: int
    ) -> None:
        self.store = store
        # A closed session: sends to it are dropped; it is in no namespace.
        self.session = Session(f"parked:{socket.id}")
        self.session.state = State.CLOSED
        self.socket = socket
        self.pid = pid
        self.reason = reason
        # Rooms at the loss: which logged emits before it were for this socket.
        self.rooms = frozenset(socket.rooms)
        # Offsets (seq) from the socket's connect and at its loss.
        self.since = since
        self.detached = store.offsets.last
        # Broadcasts kept for the socket (by reference); at a claim, every packet
        # sequence to replay.
        self.missed: list[Outgoing] = []
        self.replay: list[Sequence[EncodedPacket]] = []
        self.timer: asyncio.TimerHandle | None = None

    def flush(self) -> None:
        pass

    def write_broadcast(self, outgoing: Outgoing) -> None:
        self.store._keep(self, outgoing)

    def close(self, reason: str) -> None:
        self.store.end(self, reason, "disconnected")


def is_parked(socket: Socket) -> bool:
    return isinstance(socket.link, Parked)


def _seq(entry: _Entry) -> int:
    return entry[_SEQ]


def _for_socket(logged: _Entry, sid: str, rooms: frozenset[Room]) -> bool:
    """Whether an emit logged before a socket's loss was selected for it (by the hub's
    rules: any of ``rooms`` or none given, and none of ``exclude``)."""
    if any(r == sid or r in rooms for r in logged[_EXCLUDE]):
        return False
    return not logged[_ROOMS] or any(r == sid or r in rooms for r in logged[_ROOMS])


class RecoveryStore:
    """Private session ids, the offset log and the parked sockets of one node."""

    def __init__(
        self,
        options: RecoveryOptions,
        end: Callable[[Socket, str, Ended], None],
        offsets: Offsets,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = options
        self._window, self._cap = options.window, options.max_messages
        # Shared with room history (siogate.history): one offset per emit.
        self.offsets = offsets
        # Called when a parked socket ends for good: the node forgets it.
        self._end = end
        self.clock = clock
        self._log: deque[_Entry] = deque()
        # The newest offset dropped from the log (0: none).
        self._trimmed = 0
        # When the oldest entry is due to leave the log (never later than that): each
        # emit compares its clock with one number instead of reading the oldest entry.
        self._expires = -math.inf
        # Connected sockets: id -> (pid, seq when it connected).
        self._live: dict[Sid, tuple[str, int]] = {}
        self._parked: dict[str, Parked] = {}
        # Events kept for parked sockets, all together.
        self.kept = 0
        # False across nodes (siogate.broker.recovering): the missed events are in
        # Redis's log, and a parked socket here only holds its place (listings, timer).
        self.keeps = True
        self.recovered_total = 0
        self.expired_total = 0

    # The log

    def log(self, seq: int, command: EmitCommand, out: Outgoing) -> None:
        """Keep an emit sent with offset ``seq`` (ascending) to at least one socket."""
        now = self.clock()
        log, messages = self._log, out.messages
        packets = messages[0] if len(messages) == 1 else tuple(messages)
        log.append((seq, now, command.namespace, command.rooms, command.exclude, packets))
        if now > self._expires or len(log) > self._cap:
            self._trim(now)

    def _trim(self, now: float) -> None:
        log, oldest = self._log, now - self.options.window
        cap = self.options.max_messages - self.kept
        while log and (log[0][_AT] < oldest or len(log) > cap):
            self._trimmed = log.popleft()[_SEQ]
        self._expires = log[0][_AT] + self._window if log else now + self._window

    # Sockets

    def connected(self, socket: Socket) -> str:
        """Register a new socket; its pid (for the CONNECT answer)."""
        pid = secrets.token_urlsafe(16)
        self._live[socket.id] = (pid, self.offsets.last)
        return pid

    def adopt(self, socket: Socket, pid: str) -> None:
        """Register a socket recovered from another node under its pid."""
        self._live[socket.id] = (pid, self.offsets.last)
        self.recovered_total += 1

    def drop(self, parked: Parked) -> None:
        """Forget a parked socket without ending it (it recovered on another node)."""
        if self._parked.pop(parked.pid, None) is not parked:
            return
        if parked.timer is not None:
            parked.timer.cancel()
        self.kept -= len(parked.missed)
        parked.missed = []

    def forget(self, sid: Sid) -> None:
        """The socket ended (not parked)."""
        self._live.pop(sid, None)

    def pid_of(self, sid: Sid) -> str | None:
        live = self._live.get(sid)
        return None if live is None else live[0]

    def park(self, socket: Socket, reason: str) -> bool:
        """Keep ``socket`` for the window after a transport loss; False when it cannot
        be kept (not registered, or ``reason`` is no loss)."""
        if reason not in RECOVERABLE:
            return False
        live = self._live.pop(socket.id, None)
        if live is None:
            return False
        pid, since = live
        parked = Parked(self, socket, pid, reason, since)
        socket.link = parked
        loop = asyncio.get_running_loop()
        parked.timer = loop.call_later(self.options.window, self.end, parked, reason, "expired")
        self._parked[pid] = parked
        return True

    def _keep(self, parked: Parked, outgoing: Outgoing) -> None:
        if not self.keeps:
            return
        options = self.options
        if len(parked.missed) >= options.max_missed or self.kept >= options.max_messages:
            self.end(parked, parked.reason, "overflow")
            return
        parked.missed.append(outgoing)
        self.kept += 1
        if len(self._log) + self.kept > options.max_messages:
            self._trim(self.clock())

    def end(self, parked: Parked, reason: str, why: Ended) -> None:
        """End a parked socket for good (window over, cap reached, server disconnect)."""
        if self._parked.pop(parked.pid, None) is not parked:
            return
        if parked.timer is not None:
            parked.timer.cancel()
        self.kept -= len(parked.missed)
        parked.missed = []
        if why == "expired":
            self.expired_total += 1
        self._end(parked.socket, reason, why)

    def claim(self, auth: dict[str, object], namespace: str, user: str | None) -> Parked | None:
        """The parked socket that ``auth`` (``{pid, offset}``) names, if it can be
        recovered whole; None for an unknown pid, another namespace or user, or an
        offset this node never handed to it (then the client gets a new socket).

        On success the socket is live again (registered under the same pid) and
        ``parked.replay`` holds everything to replay, oldest first.
        """
        pid = auth.get("pid")
        if not isinstance(pid, str):
            return None
        parked = self._parked.get(pid)
        if parked is None or parked.socket.namespace != namespace or parked.socket.user != user:
            return None
        # No offset: the client never got an event with one (from this socket's start).
        offset = auth.get("offset")
        seen = parked.since if offset is None else self.offsets.parse(offset)
        if seen is None or seen > parked.detached:
            return None
        seen = max(seen, parked.since)
        tail: list[Sequence[EncodedPacket]] = []
        if seen < parked.detached:
            if self._trimmed > seen:
                return None  # trimmed: what came between cannot be replayed
            log, sid = self._log, parked.socket.id
            start = bisect.bisect_right(log, seen, key=_seq)
            for i in range(start, len(log)):
                entry = log[i]
                if entry[_SEQ] > parked.detached:
                    break
                if entry[_NS] == namespace and _for_socket(entry, sid, parked.rooms):
                    packets = entry[_PACKETS]
                    tail.append(packets if isinstance(packets, tuple) else (packets,))
        del self._parked[pid]
        if parked.timer is not None:
            parked.timer.cancel()
        self.kept -= len(parked.missed)
        parked.replay = tail + [out.messages for out in parked.missed]
        parked.missed = []
        self._live[parked.socket.id] = (pid, parked.since)
        self.recovered_total += 1
        return parked

    def end_all(self, reason: str) -> None:
        """End every parked socket (the node is shutting down)."""
        for parked in list(self._parked.values()):
            self.end(parked, reason, "disconnected")

    # Costs (metrics, benchmarks)

    @property
    def parked_count(self) -> int:
        return len(self._parked)

    @property
    def logged_count(self) -> int:
        return len(self._log)
