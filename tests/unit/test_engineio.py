"""Engine.IO v4 codec: byte fixtures in, packets out, and back."""

from __future__ import annotations

import json

import pytest

from siogate.errors import PayloadTooLarge, ProtocolError
from siogate.protocol import engineio
from siogate.protocol.engineio import Packet, PacketType


@pytest.mark.parametrize(
    ("wire", "packet"),
    [
        ("0{}", Packet(PacketType.OPEN, "{}")),
        ("1", Packet(PacketType.CLOSE)),
        ("2", Packet(PacketType.PING)),
        ("2probe", Packet(PacketType.PING, "probe")),
        ("3", Packet(PacketType.PONG)),
        ("3probe", Packet(PacketType.PONG, "probe")),
        ("4hello €", Packet(PacketType.MESSAGE, "hello €")),
        ("5", Packet(PacketType.UPGRADE)),
        ("6", Packet(PacketType.NOOP)),
        (b"\x01\x02\x03", Packet(PacketType.MESSAGE, b"\x01\x02\x03")),
    ],
)
def test_every_packet_type_round_trips(wire: str | bytes, packet: Packet) -> None:
    assert engineio.decode(wire) == packet
    assert engineio.encode(packet) == wire


@pytest.mark.parametrize("wire", ["", "7", "x", "a4"])
def test_invalid_packets_raise_protocol_error(wire: str) -> None:
    with pytest.raises(ProtocolError):
        engineio.decode(wire)


def test_binary_data_only_in_message_packets() -> None:
    with pytest.raises(ProtocolError):
        engineio.encode(Packet(PacketType.PING, b"x"))


def test_open_packet_announces_session_settings() -> None:
    wire = engineio.encode_open(
        "abc", upgrades=["websocket"], ping_interval=300, ping_timeout=200, max_payload=1000
    )
    assert wire[0] == "0"
    assert json.loads(wire[1:]) == {
        "sid": "abc",
        "upgrades": ["websocket"],
        "pingInterval": 300,
        "pingTimeout": 200,
        "maxPayload": 1000,
    }


def test_payload_joins_with_record_separator_and_base64_for_binary() -> None:
    body = engineio.encode_payload(["4hello", b"\x01\x02\x03\x04", "2"])
    assert body == b"4hello\x1ebAQIDBA==\x1e2"


def test_payload_decodes_each_part() -> None:
    packets = engineio.decode_payload(b"4hello\x1ebAQIDBA==\x1e3", max_payload=100)
    assert packets == [
        Packet(PacketType.MESSAGE, "hello"),
        Packet(PacketType.MESSAGE, b"\x01\x02\x03\x04"),
        Packet(PacketType.PONG),
    ]


def test_payload_unicode_is_utf8() -> None:
    body = engineio.encode_payload(["4😀 𝄞"])
    assert engineio.decode_payload(body, max_payload=100) == [Packet(PacketType.MESSAGE, "😀 𝄞")]


@pytest.mark.parametrize(
    "body",
    [b"", b"4ok\x1e", b"b!!notbase64", b"\xff\xfe", b"9"],
)
def test_malformed_payloads_raise_protocol_error(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        engineio.decode_payload(body, max_payload=100)


def test_payload_over_limit_is_refused() -> None:
    with pytest.raises(PayloadTooLarge):
        engineio.decode_payload(b"4" + b"x" * 100, max_payload=100)
