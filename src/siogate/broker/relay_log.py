"""Connection state recovery across workers without Redis: the log the relay keeps.

With ``serve --workers N --recovery-window S`` and no ``--redis-url`` the primary keeps
what Redis keeps for the nodes of a cluster (:mod:`siogate.broker.streams`): one command
log, and a session record per socket. :class:`RelayLog` is that, in the primary's
memory. The relay (:class:`siogate.broker.local.LocalRelay`) appends a worker's logged
publish (a ``LOGGED`` frame) and passes it on to every worker, the publisher included,
with the offsets added (member ``offsets``, as the log script does in Redis), in one
step of its one loop: every worker applies every command in log order.

A worker reads the log and writes its records through calls to the primary
(:meth:`siogate.broker.local.LocalBroker.call`, JSON): :class:`RelayLogClient` is a
:class:`~siogate.broker.streams.RecoveryLog` whose every operation is one call, answered
by :meth:`RelayLog.serve`. The rules are those of the Redis scripts: a record is written
only by the worker that owns it, a claim takes it whatever its state and names the new
owner, a live record expires ``live_ttl`` after its last write and a parked one
``window`` after the loss.

Offsets have the shape of stream ids (``<ms>-<seq>``, increasing), so the node's code
and the clients treat them alike. The log and the records live as long as the primary:
a worker's death loses nothing (its clients recover on the other workers), a restart of
the whole ``serve`` loses them all (the clients then connect as new sockets).
"""

from __future__ import annotations

import bisect
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from . import wire
from .base import BrokerUnavailable, Command, EmitCommand
from .streams import (
    Claimed,
    Gap,
    Overflow,
    RecoveryLog,
    Session,
    decode_entry,
    parse_offset,
)

# Seconds between two sweeps of expired session records.
SWEEP_EVERY: Final = 5.0
# Dropped entries kept at the head of the lists before they are cut off (amortized).
_COMPACT_AT: Final = 4096

Call = Callable[[bytes], Awaitable[bytes]]


def _offset(point: tuple[int, int]) -> str:
    return f"{point[0]}-{point[1]}"


def _text(entry: bytes) -> str:
    # Wire bytes are UTF-8 JSON; surrogateescape keeps any byte through a JSON string.
    return entry.decode("utf-8", "surrogateescape")


@dataclass(slots=True)
class _Record:
    fields: dict[str, str]
    node: str
    state: str
    gen: int
    expires: float


