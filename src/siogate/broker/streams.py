"""Connection state recovery across nodes: what Redis keeps (a building block).

The Redis half of ``--recovery-window`` with ``--redis-url`` (docs/recovery.md, "Across
nodes"): the command log, the session records and the replay rules. The broker that
publishes through the log is :mod:`siogate.broker.recovering`; the node's side,
:mod:`siogate.recovery_cluster`.

Keys, under the broker's prefix ``P``:

* ``P:rlog``, a stream: one entry per command (emits, joins, leaves, disconnects, of
  every namespace), field ``c`` holding the command as a one-command wire batch
  (:mod:`siogate.broker.wire`). The entry id is the command's **offset**: one total
  order, the same on every node, so an offset a client got from one node means the same
  place in the log on any other, and a node's progress is one offset. Trimmed on every
  append by count (``MAXLEN ~``), and by age (``MINID ~`` now minus the window) at most
  once a second per node. Commands are logged, not only emits, so that joins and leaves
  made over the API while a socket's node is gone (``kill -9``) are replayed in order
  with the emits: the rooms a missed emit is checked against are the rooms the socket
  had at that point of the log.
* ``P:rsess:<pid>``, a hash per socket (``pid``: 128 random bits, never listed): its id,
  namespace, user, token expiry, owning node, its rooms at a log offset (``at``), the
  offsets of its last room changes (to go back from ``at`` to an older client offset),
  and ``state`` (``live`` or ``parked``). A live record expires ``live_ttl`` after its
  last write (the owner rewrites it on every room change; a node killed without a word
  leaves it to expire); a parked one ``window`` after the loss.

The race where the socket's old node has not noticed the drop yet is settled by the
claim script: a claim takes the record whatever its state (the client that holds the pid
is the socket's client), bumps ``gen`` and names the new owner; the old node's later
writes (park, room changes, end) are refused because it no longer owns the record, so it
can neither expire the session nor send a disconnect webhook for it.

Replayed events carry their own offset as the trailing argument, so a client that drops
again right after a recovery asks from the last replayed event, not from where it asked
before (the bug of socketio/socket.io#5419 in @socket.io/redis-streams-adapter, where a
second recovery replays the first one's events again).

Everything read from Redis is checked: offsets must look like stream ids, records are
JSON with typed members, log entries go through the wire decoder (never pickle or eval),
and reads are bounded (``scan_limit`` log entries, ``max_missed`` replayed events).
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import itertools
import json
import logging
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from redis.asyncio import Redis

from ..types import Namespace, Room, Sid
from . import resp, wire
from .base import Command, EmitCommand, SocketsCommand, with_offset

logger = logging.getLogger("siogate.broker")

# A stream entry id as Redis writes it: "<ms>-<seq>".
_OFFSET: Final = re.compile(r"\A(\d{1,20})-(\d{1,20})\Z")
# Room changes a session record keeps (to step back from its snapshot to a client's
# older offset); a client further back gets a new socket.
MAX_CHANGES: Final = 64
# Log entries read per XRANGE call while replaying.
PAGE: Final = 1000
# Rooms a session record may hold (a record with more is refused as malformed).
MAX_ROOMS: Final = 10_000


def parse_offset(value: object) -> tuple[int, int] | None:
    """A stream id as a comparable pair; None for anything else."""
    if not isinstance(value, str):
        return None
    match = _OFFSET.match(value)
    if match is None:
        return None
    ms, seq = int(match[1]), int(match[2])
    if ms >= 1 << 64 or seq >= 1 << 64:
        return None
    return ms, seq


@dataclass(slots=True)
class Session:
    """What a node needs to take over a socket (a ``P:rsess:<pid>`` record)."""

    sid: Sid
    namespace: Namespace
    user: str | None
    # Rooms after every log entry up to ``at`` (the user room and token rooms included).
    rooms: set[Room]
    at: str
    # The log's offset when the socket connected (a client that got no event yet asks
    # from there).
    since: str = "0-0"
    # (offset, room, joined) of the socket's last room changes, oldest first; complete
    # for offsets after ``changes_from`` (``since`` until some were dropped).
    changes: list[tuple[str, Room, bool]] = field(default_factory=list)
    changes_from: str = "0-0"
    # The token's exp (seconds since the epoch), for the re-check on recovery.
    expires: float | None = None
    # Written by the owner when it noticed the loss (not by to_fields): the offset it
    # had applied then, and the last offset it wrote to the socket (None: none since
    # the connect). A client that got that one missed nothing before ``parked_at``.
    parked_at: str | None = None
    written: str | None = None

    def to_fields(self) -> dict[str, str]:
        return {
            "sid": self.sid,
            "ns": self.namespace,
            "user": json.dumps(self.user),
            "rooms": json.dumps(sorted(self.rooms)),
            "at": self.at,
            "since": self.since,
            "changes": json.dumps([[o, r, j] for o, r, j in self.changes]),
            "changes_from": self.changes_from,
            "exp": json.dumps(self.expires),
        }

    @classmethod
    def from_fields(cls, raw: dict[str, str]) -> Session | None:
        """A record read back from Redis, checked member by member; None if malformed."""
        try:
            sid, ns, at = raw["sid"], raw["ns"], raw["at"]
            since, changes_from = raw["since"], raw["changes_from"]
            user = json.loads(raw["user"])
            rooms = json.loads(raw["rooms"])
            changes = json.loads(raw["changes"])
            expires = json.loads(raw["exp"])
        except (KeyError, ValueError, RecursionError):
            return None
        if any(parse_offset(o) is None for o in (at, since, changes_from)):
            return None
        parked_at, written = raw.get("parked_at") or None, raw.get("written") or None
        if any(o is not None and parse_offset(o) is None for o in (parked_at, written)):
            return None
        if user is not None and not isinstance(user, str):
            return None
        if expires is not None and not isinstance(expires, int | float):
            return None
        if (
            not isinstance(rooms, list)
            or len(rooms) > MAX_ROOMS
            or not all(isinstance(r, str) for r in rooms)
        ):
            return None
        if not isinstance(changes, list) or len(changes) > MAX_CHANGES:
            return None
        checked: list[tuple[str, Room, bool]] = []
        for change in changes:
            if (
                not isinstance(change, list)
                or len(change) != 3
                or parse_offset(change[0]) is None
                or not isinstance(change[1], str)
                or not isinstance(change[2], bool)
            ):
                return None
            checked.append((change[0], Room(change[1]), change[2]))
        return cls(
            Sid(sid),
            Namespace(ns),
            user,
            {Room(r) for r in rooms},
            at,
            since,
            checked,
            changes_from,
            None if expires is None else float(expires),
            parked_at,
            written,
        )

    def changed(self, offset: str, room: Room, joined: bool) -> None:
        """Record a room change the owner applied at ``offset`` (the log entry's id)."""
        if joined:
            self.rooms.add(room)
        else:
            self.rooms.discard(room)
        self.at = offset
        self.changes.append((offset, room, joined))
        if len(self.changes) > MAX_CHANGES:
            self.changes_from = self.changes.pop(0)[0]

    def rooms_at(self, offset: str) -> set[Room] | None:
        """The rooms after log entry ``offset``, undoing the recorded changes past it;
        None when changes were dropped from the record (the client is too far back)."""
        point = parse_offset(offset)
        assert point is not None
        rooms = set(self.rooms)
        if point >= _point(self.at):
            return rooms
        if point < _point(self.changes_from):
            return None
        for at, room, joined in reversed(self.changes):
            if _point(at) <= point:
                break
            if joined:
                rooms.discard(room)
            else:
                rooms.add(room)
        return rooms


def _point(offset: str) -> tuple[int, int]:
    point = parse_offset(offset)
    assert point is not None
    return point


@dataclass(slots=True)
class Replay:
    """What a recovered socket gets: its rooms now, and the events it missed."""

    rooms: set[Room]
    # (offset, event, args) oldest first; args without the offset.
    events: list[tuple[str, str, list[Any]]]
    # The log entry the replay went up to (the socket is current from here).
    last: str
    # The room changes it applied: (offset, room, joined), in order.
    changes: list[tuple[str, Room, bool]] = field(default_factory=list)


def _selects(sid: Sid, rooms: set[Room], wanted: Sequence[Room], exclude: Sequence[Room]) -> bool:
    """The hub's selection rule for one socket: in any of ``wanted`` (or none given),
    in none of ``exclude`` (a socket id names its own socket)."""
    own = Room(sid)
    if any(r == own or r in rooms for r in exclude):
        return False
    return not wanted or any(r == own or r in rooms for r in wanted)


class Overflow(Exception):
    """More missed events than a socket may get (it gets a new socket)."""


def plan(
    session: Session,
    start: str,
    seen: str,
    entries: Iterable[tuple[str, Command]],
    max_missed: int,
) -> Replay | None:
    """Walk the log entries after ``start`` (a point where ``session``'s rooms are
    known) in order: apply the room changes aimed at the socket, and keep the emits that
    select it after offset ``seen`` (the client's). None when a disconnect for it was
    logged (the session ended while it was away). Raises :class:`Overflow` past
    ``max_missed`` events.
    """
    rooms = session.rooms_at(start)
    if rooms is None:
        raise Overflow("the session record no longer reaches back to the client's offset")
    sid, seen_point = session.sid, _point(seen)
    events: list[tuple[str, str, list[Any]]] = []
    changes: list[tuple[str, Room, bool]] = []
    last = start
    for offset, command in entries:
        last = offset
        if command.namespace != session.namespace:
            continue
        if isinstance(command, EmitCommand):
            if _point(offset) <= seen_point:
                continue
            if _selects(sid, rooms, command.rooms, command.exclude):
                if len(events) >= max_missed:
                    raise Overflow(f"more than {max_missed} missed events")
                events.append((offset, command.event, list(command.args)))
            continue
        if not _targets(sid, rooms, command):
            continue
        if command.action == "disconnect":
            return None
        assert command.room is not None
        joined = command.action == "join"
        if joined != (command.room in rooms):
            changes.append((offset, command.room, joined))
        if joined:
            rooms.add(command.room)
        else:
            rooms.discard(command.room)
    return Replay(rooms, events, last, changes)


def _targets(sid: Sid, rooms: set[Room], command: SocketsCommand) -> bool:
    if command.sockets:
        return sid in command.sockets
    return _selects(sid, rooms, command.rooms, command.exclude)


# Scripts. KEYS and ARGV are documented above each; every write to a session record is
# conditional on the writer owning it.

# KEYS: one stream per command. ARGV: maxlen, minid, then one wire batch per command.
# Returns the entry ids, in order.
_APPEND = """
local ids = {}
for i, key in ipairs(KEYS) do
  ids[i] = redis.call('XADD', key, 'MAXLEN', '~', ARGV[1], '*', 'c', ARGV[i + 2])
  redis.call('XTRIM', key, 'MINID', '~', ARGV[2])
end
return ids
"""

# The same, then publishes messages in the same atomic step, so that every subscriber
# receives them in log order (a standalone Redis runs one script at a time and queues
# pub/sub messages to a connection in the order it ran them). ARGV: maxlen, minid ("":
# do not trim by age this time),
# number of commands n, n wire batches, then per message: channel, "p" (PUBLISH) or "s"
# (SPUBLISH), the message without its closing brace, the 1-based indexes of the commands
# it carries ("1,3"). Each message gets a member "offsets": their ids. Returns the ids,
# then each message's receiver count.
APPEND_PUBLISH = """
local n = tonumber(ARGV[3])
local out = {}
for i = 1, n do
  out[i] = redis.call('XADD', KEYS[i], 'MAXLEN', '~', ARGV[1], '*', 'c', ARGV[i + 3])
  if ARGV[2] ~= '' then redis.call('XTRIM', KEYS[i], 'MINID', '~', ARGV[2]) end
end
for j = n + 4, #ARGV, 4 do
  local ids = {}
  for k in string.gmatch(ARGV[j + 3], '%d+') do
    ids[#ids + 1] = '"' .. out[tonumber(k)] .. '"'
  end
  local message = ARGV[j + 2] .. ',"offsets":[' .. table.concat(ids, ',') .. ']}'
  local verb = 'PUBLISH'
  if ARGV[j + 1] == 's' then verb = 'SPUBLISH' end
  out[#out + 1] = redis.call(verb, ARGV[j], message)
end
return out
"""
APPEND_PUBLISH_SHA: Final = hashlib.sha1(APPEND_PUBLISH.encode()).hexdigest().encode()

# APPEND_PUBLISH for one command in one message (every API emit, join and leave): the
# same effect and reply ({id, receivers}) without the loops and the id list, which cost
# Redis ~10-15% of the script one call at a time (57.5-62 -> 48-56 us of redis-server
# CPU per call in four pairs, both without XTRIM, 2 vCPU).
# KEYS[1]: the log. ARGV: maxlen, minid ("": no age trim), the entry, the channel, "p"
# or "s", the message without its closing brace and with ',"offsets":["' appended.
APPEND_PUBLISH_ONE = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'c', ARGV[3])
if ARGV[2] ~= '' then redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[2]) end
local verb = 'PUBLISH'
if ARGV[5] == 's' then verb = 'SPUBLISH' end
return {id, redis.call(verb, ARGV[4], ARGV[6] .. id .. '"]}')}
"""
APPEND_PUBLISH_ONE_SHA: Final = hashlib.sha1(APPEND_PUBLISH_ONE.encode()).hexdigest().encode()
_ONE_HEAD: Final = resp.head(10, b"EVALSHA", APPEND_PUBLISH_ONE_SHA, b"1")
_ONE_REST: Final = b"$%d\r\n%b\r\n" * 5 + b"$1\r\n%b\r\n" + b"$%d\r\n%b\r\n"

# KEYS[1]: the record. ARGV: node, ttl ms, then field/value pairs. Creates a live
# record, or updates one the node owns (a parked one stays parked, with its expiry).
_SAVE = """
local owner = redis.call('HGET', KEYS[1], 'node')
if owner and owner ~= ARGV[1] then return 0 end
local state = redis.call('HGET', KEYS[1], 'state')
redis.call('HSET', KEYS[1], 'node', ARGV[1], unpack(ARGV, 3))
if not state then
  redis.call('HSET', KEYS[1], 'state', 'live')
  state = 'live'
