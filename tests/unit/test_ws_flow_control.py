"""WebSocketConnection's flow control and safety net, on a fake transport."""

from __future__ import annotations

import asyncio

from siogate.transport.websocket import (
    CLOSE_INTERNAL_ERROR,
    FRAMES_PER_TURN,
    WebSocketConnection,
    write_limits,
)


class FakeTransport:
    """Records what a WebSocketConnection asks of its transport."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.limits: tuple[int, int] | None = None
        self.reading = True
        self.closing = False
        self.aborted = False

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        self.limits = (high, low)

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = self.aborted = True


class Listener:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.messages: list[str | bytes] = []
        self.stalled = 0
        self.closed = 0

    def on_message(self, message: str | bytes) -> None:
        if self.fail:
            raise KeyError("a bug")
        self.messages.append(message)

    def on_close(self) -> None:
        self.closed += 1

    def on_stalled(self) -> None:
        self.stalled += 1


def text_frame(data: bytes) -> bytes:
    return bytes((0x81, 0x80 | len(data), 0, 0, 0, 0)) + data


def connection(
    slow_timeout: float = 0.05, max_buffer: int = 1_000_000
) -> tuple[WebSocketConnection, FakeTransport, Listener]:
    transport = FakeTransport()
    ws = WebSocketConnection(
        transport,  # type: ignore[arg-type]
        1000,
        slow_timeout=slow_timeout,
        max_buffer=max_buffer,
    )
    listener = Listener()
    ws.listener = listener
    return ws, transport, listener


def test_write_limits_sit_below_max_buffer() -> None:
    assert write_limits(1_000_000) == (250_000, 62_500)
    assert write_limits(100_000_000) == (256 * 1024, 64 * 1024)
    assert write_limits(10_000)[0] == 16 * 1024  # a floor, so writes are not all paused
    _, transport, _ = connection()
    assert transport.limits == write_limits(1_000_000)


async def test_paused_writing_stops_reading_and_times_out() -> None:
    ws, transport, listener = connection(slow_timeout=0.05)
    ws.pause_writing()
    assert not transport.reading
    await asyncio.sleep(0.1)
    assert listener.stalled == 1


async def test_resumed_writing_reads_again_and_stops_the_clock() -> None:
    ws, transport, listener = connection(slow_timeout=0.05)
    ws.pause_writing()
    ws.resume_writing()
    assert transport.reading
    await asyncio.sleep(0.1)
    assert listener.stalled == 0


async def test_stall_without_listener_aborts() -> None:
    ws, transport, _ = connection(slow_timeout=0.01)
    ws.listener = None
    ws.pause_writing()
    await asyncio.sleep(0.05)
    assert transport.aborted


async def test_a_bug_in_the_listener_closes_with_1011() -> None:
    ws, transport, listener = connection()
    listener.fail = True
    ws.data_received(text_frame(b"4x"))
    assert transport.closing and not transport.aborted
    assert transport.written[-1][:4] == bytes((0x88, 16)) + CLOSE_INTERNAL_ERROR.to_bytes(2, "big")


async def test_messages_still_reach_the_listener() -> None:
    ws, transport, listener = connection()
    ws.data_received(text_frame(b"4a") + bytes((0x89, 0x80, 0, 0, 0, 0)) + text_frame(b"4b"))
    assert listener.messages == ["4a", "4b"]
    assert transport.written == [bytes((0x8A, 0))]  # the pong


async def test_a_read_of_many_frames_is_parsed_a_slice_per_loop_turn() -> None:
    ws, transport, listener = connection()
    # 40,000 one-byte messages arrive in one read.
    ws.data_received(b"".join(text_frame(b"x") for _ in range(40_000)))
    assert len(listener.messages) == FRAMES_PER_TURN
    assert not transport.reading  # nothing more is read while a backlog waits
    turns = 0
    while len(listener.messages) < 40_000:
        await asyncio.sleep(0)
        turns += 1
        assert len(listener.messages) <= FRAMES_PER_TURN * (turns + 1)
    assert listener.messages == ["x"] * 40_000
    await asyncio.sleep(0)
    assert transport.reading


async def test_a_backlog_does_not_resume_reading_while_writes_are_paused() -> None:
    ws, transport, listener = connection()
    ws.data_received(text_frame(b"y") * (FRAMES_PER_TURN + 1))
    ws.pause_writing()
    for _ in range(3):
        await asyncio.sleep(0)
    assert len(listener.messages) == FRAMES_PER_TURN + 1
    assert not transport.reading
    ws.resume_writing()
    assert transport.reading
    ws.close()
