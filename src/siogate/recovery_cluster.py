"""Connection state recovery across nodes: the node's side (``--recovery-window`` with
``--redis-url``, or with ``--workers`` above 1; docs/recovery.md, "Across nodes").

:class:`ClusterSessions` keeps, for each socket of this node, its record (what another
node needs to take it over: :class:`siogate.broker.streams.Session`) and writes it to
Redis in the background, one write at a time and in order (create, room changes, park,
end), so a later write never lands before an earlier one. It also remembers, for a
socket just recovered here, the log offset its replay went up to: commands up to there
that reach this node afterwards were in the replay and are not applied to it again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Literal

from redis.exceptions import RedisError

from .broker import BrokerUnavailable
from .broker.streams import (
    Claimed,
    Gap,
    LoggedBroker,
    Overflow,
    RecoveryLog,
    Replay,
    Session,
    parse_offset,
    plan,
)
from .broker.wire import WireError
from .history import Message
from .hub import Socket
from .types import Namespace, Room, Sid

logger = logging.getLogger("siogate.recovery")

# What a log's store that did not answer raises (Redis, or the workers' primary).
_UNANSWERED = (RedisError, OSError, BrokerUnavailable)

Op = Literal["save", "park", "end"]


class ClusterSessions:
    """Session records of this node's sockets, written to the log's store in order."""

    def __init__(
        self,
        broker: LoggedBroker,
        spawn: Callable[[Coroutine[Any, Any, Any]], None],
        moved: Callable[[Namespace, Sid], None],
    ) -> None:
        self.broker = broker
        self._spawn = spawn
        # Called when Redis says another node owns a socket's record now.
        self._moved = moved
        # sid -> (pid, record)
        self.records: dict[Sid, tuple[str, Session]] = {}
        self._ops: deque[tuple[Op, Sid, str, tuple[str | None, str | None]]] = deque()
        self._writing = False
        # The newest log offset applied on this node.
        self.applied = "0-0"
        # Sockets recovered here -> the offset their replay went up to.
        self.skip: dict[Sid, str] = {}
        # The last offset written to each socket (written at park: a client that got
        # it missed nothing before the loss was noticed).
        self.written: dict[Sid, str] = {}

    @property
    def log(self) -> RecoveryLog:
        assert self.broker.log is not None
        return self.broker.log

    async def start(self) -> None:
        """Where this node starts in the log (the newest offset now)."""
        try:
            last = await self.log.last_offset("")
        except (*_UNANSWERED, ValueError) as exc:
            logger.warning("could not read the recovery log's end: %s", exc)
            return
        if _after(last, self.applied):
            self.applied = last

    def applying(self, offset: str | None) -> None:
        if offset is not None:
            self.applied = offset

    def skipped(self, offset: str | None) -> set[Sid]:
        """Sockets that must not get the command at ``offset`` (their replay had it)."""
        if not self.skip or offset is None:
            return set()
        out: set[Sid] = set()
        for sid, until in list(self.skip.items()):
            if _after(offset, until):
                del self.skip[sid]
            else:
                out.add(sid)
        return out

    async def recover(
        self, auth: dict[str, Any], namespace: str, user: str | None
    ) -> tuple[Claimed, Replay] | None:
        """Claim and replay (RedisRecoveryLog.recover); None when it cannot be done."""
        try:
            return await self.log.recover(auth.get("pid"), auth.get("offset"), namespace, user)
        except (*_UNANSWERED, ValueError) as exc:
            logger.warning("recovery across nodes failed: %s", exc)
            return None

    async def room_history(
        self, namespace: Namespace, room: Room, since: str | None, limit: int
    ) -> tuple[list[tuple[str, Message]], bool] | None:
        """Room history from the log (RedisRecoveryLog.room_history), as the node's."""
        try:
            found = await self.log.room_history(namespace, room, since, limit)
        except _UNANSWERED as exc:
            raise BrokerUnavailable(f"the recovery log did not answer: {exc}") from exc
        if found is None:
            return None
        entries, complete = found
        out = []
        for offset, command in entries:
            ms = _point(offset)[0]
            out.append((offset, Message(0, ms, 0.0, command.event, command.args, command.exclude)))
        return out, complete

    async def events_since(
        self, socket: Socket, rooms: set[Room], since: object
    ) -> list[tuple[str, str, list[Any]]]:
        """The events a new socket in ``rooms`` would have got after offset ``since``
        (room history's "render, then subscribe"), read from the log; what is kept when
        ``since`` is older than the log; nothing for a ``since`` that is not an offset.
        Commands up to where it read are then skipped for the socket (``skip``)."""
        if parse_offset(since) is None:
            return []
        assert isinstance(since, str)
        log = self.log
        try:
            point, last = parse_offset(since), parse_offset(await log.last_offset(""))
            if last is None or point is None or point > last:
                return []  # not handed out yet: nothing
            try:
                entries = await log.entries_after(socket.namespace, since)
            except Gap:
                entries = await log.entries_after(socket.namespace, "0-0", check=False)
            record = Session(socket.id, socket.namespace, socket.user, set(rooms), since, since)
            replay = plan(record, since, since, entries, log.max_missed)
        except (*_UNANSWERED, Gap, Overflow, ValueError, WireError) as exc:
            logger.warning("events since %s not sent: %s", since, exc)
            return []
        if replay is None:
            return []
        self.skip[socket.id] = replay.last
        return replay.events

    async def park_now(self, pid: str) -> None:
        try:
            await self.log.park(pid)
        except _UNANSWERED as exc:
            logger.warning("session record not parked: %s", exc)

    # Records

    def connected(self, socket: Socket, pid: str, expires: float | None) -> None:
        at = self.applied
        record = Session(
            socket.id,
            socket.namespace,
            socket.user,
            set(socket.rooms),
            at,
            since=at,
            changes_from=at,
            expires=expires,
        )
        self.adopted(socket.id, pid, record)

    def adopted(self, sid: Sid, pid: str, record: Session) -> None:
        self.records[sid] = (pid, record)
        self._queue("save", sid, pid)

    def room_changed(self, socket: Socket, room: Room, joined: bool) -> None:
        entry = self.records.get(socket.id)
        if entry is None:
            return
        entry[1].changed(self.applied, room, joined)
        self._queue("save", socket.id, entry[0])

    def parked(self, sid: Sid) -> None:
        entry = self.records.get(sid)
        if entry is not None:
            self._queue("park", sid, entry[0], (self.applied, self.written.pop(sid, None)))

    def ended(self, sid: Sid) -> None:
        entry = self.records.pop(sid, None)
        self.skip.pop(sid, None)
        self.written.pop(sid, None)
        if entry is not None:
            self._queue("end", sid, entry[0])

    def forget(self, sid: Sid) -> None:
        """The socket went to another node: nothing more is written for it here."""
        self.records.pop(sid, None)
        self.skip.pop(sid, None)
        self.written.pop(sid, None)

    async def end_now(self, sid: Sid) -> bool:
        """End the record for good now; False when another node owns it (the caller
        must then drop the socket without a word)."""
        entry = self.records.pop(sid, None)
        self.skip.pop(sid, None)
        self.written.pop(sid, None)
        if entry is None:
            return True
        try:
            return await self.log.end(entry[0])
        except _UNANSWERED as exc:
            logger.warning("could not end the session record of %s: %s", sid, exc)
            return True

    async def drain(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) until every queued write is done."""
        deadline = asyncio.get_running_loop().time() + timeout
        while (self._ops or self._writing) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)

    def _queue(
        self, op: Op, sid: Sid, pid: str, marks: tuple[str | None, str | None] = (None, None)
    ) -> None:
        ops = self._ops
        if op == "save" and ops and ops[-1] == ("save", sid, pid, marks):
            return  # the pending save writes the newest state anyway
        ops.append((op, sid, pid, marks))
        if not self._writing:
            self._writing = True
            self._spawn(self._write())

    async def _write(self) -> None:
        log = self.log
        try:
            while self._ops:
                op, sid, pid, marks = self._ops.popleft()
                try:
                    if op == "save":
                        entry = self.records.get(sid)
                        if entry is None or entry[0] != pid:
                            continue
                        owned = await log.save(pid, entry[1])
                    elif op == "park":
                        owned = await log.park(pid, *marks)
                    else:
                        await log.end(pid)
                        continue
                except _UNANSWERED as exc:
                    logger.warning("session record of %s not written: %s", sid, exc)
                    continue
                entry = self.records.get(sid)
                if not owned and entry is not None and entry[0] == pid:
                    # Another node claimed the socket: it goes on there.
                    self.forget(sid)
                    self._moved(entry[1].namespace, sid)
        finally:
            self._writing = False


def _point(offset: str) -> tuple[int, int]:
    return parse_offset(offset) or (0, 0)


def _after(a: str, b: str) -> bool:
    pa, pb = parse_offset(a), parse_offset(b)
    return pa is not None and pb is not None and pa > pb