end
if state == 'live' then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""

# KEYS[1]: the record. ARGV: node, ttl ms, parked_at, written ("": none). The owner's
# socket lost its transport.
_PARK = """
if redis.call('HGET', KEYS[1], 'node') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'parked', 'parked_at', ARGV[3], 'written', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS[1]: the record. ARGV: node. The owner ended the session for good.
_END = """
if redis.call('HGET', KEYS[1], 'node') ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""

# KEYS[1]: the record. ARGV: namespace, user (JSON), new node, ttl ms. Takes the record
# for the new node, whatever its state (the old node may not have noticed the loss yet,
# or may be dead); returns {old node, old state, gen, then the record's fields} or nil
# when there is no such record or it is another namespace's or user's.
_CLAIM = """
local r = redis.call('HGETALL', KEYS[1])
if #r == 0 then return nil end
local h = {}
for i = 1, #r, 2 do h[r[i]] = r[i + 1] end
if h['ns'] ~= ARGV[1] or h['user'] ~= ARGV[2] then return nil end
local gen = redis.call('HINCRBY', KEYS[1], 'gen', 1)
redis.call('HSET', KEYS[1], 'node', ARGV[3], 'state', 'live')
redis.call('HDEL', KEYS[1], 'parked_at', 'written')
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {h['node'] or '', h['state'] or '', gen, unpack(r)}
"""


