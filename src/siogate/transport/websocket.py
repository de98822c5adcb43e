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
from ..ratelog import RateLimitedLog
from .http import CLOSE_LINGER

logger = logging.getLogger("siogate.websocket")
_log = RateLimitedLog(logger)

# Close code for a failure on the server's side (RFC 6455, section 7.4.1).
CLOSE_INTERNAL_ERROR = 1011

# Write buffer (bytes) above which the transport asks us to pause: the buffer that may
# wait in user space before a connection counts as not keeping up (see ``pause_writing``).
# Smaller than the default ``max_buffer`` so that the slow-consumer clock starts well
# before the hard cap; the low-water mark is a quarter of it.
WRITE_HIGH_WATER = 256 * 1024

# Frames parsed per loop turn for one connection: a read of one-byte frames holds tens
# of thousands, and parsing them all at once would stall every other connection.
FRAMES_PER_TURN = 256


def frames(messages: list[EncodedPacket]) -> bytes:
    """Frames for several messages, ready for one write."""
    if len(messages) == 1:
        return frame(messages[0])
    return b"".join(frame(m) for m in messages)


def write_limits(max_buffer: int) -> tuple[int, int]:
    """(high, low) water marks of a WebSocket's write buffer for a given ``max_buffer``."""
    high = max(min(WRITE_HIGH_WATER, max_buffer // 4), 16 * 1024)
    return high, high // 4


class MessageListener(Protocol):
    """Receives whole WebSocket messages and the end of the connection."""

    def on_message(self, message: str | bytes) -> None: ...
    def on_close(self) -> None: ...

    def on_stalled(self) -> None:
        """The peer has not drained the write buffer for ``slow_timeout``."""


class WebSocketConnection:
    """The WebSocket half of an upgraded :class:`~siogate.transport.http.HttpConnection`.

    Flow control: while the transport's write buffer is over its high-water mark
    (``pause_writing`` until ``resume_writing``), nothing more is read from the peer, so
    a peer that sends without reading (a ping flood, whose pongs pile up here) is held
    back by TCP instead of by our memory. If the buffer has not drained within
    ``slow_timeout`` seconds, the listener is told (``on_stalled``) and cuts the peer.
    """

    __slots__ = (
        "transport",
        "listener",
        "_parser",
        "_slow_timeout",
        "_stall",
        "_write_paused",
        "_backlog",
    )

    def __init__(
        self,
        transport: asyncio.Transport,
        max_size: int,
        *,
        slow_timeout: float = 10.0,
        max_buffer: int = 1_000_000,
    ) -> None:
        self.transport = transport
        self.listener: MessageListener | None = None
        self._parser = FrameParser(max_size)
        self._slow_timeout = slow_timeout
        # Armed from pause_writing until resume_writing.
        self._stall: asyncio.TimerHandle | None = None
        # Reading is paused while either holds: the peer does not drain what we write,
        # or input read earlier is still waiting to be parsed (FRAMES_PER_TURN).
        self._write_paused = False
        self._backlog: asyncio.Handle | None = None
        high, low = write_limits(max_buffer)
        transport.set_write_buffer_limits(high=high, low=low)

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
        self._disarm()

    def abort(self) -> None:
        """Drop the connection and whatever waits in its write buffer.

        For a peer that does not read: ``close()`` would keep the buffer until it drains.
        """
        self.listener = None
        self._disarm()
        self.transport.abort()

    # UpgradedProtocol

    def data_received(self, data: bytes) -> None:
        try:
            self._receive(data)
        except Exception as exc:
            # A bug, not the peer's fault (the parser raises only ProtocolError): end
            # this one connection, and keep the log to one line per interval.
            _log.error(
                f"websocket {type(exc).__qualname__}",
                "closing a WebSocket after an unexpected error: %r",
                exc,
                exc_info=exc,
            )
            self.close(CLOSE_INTERNAL_ERROR, "internal error")

    def _receive(self, data: bytes) -> None:
        parser = self._parser
        try:
            messages = parser.feed(data, FRAMES_PER_TURN)
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
            # May call pause_writing, which stops further reads until the peer drains.
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
        if parser.more and self._backlog is None and not self.transport.is_closing():
            # The rest of this read waits for the next loop turn (other connections
            # go first); nothing more is read meanwhile, so it cannot pile up.
            self.transport.pause_reading()
            self._backlog = asyncio.get_running_loop().call_soon(self._parse_backlog)

    def _parse_backlog(self) -> None:
        self._backlog = None
        self.data_received(b"")
        transport = self.transport
        if self._backlog is None and not self._write_paused and not transport.is_closing():
            transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        listener, self.listener = self.listener, None
        if listener is not None:
            listener.on_close()

    def pause_writing(self) -> None:
        transport = self.transport
        if transport.is_closing():
            return
        # Whatever the peer sends now would only add answers to a buffer it does not drain.
        self._write_paused = True
        transport.pause_reading()
        if self._stall is None:
            loop = asyncio.get_running_loop()
            self._stall = loop.call_later(self._slow_timeout, self._on_stalled)

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        if self._backlog is None and not self.transport.is_closing():
            self.transport.resume_reading()

    def _disarm(self) -> None:
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        if self._backlog is not None:
            self._backlog.cancel()
            self._backlog = None

    def _on_stalled(self) -> None:
        self._stall = None
        listener = self.listener
        if listener is not None:
            listener.on_stalled()
        else:
            self.abort()
