"""RFC 6455 server framing: masked client frames in, messages and replies out."""

from __future__ import annotations

import os
import struct
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siogate.errors import PayloadTooLarge, ProtocolError
from siogate.protocol.websocket import (
    CLOSE_INVALID_DATA,
    CLOSE_PROTOCOL_ERROR,
    CloseReceived,
    FrameError,
    FrameParser,
    accept_key,
    close_frame,
    frame,
    valid_key,
)


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True) -> bytes:
    """A client frame built independently of the code under test."""
    key = os.urandom(4)
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def test_accept_key_matches_rfc_example() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
def test_server_frame_lengths(size: int) -> None:
    data = frame(b"x" * size)
    assert data[0] == 0x82
    if size < 126:
        assert data[1] == size and len(data) == 2 + size
    elif size < 65536:
        assert data[1] == 126 and struct.unpack("!H", data[2:4])[0] == size
    else:
        assert data[1] == 127 and struct.unpack("!Q", data[2:10])[0] == size


def test_text_frame_is_utf8() -> None:
    assert frame("é😀") == bytes([0x81, 6]) + "é😀".encode()


@pytest.mark.parametrize("size", [0, 5, 125, 126, 70_000])
def test_masked_text_and_binary_messages(size: int) -> None:
    parser = FrameParser(max_size=100_000)
    text = "a" * size
    data = client_frame(0x1, text.encode()) + client_frame(0x2, b"\x00" * size)
    assert parser.feed(data) == [text, b"\x00" * size]


def test_messages_split_across_reads() -> None:
    parser = FrameParser(max_size=1000)
    data = client_frame(0x1, b'42["hello"]') * 3
    out: list[object] = []
    for i in range(len(data)):
        out += parser.feed(data[i : i + 1])
    assert out == ['42["hello"]'] * 3


def test_fragmented_message_is_reassembled() -> None:
    parser = FrameParser(max_size=1000)
    data = (
        client_frame(0x1, b"he", fin=False)
        + client_frame(0x9, b"ping!")  # control frames may interleave
        + client_frame(0x0, b"ll", fin=False)
        + client_frame(0x0, b"o")
    )
    assert parser.feed(data) == ["hello"]
    assert parser.replies == [bytes([0x8A, 5]) + b"ping!"]


def test_close_frame_reports_code() -> None:
    parser = FrameParser(max_size=1000)
    assert parser.feed(client_frame(0x8, struct.pack("!H", 1001))) == [CloseReceived(1001)]
    assert close_frame(1000) == b"\x88\x02\x03\xe8"


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (client_frame(0x1, b"x", mask=False), CLOSE_PROTOCOL_ERROR),
        (bytes([0xC1, 0x80]) + b"\0\0\0\0", CLOSE_PROTOCOL_ERROR),  # RSV1 set
        (client_frame(0x3, b"x"), CLOSE_PROTOCOL_ERROR),  # reserved opcode
        (client_frame(0x0, b"x"), CLOSE_PROTOCOL_ERROR),  # continuation first
        (client_frame(0x9, b"x", fin=False), CLOSE_PROTOCOL_ERROR),  # fragmented control
        (client_frame(0x9, b"x" * 126), CLOSE_PROTOCOL_ERROR),  # control too long
        (client_frame(0x1, b"\xff\xfe"), CLOSE_INVALID_DATA),
        (client_frame(0x1, b"a", fin=False) + client_frame(0x1, b"b"), CLOSE_PROTOCOL_ERROR),
    ],
)
def test_violations_raise_with_close_code(data: bytes, code: int) -> None:
    with pytest.raises(FrameError) as info:
        FrameParser(max_size=1000).feed(data)
    assert info.value.code == code


def test_oversized_frame_is_refused_from_its_header() -> None:
    parser = FrameParser(max_size=100)
    header_only = client_frame(0x2, b"x" * 101)[:8]
    with pytest.raises(PayloadTooLarge):
        parser.feed(header_only)


def test_oversized_fragmented_message_is_refused() -> None:
    parser = FrameParser(max_size=100)
    with pytest.raises(PayloadTooLarge):
        parser.feed(client_frame(0x2, b"x" * 60, fin=False) + client_frame(0x0, b"x" * 60))


@given(st.binary(max_size=300), st.integers(1, 50))
def test_arbitrary_bytes_raise_only_protocol_errors(data: bytes, chunk: int) -> None:
    parser = FrameParser(max_size=1000)
    try:
        for i in range(0, len(data), chunk):
            parser.feed(data[i : i + chunk])
    except ProtocolError:
        pass


def test_sec_websocket_key_is_validated() -> None:
    assert valid_key("dGhlIHNhbXBsZSBub25jZQ==")
    for key in ["", "dGhlIHNhbXBsZSBub25jZQ=", "é" * 24, "dGhlIHNhbXBsZSBub25jZQ=é", "A" * 24]:
        assert not valid_key(key)
        with pytest.raises(ProtocolError):
            accept_key(key)


def _fragmented(count: int, part: bytes = b"x") -> list[bytes]:
    """A binary message split into ``count`` frames of ``part`` each."""
    return [client_frame(0x2 if i == 0 else 0x0, part, fin=i == count - 1) for i in range(count)]


@pytest.mark.parametrize("whole", [True, False], ids=["one-read", "frame-by-frame"])
def test_many_tiny_continuation_frames_take_linear_time(whole: bool) -> None:
    # Summing the parts again on each continuation made this take ~26 s.
    frames = _fragmented(40_000)
    parser = FrameParser(max_size=1_000_000)
    started = time.perf_counter()
    if whole:
        out = parser.feed(b"".join(frames))
    else:
        out = [m for f in frames for m in parser.feed(f)]
    elapsed = time.perf_counter() - started
    assert out == [b"x" * 40_000]
    assert elapsed < 1.0, f"{elapsed:.2f} s"


def test_large_frame_trickled_in_small_reads_takes_linear_time() -> None:
    # Joining the buffer again on each read copied the partial frame every time.
    data = client_frame(0x2, b"y" * 1_000_000)
    chunks = [data[i : i + 8] for i in range(0, len(data), 8)]
    parser = FrameParser(max_size=1_000_000)
    started = time.perf_counter()
    out = [m for c in chunks for m in parser.feed(c)]
    elapsed = time.perf_counter() - started
    assert out == [b"y" * 1_000_000]
    assert elapsed < 1.5, f"{elapsed:.2f} s"


def test_oversized_fragmented_message_is_refused_before_its_last_frame() -> None:
    parser = FrameParser(max_size=100)
    frames = _fragmented(10, b"z" * 20)  # 200 bytes in all
    for f in frames[:5]:  # 100 bytes: at the limit
        assert parser.feed(f) == []
    with pytest.raises(PayloadTooLarge):
        parser.feed(frames[5][:2])  # the header of the 6th frame is enough


def test_ping_flood_keeps_one_pong_pending() -> None:
    parser = FrameParser(max_size=1000)
    pings = b"".join(client_frame(0x9, b"%d" % i) for i in range(100_000))
    assert parser.feed(pings) == []
    assert parser.replies == [bytes([0x8A, 5]) + b"99999"]
    for i in range(3):  # fed one by one, still one pong: the latest
        parser.feed(client_frame(0x9, b"p%d" % i))
    assert parser.replies == [bytes([0x8A, 2]) + b"p2"]