@dataclass(frozen=True, slots=True)
class Outbound:
    """A wire message to publish with :meth:`RedisRecoveryLog.append_and_publish`."""

    channel: str
    sharded: bool
    # A wire message (siogate.broker.wire), a JSON object.
    message: bytes
    # Indexes (0-based, into the appended commands) of the commands it carries, in order.
    carries: tuple[int, ...]


def offsets_of(obj: dict[str, Any], count: int) -> list[str] | None:
    """The ``offsets`` member of a decoded wire message: one stream id per command it
    carries; None when it has none (a node without recovery sent it). Raises
    :class:`~siogate.broker.wire.WireError` when it is malformed."""
    offsets = obj.get("offsets")
    if offsets is None:
        return None
    if (
        not isinstance(offsets, list)
        or len(offsets) != count
        or not all(parse_offset(o) is not None for o in offsets)
    ):
        raise wire.WireError("'offsets' must be one stream id per command")
    return offsets


def split_append_reply(reply: Any, count: int) -> tuple[list[str], list[int]]:
    """The reply of :data:`APPEND_PUBLISH` for ``count`` commands: their offsets, then
    each message's receiver count."""
    return [_text(i) for i in reply[:count]], [int(c) for c in reply[count:]]


@dataclass(frozen=True, slots=True)
class Claimed:
    session: Session
    # The node that held the socket, and whether it had noticed the loss ("parked") or
    # not ("live": tell it to let go).
    previous_node: str
    previous_state: str
    gen: int


