"""WebSocket connections after the HTTP upgrade: the I/O around ``protocol.websocket``."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from ..errors import PayloadTooLarge, ProtocolError
from ..protocol.engineio import EncodedPacket
from ..protocol.websocket import (
    CLOSE_NORMAL,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TOO_BIG,
    CloseReceived,
    FrameError,
    FrameParser,
    close_frame,
    frame,
)

logger = logging.getLogger("siogate.websocket")

# Seconds a closed WebSocket may take to flush its buffer before it is aborted.
CLOSE_LINGER = 5.0


def frames(messages: list[EncodedPacket]) -> bytes:
    """Frames for several messages, ready for one write."""
    if len(messages) == 1:
        return frame(messages[0])
    return b"".join(frame(m) for m in messages)


class MessageListener(Protocol):
    """Receives whole WebSocket messages and the end of the connection."""

    def on_message(self, message: str | bytes) -> None: ...
    def on_close(self) -> None: ...


class WebSocketConnection:
    """The WebSocket half of an upgraded :class:`~siogate.transport.http.HttpConnection`."""

    __slots__ = ("transport", "listener", "_parser")

    def __init__(self, transport: asyncio.Transport, max_size: int) -> None:
        self.transport = transport
        self.listener: MessageListener | None = None
        self._parser = FrameParser(max_size)

    # Writing

    def send(self, messages: list[EncodedPacket]) -> None:
        self.transport.write(frames(messages))

    def buffered(self) -> int:
        return self.transport.get_write_buffer_size()

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Send a close frame and close the TCP connection (after pending writes)."""
        transport = self.transport
        if not transport.is_closing():
            transport.write(close_frame(code, reason))
            transport.close()
            if transport.get_write_buffer_size():
                # close() waits for the buffer to drain: a peer that reads nothing
                # would hold the descriptor for good.
                asyncio.get_running_loop().call_later(CLOSE_LINGER, transport.abort)

    # UpgradedProtocol

    def data_received(self, data: bytes) -> None:
        try:
            messages = self._parser.feed(data)
        except PayloadTooLarge:
            self.close(CLOSE_TOO_BIG, "message too big")
            return
        except FrameError as exc:
            self.close(exc.code, str(exc))
            return
        except ProtocolError as exc:
            self.close(CLOSE_PROTOCOL_ERROR, str(exc))
            return
        replies = self._parser.replies
        if replies:
            self.transport.write(b"".join(replies))
            replies.clear()
        for message in messages:
            if isinstance(message, CloseReceived):
                self.close()
                return
            listener = self.listener
            if listener is None or self.transport.is_closing():
                return
            listener.on_message(message)

    def connection_lost(self, exc: Exception | None) -> None:
        listener, self.listener = self.listener, None
        if listener is not None:
            listener.on_close()

    def pause_writing(self) -> None:
        # Backpressure is handled by the write-buffer limit in transport.engine.
        pass

    def resume_writing(self) -> None:
        pass
