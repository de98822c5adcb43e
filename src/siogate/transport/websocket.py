"""WebSocket connections after the HTTP upgrade.

Incoming frames are parsed by the sans-I/O protocol of the ``websockets`` library (masking,
control frames, close handshake, size limits). Outgoing data frames are built here: a
server frame is a 2-10 byte header plus the unmasked payload, and building it directly lets
one broadcast reuse the same bytes for every recipient.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import struct
from typing import Protocol

from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

from ..protocol.engineio import EncodedPacket

logger = logging.getLogger("siogate.websocket")

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value for a client's ``Sec-WebSocket-Key`` (RFC 6455)."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _WS_GUID).digest()).decode()


def frame(payload: str | bytes) -> bytes:
    """One unfragmented, unmasked server frame: text for ``str``, binary for ``bytes``."""
    if isinstance(payload, str):
        data, first = payload.encode("utf-8"), 0x81
    else:
        data, first = payload, 0x82
    n = len(data)
    if n < 126:
        return bytes((first, n)) + data
    if n < 65536:
        return struct.pack("!BBH", first, 126, n) + data
    return struct.pack("!BBQ", first, 127, n) + data


def frames(messages: list[EncodedPacket]) -> bytes:
    if len(messages) == 1:
        return frame(messages[0])
    return b"".join(frame(m) for m in messages)


class MessageListener(Protocol):
    """Receives whole WebSocket messages and the end of the connection."""

    def on_message(self, message: str | bytes) -> None: ...
    def on_close(self) -> None: ...


class WebSocketConnection:
    """The WebSocket half of an upgraded :class:`~siogate.transport.http.HttpConnection`."""

    __slots__ = ("transport", "listener", "_protocol", "_fragments", "_text", "_max_size")

    def __init__(self, transport: asyncio.Transport, max_size: int) -> None:
        self.transport = transport
        self.listener: MessageListener | None = None
        self._protocol = ServerProtocol(state=State.OPEN, max_size=max_size)
        # A fragmented message being reassembled, and whether it is text.
        self._fragments: list[bytes] | None = None
        self._text = False
        self._max_size = max_size

    # Writing

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def send(self, messages: list[EncodedPacket]) -> None:
        self.transport.write(frames(messages))

    def buffered(self) -> int:
        return self.transport.get_write_buffer_size()

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Send a close frame (if still possible) and close the TCP connection."""
        transport = self.transport
        if transport.is_closing():
            return
        if self._protocol.state is State.OPEN:
            self._protocol.send_close(code, reason)
            for chunk in self._protocol.data_to_send():
                if chunk:
                    transport.write(chunk)
        transport.close()

    # UpgradedProtocol

    def data_received(self, data: bytes) -> None:
        protocol = self._protocol
        protocol.receive_data(data)
        for event in protocol.events_received():
            if not isinstance(event, Frame):
                continue
            opcode = event.opcode
            payload = event.data if type(event.data) is bytes else bytes(event.data)
            if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                if event.fin:
                    self._deliver(payload, opcode is Opcode.TEXT)
                else:
                    self._fragments = [payload]
                    self._text = opcode is Opcode.TEXT
            elif opcode is Opcode.CONT and self._fragments is not None:
                self._fragments.append(payload)
                if event.fin:
                    parts, self._fragments = self._fragments, None
                    self._deliver(b"".join(parts), self._text)
            # PING is answered by the protocol itself; PONG and CLOSE need nothing here.
            if self.transport.is_closing():
                return
        for chunk in protocol.data_to_send():
            if chunk:
                self.transport.write(chunk)
            else:
                self.transport.close()
        if protocol.state is State.CLOSED and not self.transport.is_closing():
            self.transport.close()

    def _deliver(self, data: bytes, text: bool) -> None:
        listener = self.listener
        if listener is None:
            return
        if not text:
            listener.on_message(data)
            return
        try:
            message = data.decode("utf-8")
        except UnicodeDecodeError:
            self.close(CloseCode.INVALID_DATA, "invalid UTF-8")
            return
        listener.on_message(message)

    def connection_lost(self, exc: Exception | None) -> None:
        listener, self.listener = self.listener, None
        if listener is not None:
            listener.on_close()

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass


__all__ = ["Close", "WebSocketConnection", "accept_key", "frame", "frames"]