class RecoveryLog(abc.ABC):
    """The command log and the session records as a node uses them: in Redis
    (:class:`RedisRecoveryLog`), or kept by the workers' relay in the primary
    (:mod:`siogate.broker.relay_log`). Both follow the rules of the module docstring;
    :meth:`recover` is built on the other operations and is the same for both."""

    node: str
    window: float
    max_missed: int

    @abc.abstractmethod
    async def last_offset(self, namespace: str) -> str:
        """The newest offset of the log ("0-0" if it has none yet)."""

    @abc.abstractmethod
    async def entries_after(
        self, namespace: str, offset: str, *, check: bool = True
    ) -> list[tuple[str, Command]]:
        """The log after ``offset``, oldest first (:class:`Gap`, :class:`Overflow`)."""

    @abc.abstractmethod
    async def save(self, pid: str, session: Session) -> bool:
        """Write a live record; False when another node has claimed the socket since."""

    @abc.abstractmethod
    async def park(
        self, pid: str, parked_at: str | None = None, written: str | None = None
    ) -> bool:
        """Keep the record for the window; False when another node has claimed it."""

    @abc.abstractmethod
    async def end(self, pid: str) -> bool:
        """The session ended for good (on this node, its owner)."""

    @abc.abstractmethod
    async def claim(self, pid: object, namespace: str, user: str | None) -> Claimed | None:
        """Take the record named by a client's ``pid`` for this node."""

    @abc.abstractmethod
    async def room_history(
        self, namespace: str, room: str, since: str | None, limit: int
    ) -> tuple[list[tuple[str, EmitCommand]], bool] | None:
        """Emits to ``room`` in the log, oldest first, and whether they are complete."""

    async def recover(
        self, pid: object, offset: object, namespace: str, user: str | None
    ) -> tuple[Claimed, Replay] | None:
        """Claim the socket ``pid`` names and compute what it missed after ``offset``
        (None: the client's last offset was none, from the socket's start); None when it
        cannot be recovered whole (then the client gets a new socket)."""
        if offset is not None:
            point = parse_offset(offset)
            if point is None or point > _point(await self.last_offset(namespace)):
                return None  # not an offset, or one not handed out yet: claim nothing
        claimed = await self.claim(pid, namespace, user)
        if claimed is None:
            return None
        session = claimed.session
        seen = session.since if offset is None else offset
        assert isinstance(seen, str)
        start = min(seen, session.at, key=_point)
        parked_at, written = session.parked_at, session.written
        if parked_at is not None and (written is None or _point(seen) >= _point(written)):
            # The client got everything its node wrote to it before the loss was
            # noticed: nothing before that point is missing (the log may have been
            # trimmed there since, for a socket that was quiet a long time).
            if _point(parked_at) > _point(start):
                start = parked_at
            if _point(parked_at) > _point(seen):
                seen = parked_at
        try:
            entries = await self.entries_after(namespace, start)
            replay = plan(session, start, seen, entries, self.max_missed)
        except (Gap, Overflow, wire.WireError):
            replay = None
        if replay is None:
            # The client goes on with a new socket: the old session ends here (its
            # owner now), so no other node keeps it for the rest of the window.
            await self.end(pid)  # type: ignore[arg-type]
            return None
        return claimed, replay