class RelayLog:
    """The command log and the session records, in the primary (see the module)."""

    def __init__(
        self,
        *,
        window: float,
        log_age: float | None = None,
        max_log: int = 1_000_000,
        live_ttl: float = 86_400.0,
        scan_limit: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.window = window
        self.log_age = max(window, log_age or 0.0)
        self.max_log = max_log
        self.live_ttl = live_ttl
        self.scan_limit = scan_limit
        self._clock = clock
        # The log: points (ms, seq) and entries, oldest first, from index _head on.
        self._points: list[tuple[int, int]] = []
        self._entries: list[bytes] = []
        self._head = 0
        self._last = (0, 0)
        # The newest entry trimmed (None: none ever was).
        self._dropped: tuple[int, int] | None = None
        self._records: dict[str, _Record] = {}
        self._swept = clock()

    # The log

    def append(self, entries: Sequence[bytes]) -> list[str]:
        """Log ``entries`` (one-command wire batches), in order; their offsets."""
        now_ms = int(self._clock() * 1000)
        out = []
        for entry in entries:
            ms, seq = self._last
            point = (now_ms, 0) if now_ms > ms else (ms, seq + 1)
            self._last = point
            self._points.append(point)
            self._entries.append(entry)
            out.append(_offset(point))
        self._trim(now_ms)
        return out

    def _trim(self, now_ms: int) -> None:
        oldest = (now_ms - int(self.log_age * 1000), 0)
        head, points = self._head, self._points
        while head < len(points) and (len(points) - head > self.max_log or points[head] < oldest):
            self._entries[head] = b""
            head += 1
        if head != self._head:
            self._dropped = points[head - 1]
        if head >= _COMPACT_AT and head * 2 >= len(points):
            del points[:head]
            del self._entries[:head]
            head = 0
        self._head = head

    @property
    def length(self) -> int:
        return len(self._points) - self._head

    def last_offset(self) -> str:
        return _offset(self._last)

    def _gap(self, point: tuple[int, int]) -> bool:
        """Whether entries after ``point`` may have been trimmed."""
        return self._dropped is not None and point < self._dropped

    def _index_after(self, point: tuple[int, int]) -> int:
        return bisect.bisect_right(self._points, point, lo=self._head)

    def entries_after(self, offset: str, check: bool = True) -> list[tuple[str, bytes]]:
        """The log after ``offset``, oldest first (:class:`Gap`, :class:`Overflow` as
        :meth:`siogate.broker.streams.RedisRecoveryLog.entries_after`)."""
        point = parse_offset(offset)
        if point is None:
            raise Gap("not an offset")
        if point > self._last:
            raise Gap("an offset this log has not handed out")
        if check and self._gap(point):
            raise Gap("entries after the offset may have been trimmed")
        start = self._index_after(point)
        if len(self._points) - start > self.scan_limit:
            raise Overflow(f"more than {self.scan_limit} log entries to scan")
        return [
            (_offset(self._points[i]), self._entries[i]) for i in range(start, len(self._points))
        ]

    def room_history(
        self, namespace: str, room: str, since: str | None, limit: int
    ) -> tuple[list[tuple[str, bytes]], bool] | None:
        """Emits to ``room`` of ``namespace``, as
        :meth:`siogate.broker.streams.RedisRecoveryLog.room_history` answers them."""
        if since is None:
            indexes: range = range(len(self._points) - 1, self._head - 1, -1)
            gap = self._dropped is not None
        else:
            point = parse_offset(since)
            if point is None or point > self._last:
                return None
            indexes = range(self._index_after(point), len(self._points))
            gap = self._gap(point)
        found: list[tuple[str, bytes]] = []
        scanned = 0
        # This runs in the relay's one loop: entries that cannot name the room are not
        # decoded (a byte search against ~10 us of JSON each).
        forms = wire.string_forms(room)
        for i in indexes:
            if len(found) > limit or scanned >= self.scan_limit:
                break
            scanned += 1
            entry = self._entries[i]
            if not any(form in entry for form in forms):
                continue
            try:
                command = decode_entry(entry)
            except wire.WireError:
                continue
            if (
                isinstance(command, EmitCommand)
                and command.namespace == namespace
                and room in command.rooms
            ):
                found.append((_offset(self._points[i]), entry))
        exhausted = scanned == len(indexes)
        cut = len(found) > limit
        if since is None:
            found.reverse()
            return found[-limit:], exhausted and not gap and not cut
        return found[:limit], exhausted and not gap and not cut

    # Session records (the rules of the Redis scripts, siogate.broker.streams)

    def _record(self, pid: str) -> _Record | None:
        now = self._clock()
        if now - self._swept > SWEEP_EVERY:
            self._swept = now
            for gone in [p for p, r in self._records.items() if r.expires <= now]:
                del self._records[gone]
        record = self._records.get(pid)
        if record is not None and record.expires <= now:
            del self._records[pid]
            return None
        return record

    def save(self, pid: str, node: str, fields: dict[str, str]) -> bool:
        record = self._record(pid)
        if record is None:
            record = _Record({}, node, "live", 0, 0.0)
            self._records[pid] = record
        elif record.node != node:
            return False
        record.fields.update(fields)
        if record.state == "live":
            record.expires = self._clock() + self.live_ttl
        return True

    def park(self, pid: str, node: str, parked_at: str, written: str) -> bool:
        record = self._record(pid)
        if record is None or record.node != node:
            return False
        record.state = "parked"
        record.fields.update(parked_at=parked_at, written=written)
        record.expires = self._clock() + max(0.001, self.window)
        return True

    def end(self, pid: str, node: str) -> bool:
        record = self._record(pid)
        if record is None or record.node != node:
            return False
        del self._records[pid]
        return True

    def claim(self, pid: str, namespace: str, user: str, node: str) -> list[Any] | None:
        """[old node, old state, gen, the record's fields] or None (as the claim script)."""
        record = self._record(pid)
        if record is None:
            return None
        if record.fields.get("ns") != namespace or record.fields.get("user") != user:
            return None
        record.gen += 1
        before = [record.node, record.state, record.gen, dict(record.fields)]
        record.node, record.state = node, "live"
        record.fields.pop("parked_at", None)
        record.fields.pop("written", None)
        record.expires = self._clock() + self.live_ttl
        return before

    @property
    def record_count(self) -> int:
        return len(self._records)

    # A worker's call

    def serve(self, call: dict[str, Any]) -> dict[str, Any]:
        """Answer a :class:`RelayLogClient`'s request (JSON, from a worker)."""
        what = call["call"]
        if what == "last":
            return {"last": self.last_offset()}
        if what == "after":
            try:
                found = self.entries_after(str(call["offset"]), bool(call["check"]))
            except Gap as exc:
                return {"gap": str(exc)}
            except Overflow as exc:
                return {"overflow": str(exc)}
            return {"entries": [[o, _text(e)] for o, e in found]}
        if what == "history":
            since = call["since"]
            history = self.room_history(
                str(call["ns"]),
                str(call["room"]),
                None if since is None else str(since),
                int(call["limit"]),
            )
            if history is None:
                return {"history": None}
            entries, complete = history
            return {"history": [[o, _text(e)] for o, e in entries], "complete": complete}
        pid, node = str(call["pid"]), str(call["node"])
        if what == "save":
            fields = {str(k): str(v) for k, v in call["fields"].items()}
            return {"ok": self.save(pid, node, fields)}
        if what == "park":
            return {"ok": self.park(pid, node, str(call["parked_at"]), str(call["written"]))}
        if what == "end":
            return {"ok": self.end(pid, node)}
        if what == "claim":
            return {"claimed": self.claim(pid, str(call["ns"]), str(call["user"]), node)}
        raise ValueError(f"unknown recovery log call {what!r}")


class RelayLogClient(RecoveryLog):
    """A worker's :class:`~siogate.broker.streams.RecoveryLog`: every operation is one
    call to the primary's :class:`RelayLog`. Raises
    :class:`~siogate.broker.base.BrokerUnavailable` when the primary does not answer."""

    def __init__(
        self,
        call: Call,
        *,
        node: str,
        window: float,
        max_missed: int = 10_000,
    ) -> None:
        self._call = call
        self.node = node
        self.window = window
        self.max_missed = max_missed

    async def _ask(self, what: str, **args: Any) -> dict[str, Any]:
        request = json.dumps({"op": "rlog", "call": what, **args}).encode()
        reply = json.loads(await self._call(request))
        if not isinstance(reply, dict):
            raise BrokerUnavailable("the primary's recovery log answered nonsense")
        return reply

    async def last_offset(self, namespace: str) -> str:
        last = (await self._ask("last"))["last"]
        if parse_offset(last) is None:
            raise ValueError("the recovery log's end is not an offset")
        return str(last)

    async def entries_after(
        self, namespace: str, offset: str, *, check: bool = True
    ) -> list[tuple[str, Command]]:
        reply = await self._ask("after", offset=offset, check=check)
        if "gap" in reply:
            raise Gap(str(reply["gap"]))
        if "overflow" in reply:
            raise Overflow(str(reply["overflow"]))
        return [(o, decode_entry(_raw(e))) for o, e in _pairs(reply["entries"])]

    async def save(self, pid: str, session: Session) -> bool:
        fields = session.to_fields()
        return bool((await self._ask("save", pid=pid, node=self.node, fields=fields))["ok"])

    async def park(
        self, pid: str, parked_at: str | None = None, written: str | None = None
    ) -> bool:
        args = {"parked_at": parked_at or "", "written": written or ""}
        return bool((await self._ask("park", pid=pid, node=self.node, **args))["ok"])

    async def end(self, pid: str) -> bool:
        return bool((await self._ask("end", pid=pid, node=self.node))["ok"])

    async def claim(self, pid: object, namespace: str, user: str | None) -> Claimed | None:
        if not isinstance(pid, str) or not 16 <= len(pid) <= 64:
            return None
        reply = await self._ask(
            "claim", pid=pid, node=self.node, ns=namespace, user=json.dumps(user)
        )
        claimed = reply.get("claimed")
        if not isinstance(claimed, list) or len(claimed) != 4:
            return None
        previous, state, gen, raw = claimed
        if not isinstance(raw, dict) or not isinstance(gen, int):
            return None
        session = Session.from_fields({str(k): str(v) for k, v in raw.items()})
        if session is None:
            return None
        return Claimed(session, str(previous), str(state), gen)

    async def room_history(
        self, namespace: str, room: str, since: str | None, limit: int
    ) -> tuple[list[tuple[str, EmitCommand]], bool] | None:
        reply = await self._ask("history", ns=namespace, room=room, since=since, limit=limit)
        if reply.get("history") is None:
            return None
        found = []
        for offset, entry in _pairs(reply["history"]):
            command = decode_entry(_raw(entry))
            if isinstance(command, EmitCommand):
                found.append((offset, command))
        return found, bool(reply["complete"])


def _raw(entry: str) -> bytes:
    return entry.encode("utf-8", "surrogateescape")


def _pairs(value: Any) -> list[tuple[str, str]]:
    """[[offset, entry], ...] from the primary, checked."""
    if not isinstance(value, list):
        raise wire.WireError("log entries must be a list")
    out = []
    for pair in value:
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or parse_offset(pair[0]) is None
            or not isinstance(pair[1], str)
        ):
            raise wire.WireError("a log entry must be [offset, entry]")
        out.append((pair[0], pair[1]))
    return out
