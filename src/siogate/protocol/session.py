"""The per-client Engine.IO + Socket.IO state machine (Sans-I/O).

A :class:`Session` is fed Engine.IO packets exactly as they arrived (one WebSocket
message, or one part of a polling payload) through :meth:`Session.receive`. It then
reports what happened through :meth:`Session.events_received` and what must be written
back through :meth:`Session.data_to_send`. It never reads a clock: the driver calls
:meth:`Session.send_ping` every ping interval and :meth:`Session.ping_expired` after the
ping timeout.
"""

from __future__ import annotations

import enum
from typing import Any

from ..errors import ProtocolError
from . import engineio, socketio
from .engineio import EncodedPacket
from .engineio import PacketType as EioType
from .events import (
    AckReceived,
    ConnectRequested,
    Event,
    EventReceived,
    NamespaceLeft,
    SessionClosed,
)
from .socketio import PacketType as SioType

# Disconnect reasons, with the names the Socket.IO server reference uses.
REASON_TRANSPORT_CLOSE = "transport close"
REASON_TRANSPORT_ERROR = "transport error"
REASON_PARSE_ERROR = "parse error"
REASON_PING_TIMEOUT = "ping timeout"
REASON_CLIENT_NAMESPACE = "client namespace disconnect"
REASON_SERVER_NAMESPACE = "server namespace disconnect"
REASON_SERVER_SHUTDOWN = "server shutting down"
REASON_FORCED_CLOSE = "forced close"
REASON_SLOW_CONSUMER = "slow consumer"


class State(enum.IntEnum):
    """A session is OPEN from its handshake until it is CLOSED."""

    OPEN, CLOSED = range(2)