LetGo = Callable[[Namespace, Sid], None]
"""Told that another node recovered one of this node's sockets (it must drop it
without a word: no webhook, the session goes on elsewhere)."""


def let_go_message(node: str, namespace: Namespace, sid: Sid) -> dict[str, Any]:
    """What a node publishes to tell ``node`` that it took ``sid`` over."""
    return {"letgo": {"to": node, "ns": namespace, "sid": sid}}


def told_to_let_go(body: Any, node: str, let_go: LetGo | None) -> None:
    """Call ``let_go`` if ``body`` (a message's ``letgo`` member) is meant for ``node``."""
    if not isinstance(body, dict) or body.get("to") != node:
        return
    ns, sid = body.get("ns"), body.get("sid")
    if isinstance(ns, str) and isinstance(sid, str) and let_go is not None:
        let_go(Namespace(ns), Sid(sid))


# Request ids of a node's own messages: 16 hex digits, unique within the process (the
# node id, which the message starts with, tells nodes apart). A counter from a random
# start rather than secrets.token_hex: that is a getrandom call per publish.
_REQUESTS: Final = itertools.count(secrets.randbits(64))
_REQUEST_MASK: Final = (1 << 64) - 1


def own_message(node: str, commands: Sequence[Command]) -> tuple[str, bytes, bytes]:
    """What a logged broker publishes for ``commands``: a request id, the commands' wire
    batch (also the log entry of a lone command), and the message, the batch with the
    request id by which the publisher knows its own echo."""
    request = "%016x" % (next(_REQUESTS) & _REQUEST_MASK)
    data = wire.encode_commands(node, commands)
    return request, data, data[:-1] + b',"req":"' + request.encode() + b'"}'


def decode_logged(data: bytes) -> tuple[dict[str, Any], list[Command] | None]:
    """A message of a logged broker: (the message, its commands with their offsets set),
    or (the message, None) for a let-go notice (see :func:`told_to_let_go`). Raises
    :class:`~siogate.broker.wire.WireError` when it is malformed."""
    message = wire.decode(data)
    if "letgo" in message:
        return message, None
    commands = wire.decode_commands(message)
    offsets = offsets_of(message, len(commands))
    if offsets is not None:
        commands = [with_offset(c, o) for c, o in zip(commands, offsets, strict=True)]
    return message, commands


def apply_logged(
    handler: Callable[[Sequence[Command]], None] | None,
    commands: Sequence[Command],
    future: asyncio.Future[list[str]] | None,
) -> None:
    """Apply logged ``commands``; ``future``, for the node's own, gets their offsets (or
    what applying them raised)."""
    try:
        if handler is not None:
            handler(commands)
    except Exception as exc:
        logger.exception("applying a logged message failed")
        if future is not None and not future.done():
            future.set_exception(exc)
        return
    if future is not None and not future.done():
        future.set_result([c.offset or "" for c in commands])


