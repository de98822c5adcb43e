"""The SDK's argument and result types, shaped like the HTTP API's JSON.

Options are ``TypedDict``s rather than keyword arguments with defaults because the
API tells an absent field from a null one: ``data=None`` sends ``"data": null``
(the client's handler gets one ``null`` argument), while leaving ``data`` out sends
an event with no argument at all. A ``TypedDict`` key is either there or not, so no
sentinel default is needed, and ``Client`` and ``AsyncClient`` share one spelling
of each option set through ``Unpack``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Required, TypedDict

__all__ = [
    "AckReply",
    "AckResult",
    "Emit",
    "EmitOptions",
    "HistoryMessage",
    "Listing",
    "ListingNodes",
    "PresenceListing",
    "RoomHistory",
    "RoomInfo",
    "RoomPresenceListing",
    "RoomsListing",
    "Selector",
    "SocketInfo",
    "SocketsListing",
    "UserCount",
    "UserPresence",
]


class EmitOptions(TypedDict, total=False):
    """The optional fields of ``POST /v1/emit``; ``except_`` is sent as ``except``."""

    data: Any
    """One argument, any JSON value (``None`` included)."""
    args: Sequence[Any]
    """Several arguments, one per element. Not together with ``data``."""
    rooms: Sequence[str]
    """Target the sockets in any of these rooms; absent: the whole namespace."""
    except_: Sequence[str]
    """Leave out the sockets in any of these rooms."""
    namespace: str
    """Default ``/``."""


class Emit(EmitOptions, total=False):
    """One entry of :meth:`Client.batch`: an event name plus :class:`EmitOptions`."""

    event: Required[str]


class Selector(TypedDict, total=False):
    """Which sockets ``join``, ``leave`` and ``disconnect`` act on.

    Give exactly one of ``sockets`` and ``rooms``, non-empty.
    """

    sockets: Sequence[str]
    """Socket ids; unknown ids are skipped by the gateway."""
    rooms: Sequence[str]
    """Select the sockets in any of these rooms."""
    namespace: str
    """Default ``/``."""


@dataclass(frozen=True, slots=True)
class RoomInfo:
    """One entry of ``GET /v1/rooms``."""

    name: str
    sockets: int
    """How many sockets of the namespace are in the room."""


@dataclass(frozen=True, slots=True)
class SocketInfo:
    """One entry of ``GET /v1/rooms/<room>/sockets``."""

    id: str
    """The Socket.IO socket id (also the name of the socket's own room)."""
    user: str | None
    """The handshake token's ``sub``; ``None`` for an anonymous socket."""
    node: str | None = None
    """The gateway node the socket is connected to (``None`` if the gateway does not say)."""
    connected: bool = True
    """False for a socket whose transport dropped and that waits, within
    ``--recovery-window``, for its client to come back (docs/recovery.md)."""


@dataclass(frozen=True, slots=True)
class HistoryMessage:
    """One event of ``GET /v1/rooms/<room>/history``."""

    offset: str
    """Its offset: pass it as ``since`` to get what came after."""
    event: str
    data: list[Any]
    """The event's arguments, one element per argument."""
    ts: int
    """When the gateway applied it, milliseconds since the epoch."""


@dataclass(frozen=True, slots=True)
class RoomHistory:
    """``GET /v1/rooms/<room>/history``: a room's recent events, oldest first."""

    messages: tuple[HistoryMessage, ...]
    complete: bool
    """False when events after ``since`` (or, without it, older ones) are no longer kept,
    or ``limit`` cut the answer."""


@dataclass(frozen=True, slots=True)
class ListingNodes:
    """Which gateway nodes contributed to a listing."""

    answered: int
    """How many nodes answered."""
    missing: tuple[str, ...] = ()
    """Ids of live nodes that did not answer in time: their sockets are not counted."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Listing:
    """How complete a listing is; every node of a cluster answers for its own sockets."""

    partial: bool = False
    """True when some node did not answer in time, or the nodes could not be counted."""
    nodes: ListingNodes | None = None
    """``None`` if the gateway does not say (a gateway without cluster support)."""
    next_cursor: str | None = None
    """Paged listings: pass as ``cursor=`` for the next page; ``None`` on the last one."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomsListing(Listing):
    """The answer of ``GET /v1/rooms``."""

    rooms: tuple[RoomInfo, ...]
    """Sorted by name; the room named by each socket's id is not listed."""


@dataclass(frozen=True, slots=True)
class AckReply:
    """One socket's answer to an emit with ack."""

    socket: str
    """The socket's id."""
    args: list[Any]
    """The arguments the client passed to its ack callback (``cb(reply)``: one)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AckResult(Listing):
    """The answer of ``POST /v1/emit`` with ``ack``."""

    recipients: int
    """Sockets the emit was sent to, over every node that answered."""
    acks: tuple[AckReply, ...]
    """The answers, in the order they arrived on each node."""
    timeouts: tuple[str, ...]
    """Ids of the sockets that did not answer in time, or disconnected first."""

    def replies(self) -> dict[str, list[Any]]:
        """Socket id -> its ack arguments."""
        return {a.socket: a.args for a in self.acks}


@dataclass(frozen=True, slots=True, kw_only=True)
class SocketsListing(Listing):
    """The answer of ``GET /v1/rooms/<room>/sockets``."""

    sockets: tuple[SocketInfo, ...]


@dataclass(frozen=True, slots=True)
class UserPresence:
    """One user's entry of ``GET /v1/presence``."""

    online: bool
    sockets: int
    """Sockets the user has connected (in the asked namespace), all nodes together."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PresenceListing(Listing):
    """The answer of ``GET /v1/presence``."""

    users: dict[str, UserPresence]
    """Each asked user (a token ``sub``), once."""


@dataclass(frozen=True, slots=True)
class UserCount:
    """One entry of ``GET /v1/rooms/<room>/presence``."""

    user: str
    sockets: int
    """How many of the user's sockets are in the room."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomPresenceListing(Listing):
    """The answer of ``GET /v1/rooms/<room>/presence``."""

    users: tuple[UserCount, ...]
    """Distinct users in the room, sorted by user id."""
    anonymous: int = 0
    """Sockets in the room without a user (the whole room, on every page)."""
