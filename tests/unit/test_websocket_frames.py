"""RFC 6455 server framing: masked client frames in, messages and replies out."""

from __future__ import annotations

import os
import struct

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
