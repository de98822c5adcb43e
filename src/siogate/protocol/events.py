"""What a :class:`~siogate.protocol.session.Session` reports to the layer that drives it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ConnectRequested:
    """The client asks to join ``namespace``; answer with ``accept()`` or ``refuse()``."""

    namespace: str
    auth: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class EventReceived:
    """A client emit; ``ack_id`` is set when the client waits for an acknowledgement."""

    namespace: str
    event: str | int
    args: list[Any]
    ack_id: int | None


@dataclass(frozen=True, slots=True)
class AckReceived:
    """The client acknowledged an event the server sent with an ack id."""

    namespace: str
    ack_id: int
    args: list[Any]


@dataclass(frozen=True, slots=True)
class NamespaceLeft:
    """The client left ``namespace`` (it sent DISCONNECT) while the session stays open."""

    namespace: str
    sid: str
    reason: str


@dataclass(frozen=True, slots=True)
class SessionClosed:
    """The whole Engine.IO session ended; every namespace is left with ``reason``."""

    reason: str


Event = ConnectRequested | EventReceived | AckReceived | NamespaceLeft | SessionClosed
