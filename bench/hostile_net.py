"""Client-side pieces for bench/hostile.py: raw WebSocket + Engine.IO + Socket.IO over
asyncio, an HTTP publisher, and the per-process probes of a server (/proc).

Two client shapes:

- ``SioProto``: an ``asyncio.Protocol`` for the many-clients cases (the canary, the
  slow-consumer scenario): cheap receive path, futures for "joined" and "closed",
  ``pause_reading()`` for a consumer that stops reading.
- ``stream_ws_open``: asyncio streams for the attacks that write a lot and need the
  writer's ``drain()`` to tell when the server stopped reading.

Client frames use the all-zero mask key: RFC 6455 only asks the key to be
unpredictable, which a server cannot check, and XOR with zeros leaves the payload as is,
so an attacker can send hundreds of MB without paying for masking.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

ZERO_MASK = b"\0\0\0\0"
mono = time.monotonic  # CLOCK_MONOTONIC: one clock for every process of a run


def ws_frame(payload: bytes, opcode: int = 0x1, fin: bool = True) -> bytes:
    """A client frame (masked with the zero key, so the payload goes as is)."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    if n < 126:
        head = bytes((b0, 0x80 | n))
    elif n < 65536:
        head = bytes((b0, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((b0, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + ZERO_MASK + payload


def upgrade_request(key: bytes | None = None, extra: bytes = b"") -> bytes:
    key = key or base64.b64encode(os.urandom(16))
    return (
        b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
        b"Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n" + extra + b"\r\n"
    )


def connect_packet(token: str) -> bytes:
    return b"40" + json.dumps({"token": token}, separators=(",", ":")).encode()


def set_rst(sock: Any) -> None:
    """Make close() send a RST instead of a FIN (SO_LINGER 0): an abort."""
    if sock is None:  # already closed
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass


def parse_frames(buf: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Whole server frames (unmasked) in `buf`, and the rest."""
    out = []
    off, n = 0, len(buf)
    while n - off >= 2:
        b1 = buf[off + 1]
        ln, hdr = b1 & 0x7F, 2
        if ln == 126:
            if n - off < 4:
                break
            ln, hdr = int.from_bytes(buf[off + 2 : off + 4], "big"), 4
        elif ln == 127:
            if n - off < 10:
                break
            ln, hdr = int.from_bytes(buf[off + 2 : off + 10], "big"), 10
        if n - off < hdr + ln:
            break
        out.append((buf[off] & 0x0F, buf[off + hdr : off + hdr + ln]))
        off += hdr + ln
    return out, buf[off:]


def close_code(payload: bytes) -> int | None:
    return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None


# --- Protocol client ------------------------------------------------------------------------


class SioProto(asyncio.Protocol):
    """WebSocket -> Engine.IO open -> Socket.IO CONNECT (if `token` is given) -> events."""

    def __init__(self, token: str | None, on_event: Callable[[bytes], None] | None = None) -> None:
        self.token = token
        self.on_event = on_event
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.upgraded = False
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[str] = loop.create_future()
        self.close_code: int | None = None
        self.received_bytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(upgrade_request())

    def send(self, payload: bytes, opcode: int = 0x1) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(ws_frame(payload, opcode))

    def data_received(self, data: bytes) -> None:
        self.received_bytes += len(data)
        buf = self.buf + data if self.buf else data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            status = buf[: buf.find(b"\r\n")]
            if b" 101 " not in status + b" ":
                self._fail(f"upgrade refused: {status[:60].decode(errors='replace')}")
                return
            self.upgraded = True
            buf = buf[end + 4 :]
        frames, self.buf = parse_frames(buf)
        for opcode, payload in frames:
            self._frame(opcode, payload)

    def _frame(self, opcode: int, payload: bytes) -> None:
        if opcode == 0x1:
            if payload[:2] == b"42":
                if self.on_event is not None:
                    self.on_event(payload)
            elif payload[:1] == b"2":
                self.send(b"3")
            elif payload[:1] == b"0":
                if self.token is None:
                    self._ready()
                else:
                    self.send(connect_packet(self.token))
            elif payload[:2] == b"40":
                self._ready()
            elif payload[:2] == b"44":
                self._fail(f"connect error {payload[:80].decode(errors='replace')}")
        elif opcode == 0x8:
            self.close_code = close_code(payload)
        elif opcode == 0x9:
            self.send(payload, 0xA)

    def _ready(self) -> None:
        if not self.ready.done():
            self.ready.set_result(None)

    def _fail(self, reason: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(reason))
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"lost before joining: {exc}"))
        if not self.closed.done():
            code = f" close {self.close_code}" if self.close_code is not None else ""
            self.closed.set_result(f"{type(exc).__name__ if exc else 'eof'}{code}")


async def open_sio(
    port: int,
    token: str | None,
    on_event: Callable[[bytes], None] | None = None,
    timeout: float = 10.0,
    rcvbuf: int | None = None,
) -> SioProto:
    """A joined client; `rcvbuf` fixes its receive buffer (set before the SYN, so the
    window scale matches; a fixed size also turns the kernel's autotuning off)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), timeout)
    except BaseException:
        sock.close()
        raise
    _, proto = await loop.create_connection(lambda: SioProto(token, on_event), sock=sock)
    await asyncio.wait_for(proto.ready, timeout)
    return proto


# --- Stream client (for the flooding attacks) -----------------------------------------------


def cut_reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionResetError):
        return "cut: reset"
    if isinstance(exc, BrokenPipeError):
        return "cut: closed"
    if isinstance(exc, RuntimeError):  # asyncio: writing to a transport already closed
        return "cut: closed"
    return f"cut: {type(exc).__name__}"


class Stream:
    """A raw connection; `pump` writes until a byte budget, a deadline or a cut."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.sent = 0
        self.t_open = mono()

    @classmethod
    async def open(cls, port: int, timeout: float = 10.0) -> Stream:
        r, w = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, limit=1 << 22), timeout
        )
        return cls(r, w)

    async def read_frame(self) -> tuple[int, bytes]:
        h = await self.reader.readexactly(2)
        ln = h[1] & 0x7F
        if ln == 126:
            ln = int.from_bytes(await self.reader.readexactly(2), "big")
        elif ln == 127:
            ln = int.from_bytes(await self.reader.readexactly(8), "big")
        return h[0] & 0x0F, await self.reader.readexactly(ln)

    async def pump(self, chunk: bytes | Callable[[int], bytes], total: int, deadline: float) -> str:
        """Write `chunk` (or chunk(i)) until `total` bytes, `deadline`, or a cut.

        Returns why it stopped: "done", "server stopped reading" (drain() did not return
        before the deadline: the server applies backpressure), or "cut: <error>".
        """
        i = 0
        while self.sent < total:
            data = chunk if isinstance(chunk, bytes) else chunk(i)
            i += 1
            try:
                self.writer.write(data)
            except (ConnectionError, RuntimeError) as exc:
                return cut_reason(exc)
            self.sent += len(data)
            left = deadline - mono()
            if left <= 0:
                return "deadline"
            try:
                await asyncio.wait_for(self.writer.drain(), left)
            except TimeoutError:
                return "server stopped reading"
            except (ConnectionError, OSError) as exc:
                return cut_reason(exc)
            if self.reader.at_eof():
                return "cut: eof"
        return "done"

    def accepted(self) -> int:
        """Bytes that left our user-space buffer (into the kernel or the server)."""
        try:
            return self.sent - self.writer.transport.get_write_buffer_size()
        except Exception:  # closed transport
            return self.sent

    async def read_some(self, limit: int, timeout: float) -> bytes:
        """Up to `limit` bytes that arrive within `timeout` (what the server answered)."""
        out = bytearray()
        deadline = mono() + timeout
        while len(out) < limit:
            left = deadline - mono()
            if left <= 0:
                break
            try:
                data = await asyncio.wait_for(
                    self.reader.read(min(1 << 20, limit - len(out))), left
                )
            except (TimeoutError, ConnectionError, OSError):
                break
            if not data:
                break
            out += data
        return bytes(out)

    async def reply(self, limit: int, timeout: float, ws: bool) -> str:
        """describe_reply() of what arrives within `timeout`, and whether the server closed."""
        data = await self.read_some(limit, timeout)
        end = "closed" if self.reader.at_eof() else "open"
        return f"{describe_reply(data, ws)}, {end}" if data else f"no reply, {end}"

    def abort(self) -> None:
        set_rst(self.writer.get_extra_info("socket"))
        self.writer.transport.abort()


async def stream_ws_open(port: int, token: str | None, timeout: float = 10.0) -> Stream:
    """Upgrade, read the Engine.IO open, and CONNECT with `token` unless it is None."""
    s = await Stream.open(port, timeout)
    s.writer.write(upgrade_request())
    head = await asyncio.wait_for(s.reader.readuntil(b"\r\n\r\n"), timeout)
    if b" 101 " not in head[: head.find(b"\r\n")] + b" ":
        s.writer.close()
        raise ConnectionError(f"upgrade refused: {head[:40]!r}")
    await asyncio.wait_for(s.read_frame(), timeout)  # 0{"sid":...}
    if token is not None:
        s.writer.write(ws_frame(connect_packet(token)))
        while True:
            op, payload = await asyncio.wait_for(s.read_frame(), timeout)
            if op == 0x1 and payload[:2] == b"40":
                break
            if op == 0x8 or payload[:2] == b"44":
                raise ConnectionError(f"connect refused: {payload[:80]!r}")
    return s


def describe_reply(data: bytes, ws: bool) -> str:
    """What the server said: an HTTP status line, a WebSocket close code, or nothing."""
    if not data:
        return "no reply"
    if data.startswith(b"HTTP/"):
        line = data[: data.find(b"\r\n")] if b"\r\n" in data else data[:40]
        count = data.count(b"HTTP/1.1 ")
        more = f" (+{count - 1} more responses read)" if count > 1 else ""
        return line.decode(errors="replace") + more
    if ws:
        frames, _ = parse_frames(data)
        codes = [close_code(p) or "(no code)" for op, p in frames if op == 0x8]
        pongs = sum(1 for op, _ in frames if op == 0xA)
        if codes:
            return f"close {codes[0]}" + (f" after {pongs} pongs" if pongs else "")
        if pongs:
            return f"{pongs} pongs read, no close frame"
        return f"{len(frames)} frames, no close frame"
    return f"{len(data)} bytes"


# --- HTTP publisher -------------------------------------------------------------------------


class Poster:
    """POST /v1/emit on one keep-alive connection, one request at a time."""

    def __init__(self, port: int, api_key: str) -> None:
        self.port = port
        self.head = (
            f"POST /v1/emit HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {api_key}\r\nContent-Type: application/json\r\n"
        ).encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, body: dict[str, Any], timeout: float = 5.0) -> int:
        """The response status (0: the connection failed; it is reopened next time)."""
        raw = json.dumps(body, separators=(",", ":")).encode()
        try:
            if self.writer is None or self.writer.is_closing():
                self.reader, self.writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", self.port), timeout
                )
            assert self.reader is not None
            self.writer.write(
                self.head + b"Content-Length: " + str(len(raw)).encode() + b"\r\n\r\n" + raw
            )
            head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await asyncio.wait_for(self.reader.readexactly(length), timeout)
            if b"connection: close" in head.lower():
                self.writer.close()
            return int(head.split(b" ", 2)[1])
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            if self.writer is not None:
                self.writer.close()
            self.writer = None
            return 0


# --- /proc probes ----------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError):
        return 0.0