class LoggedBroker(Protocol):
    """A broker whose every command goes through a :class:`RecoveryLog` (with Redis:
    :mod:`siogate.broker.recovering`; between workers: :mod:`siogate.broker.recovering_local`)."""

    let_go: LetGo | None
    applied_out_of_order: int

    @property
    def log(self) -> RecoveryLog | None: ...

    async def publish_logged(self, commands: Sequence[Command]) -> list[str]:
        """Publish through the log; the commands' offsets, once applied on this node."""
        ...

    def tell_let_go(self, node: str, namespace: Namespace, sid: Sid) -> None:
        """Tell ``node`` that this node took ``sid`` over."""
        ...


class RedisRecoveryLog(RecoveryLog):
    """The command log and session records in Redis (see the module docstring)."""

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str,
        node: str,
        window: float,
        log_age: float | None = None,
        max_log: int = 1_000_000,
        live_ttl: float = 86_400.0,
        scan_limit: int = 100_000,
        max_missed: int = 10_000,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self.node = node
        self.window = window
        # How long log entries are kept (the window, or longer for room history).
        self.log_age = max(window, log_age or 0.0)
        self.max_log = max_log
        self.live_ttl = live_ttl
        self.scan_limit = scan_limit
        self.max_missed = max_missed
        self._trimmed_at = 0
        self._append = redis.register_script(_APPEND)
        self._append_publish = redis.register_script(APPEND_PUBLISH)
        self._save = redis.register_script(_SAVE)
        self._park = redis.register_script(_PARK)
        self._end = redis.register_script(_END)
        self._claim = redis.register_script(_CLAIM)

    def log_key(self, namespace: str) -> str:
        # One log for every namespace: one order that every node follows, so a node's
        # position in it is one offset (a namespace's entries are filtered on replay).
        return f"{self._prefix}:rlog"

    def session_key(self, pid: str) -> str:
        return f"{self._prefix}:rsess:{pid}"

    # The log

    async def append(self, commands: Sequence[Command], now_ms: int) -> list[str]:
        """Log ``commands`` (one entry each, in order, in one script); their offsets."""
        if not commands:
            return []
        keys = [self.log_key(c.namespace) for c in commands]
        args: list[Any] = [self.max_log, self._age_bound(now_ms)]
        args += [wire.encode_commands("", [c]) for c in commands]
        ids = await self._append(keys=keys, args=args)
        return [_text(i) for i in ids]

    async def append_and_publish(
        self,
        commands: Sequence[Command],
        messages: Sequence[Outbound],
        now_ms: int,
        entries: Sequence[bytes] | None = None,
    ) -> tuple[list[str], list[int]]:
        """Log ``commands`` and publish ``messages`` in one atomic step: every subscriber
        gets the messages in log order, each with the offsets of the commands it
        carries (member ``offsets``, see :func:`offsets_of`). The commands' offsets and
        each message's receiver count. ``entries``: the commands already encoded as
        one-command wire batches (any sender), to save encoding them again."""
        keys, args = self._append_publish_args(commands, messages, now_ms, entries)
        reply = await self._append_publish(keys=keys, args=args)
        return split_append_reply(reply, len(commands))

    def pack_append_publish(
        self,
        commands: Sequence[Command],
        messages: Sequence[Outbound],
        now_ms: int,
        entries: Sequence[bytes] | None = None,
    ) -> tuple[bytes, str]:
        """:meth:`append_and_publish` as a packed ``EVALSHA``, for a caller that
        pipelines it with other commands (the broker's publish queue), and the script's
        text (to load it on ``NOSCRIPT``); its reply goes through
        :func:`split_append_reply`."""
        if len(commands) == 1 and len(messages) == 1 and entries is not None:
            message = messages[0]
            if message.carries == (0,) and message.message.endswith(b"}"):
                # Every one-command publish: its own script, one format call.
                packed = self._pack_one(commands[0], message, now_ms, entries[0])
                return packed, APPEND_PUBLISH_ONE
        return self._pack_any(commands, messages, now_ms, entries), APPEND_PUBLISH

    def _pack_any(
        self,
        commands: Sequence[Command],
        messages: Sequence[Outbound],
        now_ms: int,
        entries: Sequence[bytes] | None,
    ) -> bytes:
        keys, args = self._append_publish_args(commands, messages, now_ms, entries)
        parts = [b"EVALSHA", APPEND_PUBLISH_SHA, b"%d" % len(keys)]
        parts += [k.encode() for k in keys]
        parts += [a if isinstance(a, bytes) else str(a).encode() for a in args]
        return b"*%d\r\n" % len(parts) + b"".join(resp.bulk(p) for p in parts)

    def _pack_one(self, command: Command, message: Outbound, now_ms: int, entry: bytes) -> bytes:
        key = self.log_key(command.namespace).encode()
        maxlen = b"%d" % self.max_log
        minid = self._minid(now_ms).encode()
        channel = message.channel.encode()
        head = message.message[:-1] + b',"offsets":["'
        return _ONE_HEAD + _ONE_REST % (
            len(key), key, len(maxlen), maxlen, len(minid), minid, len(entry), entry,
            len(channel), channel, b"s" if message.sharded else b"p", len(head), head,
        )  # fmt: skip

    def _append_publish_args(
        self,
        commands: Sequence[Command],
        messages: Sequence[Outbound],
        now_ms: int,
        entries: Sequence[bytes] | None,
    ) -> tuple[list[str], list[Any]]:
        keys = [self.log_key(c.namespace) for c in commands]
        args: list[Any] = [self.max_log, self._minid(now_ms), len(commands)]
        if entries is None:
            entries = [wire.encode_commands("", [c]) for c in commands]
        assert len(entries) == len(commands)
        args += entries
        for m in messages:
            if not m.message.endswith(b"}") or not all(0 <= i < len(commands) for i in m.carries):
                raise ValueError("a message must be a wire object carrying logged commands")
            args += [
                m.channel,
                "s" if m.sharded else "p",
                m.message[:-1],
                ",".join(str(i + 1) for i in m.carries),
            ]
        return keys, args

    def _minid(self, now_ms: int) -> str:
        """The age trim's bound for an append at ``now_ms``, or "" (no trim) when this
        node trimmed less than a second ago: the log keeps up to a second more than
        its age, and a publish saves the ``XTRIM`` (about 1.5 us of Redis's CPU each,
        measured pipelined; the log script costs ~12 us against ~3.5 for a PUBLISH)."""
        if now_ms - self._trimmed_at < 1000:
            return ""
        self._trimmed_at = now_ms
        return self._age_bound(now_ms)

    def _age_bound(self, now_ms: int) -> str:
        """The oldest id the log keeps at ``now_ms`` (``MINID``): now minus its age."""
        return f"{max(0, now_ms - int(self.log_age * 1000))}-0"

    async def last_offset(self, namespace: str) -> str:
        """The newest offset of ``namespace``'s log ("0-0" if it has none yet): where a
        socket that connects now starts."""
        info = await self._info(namespace)
        return info[0]

    async def _info(self, namespace: str) -> tuple[str, str | None]:
        """(last generated id, first kept id if any entry was ever trimmed) of a log.

        Only trimming removes entries (never XDEL), so entries after an offset at or
        past the first kept one are all there; before it, some may be gone.
        """
        key = self.log_key(namespace)
        if not await self._redis.exists(key):
            return "0-0", None
        raw = {_text(k): v for k, v in (await self._redis.xinfo_stream(key)).items()}
        last = _text(raw.get("last-generated-id", "0-0"))
        first = _text(raw.get("recorded-first-entry-id", "0-0"))
        added, length = raw.get("entries-added"), raw.get("length")
        if parse_offset(last) is None or parse_offset(first) is None:
            raise ValueError("the log's stream info is not what Redis 7 writes")
        if not isinstance(added, int) or not isinstance(length, int):
            raise ValueError("the log's stream info is not what Redis 7 writes")
        return last, (first if added > length else None)

    def _gap(self, point: tuple[int, int], first: str | None) -> bool:
        return first is not None and point < _point(first)

    async def entries_after(
        self, namespace: str, offset: str, *, check: bool = True
    ) -> list[tuple[str, Command]]:
        """The log after ``offset``, oldest first, checked; at most ``scan_limit``
        entries (:class:`Overflow` past that). Raises :class:`Gap` when entries after
        ``offset`` were trimmed, or ``offset`` is not an offset of this log yet (not
        with ``check`` False: what is kept)."""
        point = parse_offset(offset)
        if point is None:
            raise Gap("not an offset")
        last, first = await self._info(namespace)
        if point > _point(last):
            raise Gap("an offset this log has not handed out")
        if check and self._gap(point, first):
            raise Gap("entries after the offset may have been trimmed")
        out: list[tuple[str, Command]] = []
        after = "(" + offset
        while True:
            page: list[Any] = list(
                await self._redis.xrange(self.log_key(namespace), after, "+", count=PAGE) or []
            )
            for raw_id, fields in page:
                entry_id = _text(raw_id)
                if len(out) >= self.scan_limit:
                    raise Overflow(f"more than {self.scan_limit} log entries to scan")
                out.append((entry_id, _entry(fields)))
            if len(page) < PAGE:
                break
            after = "(" + _text(page[-1][0])
        # Trimmed while it was read: the first entries may be gone.
        if check and self._gap(point, (await self._info(namespace))[1]):
            raise Gap("entries after the offset were trimmed while they were read")
        return out

    # Session records

    async def save(self, pid: str, session: Session) -> bool:
        """Write a live record (at connect, after each room change); False when another
        node has claimed the socket since."""
        ttl = int(self.live_ttl * 1000)
        pairs = [x for kv in session.to_fields().items() for x in kv]
        return bool(await self._save(keys=[self.session_key(pid)], args=[self.node, ttl, *pairs]))

    async def park(
        self, pid: str, parked_at: str | None = None, written: str | None = None
    ) -> bool:
        """The socket lost its transport: keep its record for the window; False when
        another node has claimed it (it recovered there: do not end it here).
        ``parked_at``: the offset this node had applied; ``written``: the last offset
        it wrote to the socket (None: none since it connected)."""
        ttl = max(1, int(self.window * 1000))
        args: list[str | int] = [self.node, ttl, parked_at or "", written or ""]
        return bool(await self._park(keys=[self.session_key(pid)], args=args))

    async def end(self, pid: str) -> bool:
        """The session ended for good (on this node, its owner)."""
        return bool(await self._end(keys=[self.session_key(pid)], args=[self.node]))

    async def claim(self, pid: object, namespace: str, user: str | None) -> Claimed | None:
        """Take the record named by a client's ``pid`` for this node; None when there is
        none (past the window, never was) or it is not this namespace's and user's."""
        if not isinstance(pid, str) or not 16 <= len(pid) <= 64:
            return None
        ttl = int(self.live_ttl * 1000)
        reply = await self._claim(
            keys=[self.session_key(pid)], args=[namespace, json.dumps(user), self.node, ttl]
        )
        if reply is None:
            return None
        if not isinstance(reply, list) or len(reply) < 3 or len(reply) % 2 == 0:
            return None
        previous, state, gen = _text(reply[0]), _text(reply[1]), reply[2]
        raw = {_text(reply[i]): _text(reply[i + 1]) for i in range(3, len(reply), 2)}
        session = Session.from_fields(raw)
        if session is None or not isinstance(gen, int):
            return None
        return Claimed(session, previous, state, gen)

    async def room_history(
        self, namespace: str, room: str, since: str | None, limit: int
    ) -> tuple[list[tuple[str, EmitCommand]], bool] | None:
        """Emits to ``room`` (named in the emit) of ``namespace`` in the log, oldest
        first, and whether they are complete; None when ``since`` is not an offset of
        this log. With ``since``: the first ``limit`` after it; without: the last
        ``limit``. Reads at most ``scan_limit`` entries (then: not complete)."""
        key = self.log_key(namespace)
        last, first = await self._info(namespace)
        point = None
        if since is not None:
            point = parse_offset(since)
            if point is None or point > _point(last):
                return None
        found: list[tuple[str, EmitCommand]] = []
        scanned, exhausted = 0, False
        bound = "-" if since is None else "(" + since
        cursor = "+"
        while len(found) < limit + 1 and scanned < self.scan_limit:
            if since is None:
                page = list(await self._redis.xrevrange(key, cursor, bound, count=PAGE) or [])
            else:
                page = list(await self._redis.xrange(key, bound, "+", count=PAGE) or [])
            for raw_id, fields in page:
                scanned += 1
                command = _entry(fields)
                if (
                    isinstance(command, EmitCommand)
                    and command.namespace == namespace
                    and room in command.rooms
                ):
                    found.append((_text(raw_id), command))
            if len(page) < PAGE:
                exhausted = True
                break
            if since is None:
                cursor = "(" + _text(page[-1][0])
            else:
                bound = "(" + _text(page[-1][0])
        if since is None:
            found.reverse()
            cut = len(found) > limit
            kept = found[-limit:]
            # Complete: the whole log was read and nothing was ever trimmed from it.
            return kept, exhausted and first is None and not cut
        assert point is not None
        cut = len(found) > limit
        return found[:limit], exhausted and not self._gap(point, first) and not cut

    @property
    def redis(self) -> Redis:
        return self._redis

    async def aclose(self) -> None:
        await self._redis.aclose()

    # Costs (benchmarks, metrics)

    async def log_length(self, namespace: str) -> int:
        return int(await self._redis.xlen(self.log_key(namespace)))


class Gap(Exception):
    """The log cannot serve everything after an offset."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry(fields: Any) -> Command:
    if not isinstance(fields, dict):
        raise wire.WireError("a log entry without fields")
    data = fields.get(b"c", fields.get("c"))
    if not isinstance(data, bytes | str):
        raise wire.WireError("a log entry without a command")
    return decode_entry(data.encode() if isinstance(data, str) else data)


def decode_entry(raw: bytes) -> Command:
    """A log entry (a one-command wire batch) back to its command, checked."""
    commands = wire.decode_commands(wire.decode(raw))
    if len(commands) != 1:
        raise wire.WireError("a log entry holds one command")
    return commands[0]
