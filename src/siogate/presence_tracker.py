"""Presence transitions: a user's first socket (``user.online``) and last (``user.offline``).

The node reports each socket of a known user (JWT ``sub``) that connects to or leaves a
namespace; the tracker calls its ``notify`` callback when the user's socket count in
that namespace, cluster-wide, goes from 0 to 1 or back to 0. Presence is per namespace,
as the presence queries (:mod:`siogate.presence`) are.

Two implementations behind :class:`PresenceTracker`:

* :class:`MemoryPresenceTracker`: one process; counts in a dict.
* :class:`RedisPresenceTracker`: a cluster. Redis holds, per (namespace, user), a hash
  ``<prefix>:presence:<member>`` (field: node id, value: that node's socket count) and,
  per node, the set ``<prefix>:presence-node:<node>`` of members it counts; ``<member>``
  is the JSON ``[namespace, user]``. A Lua script applies a node's changes and returns
  the transitions of the cluster-wide total, so exactly one node (the one whose change
  crossed 0) sends each webhook. A node killed without cleaning up is reaped by any live
  node once it has left the broker's registry: another script, atomic and a no-op for a
  node that is (again) alive, removes its counts and returns the users left with none.
  Only the first reaper finds anything to remove, so each ``user.offline`` is sent once.

This node's own counts are authoritative: the Redis side is a copy, rewritten whole (a
"sync") whenever a change could not be written, or after another node reaped this one
(its registration lapsed, say during a Redis outage, while its sockets stayed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Callable
from typing import Any, Literal, Protocol

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .types import Namespace, UserId

logger = logging.getLogger("siogate.presence")

Transition = Literal["user.online", "user.offline"]
Notify = Callable[[Transition, Namespace, UserId], None]
"""Called once per cluster-wide transition, on the node that observed it."""

# Seconds a Redis round trip may take (as the broker's connections).
SOCKET_TIMEOUT = 2.0
# Changes written in one script call.
BATCH = 500
# Seconds between retries while Redis is unreachable (doubling, with jitter).
BACKOFF_MIN = 0.1
BACKOFF_MAX = 5.0
# Milliseconds the "you were reaped" mark of a node is kept for it to find.
REAPED_MARK_TTL = 3_600_000


class PresenceTracker(Protocol):
    """Counts sockets per (namespace, user) and reports 0 <-> 1 transitions."""

    async def start(self, notify: Notify) -> None:
        """Begin; ``notify`` is called for each transition from now on."""

    def add(self, namespace: Namespace, user: UserId) -> None:
        """A socket of ``user`` joined ``namespace`` on this node."""

    def remove(self, namespace: Namespace, user: UserId) -> None:
        """A socket of ``user`` left ``namespace`` on this node."""

    async def close(self) -> None:
        """Write what is pending, drop this node's counts (reporting the users left with
        none) and stop."""


class MemoryPresenceTracker:
    """One process: the transitions of a dict of counts."""

    def __init__(self) -> None:
        self._counts: dict[tuple[Namespace, UserId], int] = {}
        self._notify: Notify | None = None

    async def start(self, notify: Notify) -> None:
        self._notify = notify

    def add(self, namespace: Namespace, user: UserId) -> None:
        key = (namespace, user)
        count = self._counts.get(key, 0) + 1
        self._counts[key] = count
        if count == 1 and self._notify is not None:
            self._notify("user.online", namespace, user)

    def remove(self, namespace: Namespace, user: UserId) -> None:
        key = (namespace, user)
        count = self._counts.get(key, 0) - 1
        if count > 0:
            self._counts[key] = count
            return
        if self._counts.pop(key, None) is not None and self._notify is not None:
            self._notify("user.offline", namespace, user)

    async def close(self) -> None:
        for namespace, user in list(self._counts):
            self.remove(namespace, user)
        self._notify = None


class PresenceCounts:
    """Counts per (namespace, user) and node, kept by one process for several: the
    primary of ``serve --workers`` without Redis (:mod:`siogate.supervisor`). Each
    worker sends its changes; the transitions of the total go back to the worker whose
    change crossed 0, so each is reported once. A worker that is gone is dropped whole;
    the users it leaves with no socket wait in :attr:`orphans` for a live worker to
    report."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], dict[str, int]] = {}
        self._members: dict[str, set[tuple[str, str]]] = {}
        self.orphans: list[tuple[Transition, str, str]] = []

    def apply(
        self, node: str, changes: list[tuple[str, str, int]]
    ) -> list[tuple[Transition, str, str]]:
        out: list[tuple[Transition, str, str]] = []
        mine = self._members.setdefault(node, set())
        for namespace, user, delta in changes:
            key = (namespace, user)
            per_node = self._counts.setdefault(key, {})
            # Only positive counts are kept: online is "some node has one".
            was_online = bool(per_node)
            count = per_node.get(node, 0) + delta
            if count > 0:
                per_node[node] = count
                mine.add(key)
            else:
                per_node.pop(node, None)
                mine.discard(key)
            if not per_node:
                del self._counts[key]
            if not was_online and per_node:
                out.append(("user.online", namespace, user))
            elif was_online and not per_node:
                out.append(("user.offline", namespace, user))
        if not mine:
            del self._members[node]
        return out

    def drop(self, node: str) -> list[tuple[Transition, str, str]]:
        """Forget ``node``'s counts; the users left with no socket anywhere."""
        out: list[tuple[Transition, str, str]] = []
        for key in sorted(self._members.pop(node, ())):
            per_node = self._counts.get(key)
            if per_node is None or per_node.pop(node, None) is None:
                continue
            if not per_node:
                del self._counts[key]
                out.append(("user.offline", *key))
        return out


