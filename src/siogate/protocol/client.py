"""The client side of a WebSocket-only Engine.IO + Socket.IO session (Sans-I/O).

Used by ``siogate listen``; it shares the packet codecs with the server session.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ProtocolError
from . import engineio, socketio
from .engineio import EncodedPacket
from .engineio import PacketType as EioType
from .events import EventReceived
from .socketio import PacketType as SioType


@dataclass(frozen=True, slots=True)
class Opened:
    """The server's OPEN packet arrived."""

    sid: str


@dataclass(frozen=True, slots=True)
class Connected:
    namespace: str
    sid: str


@dataclass(frozen=True, slots=True)
class ConnectFailed:
    namespace: str
    message: str


@dataclass(frozen=True, slots=True)
class Disconnected:
    namespace: str | None
    reason: str


ClientEvent = Opened | Connected | ConnectFailed | EventReceived | Disconnected


class ClientSession:
    """Feed WebSocket messages with :meth:`receive`; answers pings by itself."""

    def __init__(self) -> None:
        self._decoder = socketio.Decoder()
        self._events: list[ClientEvent] = []
        self._out: list[EncodedPacket] = []
        self.closed = False

    def connect(self, namespace: str = "/", auth: dict[str, Any] | None = None) -> None:
        self._out.extend(
            socketio.encode_messages(socketio.Packet(SioType.CONNECT, namespace, auth))
        )

    def receive(self, message: str | bytes) -> None:
        if self.closed:
            return
        try:
            packet = engineio.decode(message)
            if packet.type is EioType.OPEN:
                data = socketio.loads(str(packet.data))
                self._events.append(Opened(str(data.get("sid", ""))))
            elif packet.type is EioType.PING:
                self._out.append(engineio.PONG)
            elif packet.type is EioType.CLOSE:
                self._close("server closed the session")
            elif packet.type is EioType.MESSAGE:
                sio = self._decoder.feed(packet.data)
                if sio is not None:
                    self._dispatch(sio)
        except ProtocolError as exc:
            self._close(f"protocol error: {exc}")

    def _dispatch(self, packet: socketio.Packet) -> None:
        ns, data = packet.namespace, packet.data
        if packet.type is SioType.CONNECT:
            self._events.append(Connected(ns, str((data or {}).get("sid", ""))))
        elif packet.type is SioType.CONNECT_ERROR:
            message = data.get("message", "") if isinstance(data, dict) else str(data)
            self._events.append(ConnectFailed(ns, str(message)))
        elif packet.type in (SioType.EVENT, SioType.BINARY_EVENT):
            self._events.append(EventReceived(ns, data[0], data[1:], packet.id))
        elif packet.type is SioType.DISCONNECT:
            self._events.append(Disconnected(ns, "io server disconnect"))

    def _close(self, reason: str) -> None:
        self.closed = True
        self._events.append(Disconnected(None, reason))

    def events_received(self) -> list[ClientEvent]:
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> list[EncodedPacket]:
        out, self._out = self._out, []
        return out
