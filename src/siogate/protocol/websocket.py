"""RFC 6455 framing for the server side (Sans-I/O).

Hand-written rather than taken from ``websockets.protocol``: that parser keeps a
generator, a stream reader and their buffers alive for every connection (about 1.4 KiB
each, measured), and idle memory per connection is a goal of this gateway. This one
keeps one bytes buffer and three small fields. Unmasking uses the C helper of the
``websockets`` library.

Scope: what a Socket.IO server needs. No extensions (permessage-deflate is declined
during the handshake), so RSV bits are always an error.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

try:
    from websockets.speedups import apply_mask
except ImportError:  # pure-Python build of websockets
    from websockets.utils import apply_mask

from ..errors import PayloadTooLarge, ProtocolError

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA

CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def valid_key(key: str) -> bool:
    """Whether ``key`` is a well-formed ``Sec-WebSocket-Key``: base64 of 16 bytes.

    RFC 6455 §4.1 makes that 24 ASCII characters. Checked before :func:`accept_key`, so
    a hostile header (non-ASCII, any length) is refused with a 400 instead of an error.
    """
    if len(key) != 24 or not key.isascii():
        return False
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value for a client's ``Sec-WebSocket-Key``.

    Raises :class:`ProtocolError` when the key is not valid (see :func:`valid_key`).
    """
    if not valid_key(key):
        raise ProtocolError("invalid Sec-WebSocket-Key")
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode()


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


def control_frame(opcode: int, payload: bytes = b"") -> bytes:
    return bytes((0x80 | opcode, len(payload))) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    return control_frame(OP_CLOSE, struct.pack("!H", code) + reason.encode("utf-8")[:120])


@dataclass(frozen=True, slots=True)
class CloseReceived:
    """The client started (or answered) the closing handshake."""

    code: int


class FrameError(ProtocolError):
    """A framing violation; ``code`` is the close code to send."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class FrameParser:
    """Turns client bytes into whole messages (``str`` / ``bytes``) and control events.

    :meth:`feed` returns the messages and :class:`CloseReceived` events completed by the
    data; pings are answered by queueing a pong in :attr:`replies`. Raises
    :class:`FrameError` on a violation; the caller sends ``close_frame(err.code)``.

    Hostile input costs time and memory linear in its size: a partial frame and a
    fragmented message each grow one ``bytearray`` (appends, never re-joins), the
    message size limit counts the fragments received so far and is checked from each
    frame's header, and at most one pong waits in :attr:`replies`.
    """

    __slots__ = ("_buffer", "_max_size", "_frag_opcode", "_frag", "replies", "more")

    def __init__(self, max_size: int) -> None:
        # Bytes of an incomplete frame; None (free) while there are none.
        self._buffer: bytearray | None = None
        self._max_size = max_size
        # Opcode and payload so far of a fragmented message in progress (``_frag`` is
        # None when there is none).
        self._frag_opcode = 0
        self._frag: bytearray | None = None
        # Frames to write back: at most one pong, for the latest ping (RFC 6455 §5.5.3
        # allows answering only the most recent one), so a ping flood holds no memory.
        self.replies: list[bytes] = []
        # True when the last feed stopped at its frame limit with input left over: feed
        # b"" again (after letting other work run) to go on.
        self.more = False

    def feed(self, data: bytes, max_frames: int | None = None) -> list[str | bytes | CloseReceived]:
        """Parse ``data`` after what is buffered; at most ``max_frames`` frames per call.

        The limit bounds the time one call takes whatever the input (a read of tiny
        frames is tens of thousands of them); the rest stays buffered and :attr:`more`
        says so.
        """
        buf: bytes | bytearray
        carried = self._buffer
        if carried is not None:
            # Append in place: a large frame trickled in tiny reads stays linear.
            carried += data
            buf = carried
        else:
            buf = data
        out: list[str | bytes | CloseReceived] = []
        pos, end = 0, len(buf)
        budget = -1 if max_frames is None else max_frames
        self.more = False
        while end - pos >= 2:
            if budget == 0:
                self.more = True
                break
            budget -= 1
            b0, b1 = buf[pos], buf[pos + 1]
            if b0 & 0x70:
                raise FrameError(CLOSE_PROTOCOL_ERROR, "reserved bits set")
            if not b1 & 0x80:
                raise FrameError(CLOSE_PROTOCOL_ERROR, "client frames must be masked")
            length, head = b1 & 0x7F, 2
            if length == 126:
                if end - pos < 4:
                    break
                length, head = (buf[pos + 2] << 8) | buf[pos + 3], 4
            elif length == 127:
                if end - pos < 10:
                    break
                length, head = struct.unpack_from("!Q", buf, pos + 2)[0], 10
            opcode = b0 & 0x0F
            # Refuse from the header, before buffering the payload.
            if opcode >= OP_CLOSE:
                if length > 125 or not b0 & 0x80:
                    raise FrameError(CLOSE_PROTOCOL_ERROR, "invalid control frame")
            elif opcode == OP_CONT and self._frag is not None:
                if length > self._max_size - len(self._frag):
                    raise PayloadTooLarge(f"fragmented message exceeds {self._max_size} bytes")
            elif length > self._max_size:
                raise PayloadTooLarge(f"frame of {length} bytes exceeds {self._max_size}")
            stop = pos + head + 4 + length
            if stop > end:
                break
            mask = buf[pos + head : pos + head + 4]
            payload = apply_mask(buf[pos + head + 4 : stop], mask)
            pos = stop
            self._frame(b0 & 0x80 != 0, opcode, payload, out)
        if pos >= end:
            self._buffer = None
        elif carried is not None:
            del carried[:pos]
            self._buffer = carried
        else:
            self._buffer = bytearray(buf[pos:])
        return out

    def _frame(
        self, fin: bool, opcode: int, payload: bytes, out: list[str | bytes | CloseReceived]
    ) -> None:
        if opcode >= OP_CLOSE:
            if opcode == OP_PING:
                self.replies[:] = (control_frame(OP_PONG, payload),)
            elif opcode == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else CLOSE_NORMAL
                out.append(CloseReceived(code))
            elif opcode != OP_PONG:
                raise FrameError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode}")
            return
        frag = self._frag
        if opcode == OP_CONT:
            if frag is None:
                raise FrameError(CLOSE_PROTOCOL_ERROR, "continuation without a message")
            # The size was checked from the frame header.
            frag += payload
            if not fin:
                return
            self._frag = None
            opcode, payload = self._frag_opcode, bytes(frag)
        elif opcode in (OP_TEXT, OP_BINARY):
            if frag is not None:
                raise FrameError(CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one")
            if not fin:
                self._frag_opcode, self._frag = opcode, bytearray(payload)
                return
        else:
            raise FrameError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode}")
        if opcode == OP_TEXT:
            try:
                out.append(payload.decode("utf-8"))
            except UnicodeDecodeError:
                raise FrameError(CLOSE_INVALID_DATA, "invalid UTF-8 in text message") from None
        else:
            out.append(payload)
