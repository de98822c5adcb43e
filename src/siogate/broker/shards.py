"""Which shard channels a node subscribes to, and whether Redis has confirmed them (sans-I/O).

A node wants a shard while it holds members of at least one room of that shard. It
subscribes when the first such room opens, and unsubscribes only after the shard has been
unwanted for :data:`LINGER` seconds: a room whose only member leaves and comes back
(a page reload) costs no round trip, and messages that arrive meanwhile find nobody.

The I/O (``SSUBSCRIBE``, ``SUNSUBSCRIBE``, reading confirmations) is the broker's; this
class only says what to send and whether every wanted shard is confirmed ("settled").
A join answers only once the node holding the socket is settled, so that an emit
published after the join's answer reaches the socket.

Every operation costs time in proportion to the shards it changes, never to the shards
wanted (a node may want tens of thousands; a connect storm opens rooms by the thousand).
"""

from __future__ import annotations

from ..types import Namespace, Room
from .routing import shard_of

# Seconds a shard stays subscribed after its last room closed.
LINGER = 2.0


class ShardSubscriptions:
    """Rooms with local members per shard, and the subscription state of each shard."""

    __slots__ = ("_rooms", "_released", "_todo", "subscribed", "_subscribing", "_unsubscribing")

    def __init__(self) -> None:
        # shard -> how many rooms of it have local members (absent: none).
        self._rooms: dict[int, int] = {}
        # Unwanted shards that may still be subscribed -> monotonic time they became
        # unwanted, oldest first.
        self._released: dict[int, float] = {}
        # Wanted shards that may need an SSUBSCRIBE.
        self._todo: set[int] = set()
        # Confirmed by Redis on the current connection.
        self.subscribed: set[int] = set()
        # Sent, not yet confirmed.
        self._subscribing: set[int] = set()
        self._unsubscribing: set[int] = set()

    @property
    def wanted(self) -> set[int]:
        return set(self._rooms)

    def room_opened(self, namespace: Namespace, room: Room) -> None:
        shard = shard_of(namespace, room)
        count = self._rooms.get(shard, 0)
        self._rooms[shard] = count + 1
        if count == 0:
            self._released.pop(shard, None)
            if shard not in self.subscribed or shard in self._unsubscribing:
                self._todo.add(shard)

    def room_closed(self, namespace: Namespace, room: Room, now: float) -> None:
        shard = shard_of(namespace, room)
        count = self._rooms.get(shard, 0) - 1
        if count > 0:
            self._rooms[shard] = count
            return
        self._rooms.pop(shard, None)
        self._released[shard] = now

    def to_subscribe(self) -> list[int]:
        """Wanted shards to send SSUBSCRIBE for now (marked as sent)."""
        shards = []
        for s in list(self._todo):
            if s in self._unsubscribing:
                continue  # sent again once the SUNSUBSCRIBE is confirmed
            self._todo.discard(s)
            if s in self._rooms and s not in self.subscribed and s not in self._subscribing:
                shards.append(s)
        self._subscribing.update(shards)
        return shards

    def to_unsubscribe(self, now: float, linger: float = LINGER) -> list[int]:
        """Shards unwanted for ``linger`` seconds to send SUNSUBSCRIBE for (marked as sent)."""
        shards = []
        for s, since in list(self._released.items()):
            if now - since < linger:
                break  # the rest were released later
            if s in self._subscribing:
                continue  # looked at again once confirmed
            del self._released[s]
            if s in self.subscribed:
                shards.append(s)
        self._unsubscribing.update(shards)
        return shards

    def confirmed(self, shard: int, subscribed: bool) -> None:
        """Redis confirmed an SSUBSCRIBE (``subscribed``) or an SUNSUBSCRIBE of ``shard``."""
        if subscribed:
            self._subscribing.discard(shard)
            self.subscribed.add(shard)
        else:
            self._unsubscribing.discard(shard)
            self.subscribed.discard(shard)
            self._released.pop(shard, None)
            if shard in self._rooms:
                self._todo.add(shard)  # wanted again meanwhile

    def settled(self) -> bool:
        """Every wanted shard is subscribed, with no unsubscribe of it in flight."""
        if self._subscribing:
            return False
        return not any(s in self._rooms for s in self._todo)

    def reset(self) -> None:
        """The subscriber connection was lost: nothing is subscribed any more."""
        self.subscribed.clear()
        self._subscribing.clear()
        self._unsubscribing.clear()
        self._released.clear()
        self._todo = set(self._rooms)