# KEYS[1]: this node's member set, KEYS[2]: the set of nodes with counts.
# ARGV[1]: hash key prefix, ARGV[2]: node id, ARGV[3]: "add" (deltas, in order) or "set"
# (this node's whole state: members not listed have no socket here), then member, number
# pairs. Returns a flat list: 1 (online) or 0 (offline), member; in the order applied.
_APPLY = """
local node = ARGV[2]
local out = {}
local function apply(member, value, mode)
  local key = ARGV[1] .. member
  local old = tonumber(redis.call('HGET', key, node) or '0')
  local before = 0
  for _, v in ipairs(redis.call('HVALS', key)) do before = before + tonumber(v) end
  local new = value
  if mode == 'add' then new = old + value end
  if new < 0 then new = 0 end
  if new == 0 then
    redis.call('HDEL', key, node)
    redis.call('SREM', KEYS[1], member)
  else
    redis.call('HSET', key, node, new)
    redis.call('SADD', KEYS[1], member)
  end
  local after = before - old + new
  if before == 0 and after > 0 then
    table.insert(out, 1)
    table.insert(out, member)
  elseif before > 0 and after == 0 then
    table.insert(out, 0)
    table.insert(out, member)
  end
end
if ARGV[3] == 'set' then
  local given = {}
  for i = 4, #ARGV, 2 do given[ARGV[i]] = true end
  for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    if not given[m] then apply(m, 0, 'set') end
  end
end
for i = 4, #ARGV, 2 do apply(ARGV[i], tonumber(ARGV[i + 1]), ARGV[3]) end
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('SADD', KEYS[2], node)
else
  redis.call('SREM', KEYS[2], node)
end
return out
"""

# KEYS[1]: the node registry (sorted set, score: Redis time its registration expires),
# KEYS[2]: the dead node's member set, KEYS[3]: the set of nodes with counts,
# KEYS[4]: the dead node's "reaped" mark. ARGV[1]: hash key prefix, ARGV[2]: dead node
# id, ARGV[3]: the mark's TTL (ms). Returns the members left with no socket anywhere;
# nothing when the node is alive (registered and not expired).
_REAP = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local score = redis.call('ZSCORE', KEYS[1], ARGV[2])
if score and tonumber(score) > now then return {} end
local out = {}
local members = redis.call('SMEMBERS', KEYS[2])
for _, m in ipairs(members) do
  local key = ARGV[1] .. m
  if redis.call('HDEL', key, ARGV[2]) == 1 then
    local total = 0
    for _, v in ipairs(redis.call('HVALS', key)) do total = total + tonumber(v) end
    if total == 0 then table.insert(out, m) end
  end