class Session:
    """Engine.IO v4 session with its Socket.IO v5 namespaces, server side."""

    __slots__ = (
        "sid",
        "state",
        "namespaces",
        "pending",
        "awaiting_pong",
        "_decoder",
        "_events",
        "_out",
    )

    def __init__(
        self, sid: str, *, max_attachments: int = 10, max_attachment_bytes: int = 1_000_000
    ) -> None:
        self.sid = sid
        self.state = State.OPEN
        # namespace -> Socket.IO socket id, for every namespace the client has joined.
        self.namespaces: dict[str, str] = {}
        # Namespaces whose CONNECT is being decided (auth runs outside the session).
        self.pending: set[str] = set()
        self.awaiting_pong = False
        # Attachments are limited per packet, in number and in total bytes.
        self._decoder = socketio.Decoder(
            max_attachments=max_attachments, max_attachment_bytes=max_attachment_bytes
        )
        self._events: list[Event] = []
        self._out: list[EncodedPacket] = []

    # Input

    def receive(self, message: str | bytes) -> None:
        """Process one Engine.IO packet from the client."""
        if self.state is State.CLOSED:
            return
        try:
            self._receive(engineio.decode(message))
        except ProtocolError:
            self._close(REASON_PARSE_ERROR)

    def receive_packets(self, packets: list[engineio.Packet]) -> None:
        """Process the packets of one polling payload, in order."""
        for packet in packets:
            if self.state is State.CLOSED:
                return
            try:
                self._receive(packet)
            except ProtocolError:
                self._close(REASON_PARSE_ERROR)

    def receive_eof(self, reason: str = REASON_TRANSPORT_CLOSE) -> None:
        """The transport is gone."""
        if self.state is State.OPEN:
            self._close(reason)

    def _receive(self, packet: engineio.Packet) -> None:
        ptype = packet.type
        if ptype is EioType.MESSAGE:
            decoder = self._decoder
            sio = decoder.feed(packet.data)
            if sio is not None:
                self._dispatch(sio)
            elif decoder.namespace is not None and decoder.namespace not in self.namespaces:
                # A binary packet for a namespace not joined (its CONNECT not accepted
                # yet, so no auth has run) would be dropped by _dispatch: drop it now,
                # so that its attachments are counted down instead of buffered.
                decoder.discard()
        elif ptype is EioType.PONG:
            self.awaiting_pong = False
        elif ptype is EioType.CLOSE:
            self._close(REASON_TRANSPORT_CLOSE)
        elif ptype is EioType.NOOP:
            pass
        else:
            # OPEN, PING and UPGRADE are never valid from a client on an open
            # session (probe and upgrade are handled by the transport layer).
            raise ProtocolError(f"unexpected {ptype.name} packet")

    def _dispatch(self, packet: socketio.Packet) -> None:
        ns, ptype = packet.namespace, packet.type
        if ptype is SioType.CONNECT:
            if ns in self.namespaces or ns in self.pending:
                raise ProtocolError(f"already connected to {ns}")
            self.pending.add(ns)
            self._events.append(ConnectRequested(ns, packet.data))
            return
        if ns not in self.namespaces:
            # Socket.IO servers ignore packets for namespaces the client has not joined
            # (they can race with a server-side disconnect).
            return
        if ptype in (SioType.EVENT, SioType.BINARY_EVENT):
            data = packet.data
            self._events.append(EventReceived(ns, data[0], data[1:], packet.id))
        elif ptype in (SioType.ACK, SioType.BINARY_ACK):
            assert packet.id is not None  # checked by the decoder
            self._events.append(AckReceived(ns, packet.id, packet.data))
        elif ptype is SioType.DISCONNECT:
            sid = self.namespaces.pop(ns)
            self._events.append(NamespaceLeft(ns, sid, REASON_CLIENT_NAMESPACE))
        else:  # CONNECT_ERROR is server-to-client only
            raise ProtocolError(f"unexpected {ptype.name} packet from client")

    # Output

    def events_received(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> list[EncodedPacket]:
        out, self._out = self._out, []
        return out

    # Commands

    def accept(self, namespace: str, socket_id: str, pid: str | None = None) -> None:
        """Answer a CONNECT: the client is now in ``namespace`` as ``socket_id``.

        ``pid``: the private session id of connection state recovery (siogate.recovery).
        """
        self.pending.discard(namespace)
        if self.state is State.CLOSED:
            return
        self.namespaces[namespace] = socket_id
        data = {"sid": socket_id} if pid is None else {"sid": socket_id, "pid": pid}
        packet = socketio.Packet(SioType.CONNECT, namespace, data)
        self._out.extend(socketio.encode_messages(packet))

    def refuse(self, namespace: str, message: str, data: Any = None) -> None:
        """Answer a CONNECT with CONNECT_ERROR ``{"message", "data"?}``."""
        self.pending.discard(namespace)
        if self.state is State.CLOSED:
            return
        payload: dict[str, Any] = {"message": message}
        if data is not None:
            payload["data"] = data
        packet = socketio.Packet(SioType.CONNECT_ERROR, namespace, payload)
        self._out.extend(socketio.encode_messages(packet))

    def send(self, packet: socketio.Packet) -> None:
        """Queue a Socket.IO packet for the client."""
        if self.state is State.OPEN:
            self._out.extend(socketio.encode_messages(packet))

    def send_encoded(self, messages: list[EncodedPacket]) -> None:
        """Queue Engine.IO packets that were encoded once for many recipients."""
        if self.state is State.OPEN:
            self._out.extend(messages)

    def disconnect(self, namespace: str) -> bool:
        """Remove the client from ``namespace`` (server side); False if it was not in it."""
        if self.namespaces.pop(namespace, None) is None:
            return False
        if self.state is State.OPEN:
            packet = socketio.Packet(SioType.DISCONNECT, namespace)
            self._out.extend(socketio.encode_messages(packet))
        return True

    def send_ping(self) -> None:
        if self.state is State.OPEN:
            self.awaiting_pong = True
            self._out.append(engineio.PING)

    def ping_expired(self) -> bool:
        """Call once the ping timeout has passed; True if the session closed because of it."""
        if self.state is State.OPEN and self.awaiting_pong:
            self._close(REASON_PING_TIMEOUT)
            return True
        return False

    def close(self, reason: str = REASON_FORCED_CLOSE) -> None:
        """End the session from the server side: CLOSE packet, then SessionClosed."""
        if self.state is State.OPEN:
            self._out.append(engineio.CLOSE)
            self._close(reason)

    def _close(self, reason: str) -> None:
        self.state = State.CLOSED
        self.pending.clear()
        self._events.append(SessionClosed(reason))