end
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[3], ARGV[2])
if #members > 0 then redis.call('SET', KEYS[4], '1', 'PX', ARGV[3]) end
return out
"""


def _member(namespace: str, user: str) -> str:
    return json.dumps([namespace, user], ensure_ascii=False, separators=(",", ":"))


def _unmember(data: bytes | str) -> tuple[Namespace, UserId] | None:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(value, list) or len(value) != 2 or not all(isinstance(v, str) for v in value):
        return None
    return Namespace(value[0]), UserId(value[1])


class RedisPresenceTracker:
    """Cluster-wide counts in Redis; see the module docstring."""

    def __init__(self, url: str, *, prefix: str, node_id: str, node_ttl: float) -> None:
        self.node_id = node_id
        self._url = url
        self._ttl = node_ttl
        self._hash_prefix = f"{prefix}:presence:"
        self._node_set_prefix = f"{prefix}:presence-node:"
        self._nodes_with_counts = f"{prefix}:presence-nodes"
        self._reaped_prefix = f"{prefix}:presence-reaped:"
        # The broker's registry (see siogate.broker.redis).
        self._registry = f"{prefix}:nodes"
        self._counts: dict[str, int] = {}
        # Changes not written yet, in order: (member, +1 or -1).
        self._queue: list[tuple[str, int]] = []
        # True: Redis may differ from _counts; the next write is a whole sync.
        self._dirty = False
        self._wake = asyncio.Event()
        self._notify: Notify | None = None
        self._redis: Redis | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    async def start(self, notify: Notify) -> None:
        self._notify = notify
        self._redis = Redis.from_url(
            self._url,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=SOCKET_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
        )
        # Connected now rather than on the first socket's write (tens of ms later).
        with contextlib.suppress(RedisError, OSError):
            await self._redis.ping()
        self._tasks = [
            asyncio.create_task(self._write_forever(), name="siogate-presence-writer"),
            asyncio.create_task(self._reap_forever(), name="siogate-presence-reaper"),
        ]

    def add(self, namespace: Namespace, user: UserId) -> None:
        self._change(_member(namespace, user), 1)

    def remove(self, namespace: Namespace, user: UserId) -> None:
        self._change(_member(namespace, user), -1)

    def _change(self, member: str, delta: int) -> None:
        count = self._counts.get(member, 0) + delta
        if count > 0:
            self._counts[member] = count
        elif self._counts.pop(member, None) is None:
            return  # a leave never counted (cannot happen; ignored rather than sent)
        if not self._dirty:
            self._queue.append((member, delta))
        self._wake.set()

    async def close(self) -> None:
        self._closing = True
        writer = self._tasks[0] if self._tasks else None
        if writer is not None:
            # Let the writer flush what the closed sessions left queued.
            self._wake.set()
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(writer), SOCKET_TIMEOUT * 2)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._redis is not None:
            # Whatever this node still counted is gone with it.
            self._counts.clear()
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                async with asyncio.timeout(SOCKET_TIMEOUT):
                    self._report(await self._apply("set", []))
            await self._redis.aclose()
        self._notify = None

    # Writing this node's changes

    async def _write_forever(self) -> None:
        delay = BACKOFF_MIN
        while True:
            if not self._queue and not self._dirty:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                if self._dirty:
                    # Taken before the await: later changes queue behind this state.
                    state = list(self._counts.items())
                    self._dirty = False
                    self._queue.clear()
                    self._report(await self._apply("set", state))
                else:
                    batch = self._queue[:BATCH]
                    del self._queue[:BATCH]
                    self._report(await self._apply("add", batch))
                delay = BACKOFF_MIN
            except (RedisError, OSError) as exc:
                logger.warning("presence: Redis write failed (%s); will resync", exc)
                self._resync()
                if self._closing:
                    return
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, BACKOFF_MAX)

    async def _apply(self, mode: str, pairs: list[tuple[str, int]]) -> list[Any]:
        assert self._redis is not None
        args: list[str | int] = [self._hash_prefix, self.node_id, mode]
        for member, value in pairs:
            args += [member, value]
        keys = [self._node_set_prefix + self.node_id, self._nodes_with_counts]
        result = await self._redis.eval(_APPLY, len(keys), *keys, *args)
        return list(result)

    def _report(self, flat: list[Any]) -> None:
        for i in range(0, len(flat) - 1, 2):
            kind: Transition = "user.online" if int(flat[i]) == 1 else "user.offline"
            self._send(kind, flat[i + 1])

    def _send(self, kind: Transition, data: bytes | str) -> None:
        parsed = _unmember(data)
        if parsed is None:
            logger.warning("presence: ignored a malformed member %r", data)
            return
        if self._notify is not None:
            self._notify(kind, *parsed)

    # Reaping nodes that left without cleaning up

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self._ttl / 3 * random.uniform(0.8, 1.2))
            try:
                await self._reap_once()
            except (RedisError, OSError) as exc:
                logger.warning("presence: reaping failed (%s); will resync", exc)
                # Redis may come back empty (restarted) without a write of ours failing.
                self._resync()

    def _resync(self) -> None:
        self._dirty = True
        self._queue.clear()
        self._wake.set()

    async def _reap_once(self) -> None:
        assert self._redis is not None
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.time()
            pipe.zrange(self._registry, 0, -1, withscores=True)
            pipe.smembers(self._nodes_with_counts)
            pipe.getdel(self._reaped_prefix + self.node_id)
            pipe.exists(self._node_set_prefix + self.node_id)
            (seconds, micros), registered, counted, reaped, mine = await pipe.execute()
        now = float(seconds) + micros / 1e6
        live = {m.decode() for m, expires in registered if expires > now}
        if reaped is not None:
            logger.warning("presence: another node reaped this one's counts; resyncing")
            self._resync()
        elif self._counts and not mine and not self._queue and not self._dirty:
            # Everything written, yet nothing there: Redis lost it (restarted empty).
            logger.warning("presence: this node's counts are gone from Redis; resyncing")
            self._resync()
        for raw in counted:
            node = raw.decode()
            if node == self.node_id or node in live:
                continue
            keys = [
                self._registry,
                self._node_set_prefix + node,
                self._nodes_with_counts,
                self._reaped_prefix + node,
            ]
            gone = await self._redis.eval(
                _REAP, len(keys), *keys, self._hash_prefix, node, REAPED_MARK_TTL
            )
            if gone:
                logger.info("presence: reaped node %s (%d users offline)", node, len(gone))
            for member in gone:
                self._send("user.offline", member)


_memory: type[PresenceTracker] = MemoryPresenceTracker
_redis: type[PresenceTracker] = RedisPresenceTracker
