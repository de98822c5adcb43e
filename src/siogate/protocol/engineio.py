"""Engine.IO v4 packets and HTTP long-polling payloads (Sans-I/O).

A packet on a WebSocket is one message: text ``<type digit><data>``, or a binary message
that is always a MESSAGE carrying raw bytes. A polling payload joins packets with the
record separator ``\\x1e``; binary packets are written there as ``b<base64>``.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
from dataclasses import dataclass

from ..errors import PayloadTooLarge, ProtocolError

PROTOCOL_VERSION = "4"
RECORD_SEPARATOR = "\x1e"


class PacketType(enum.IntEnum):
    """The seven Engine.IO packet types."""

    OPEN, CLOSE, PING, PONG, MESSAGE, UPGRADE, NOOP = range(7)


@dataclass(frozen=True, slots=True)
class Packet:
    """One Engine.IO packet. ``data`` is ``bytes`` only for binary MESSAGE packets."""

    type: PacketType
    data: str | bytes = ""


EncodedPacket = str | bytes
"""A packet ready for a WebSocket message: text frames are ``str``, binary are ``bytes``."""

# Pre-encoded control packets: they never change, so build them once.
PING = "2"
PONG = "3"
NOOP = "6"
CLOSE = "1"
PROBE_PONG = "3probe"


def encode(packet: Packet) -> EncodedPacket:
    """Encode ``packet`` for a WebSocket message."""
    if isinstance(packet.data, bytes):
        if packet.type is not PacketType.MESSAGE:
            raise ProtocolError("only MESSAGE packets may carry binary data")
        return packet.data
    return f"{packet.type:d}{packet.data}"


def encode_open(
    sid: str, *, upgrades: list[str], ping_interval: int, ping_timeout: int, max_payload: int
) -> str:
    """The OPEN packet that starts every session (intervals in milliseconds)."""
    handshake = {
        "sid": sid,
        "upgrades": upgrades,
        "pingInterval": ping_interval,
        "pingTimeout": ping_timeout,
        "maxPayload": max_payload,
    }
    return "0" + json.dumps(handshake, separators=(",", ":"))


def decode(message: str | bytes) -> Packet:
    """Decode one WebSocket message into a packet."""
    if isinstance(message, bytes):
        return Packet(PacketType.MESSAGE, message)
    return _decode_text(message)


def _decode_text(text: str) -> Packet:
    if not text:
        raise ProtocolError("empty packet")
    digit = text[0]
    if not "0" <= digit <= "6":
        raise ProtocolError(f"unknown packet type {digit!r}")
    return Packet(PacketType(ord(digit) - 48), text[1:])


def encode_payload(packets: list[EncodedPacket]) -> bytes:
    """Join encoded packets into one long-polling response body."""
    parts = [
        p if isinstance(p, str) else "b" + base64.b64encode(p).decode("ascii") for p in packets
    ]
    return RECORD_SEPARATOR.join(parts).encode("utf-8")


def split_payload(body: bytes, *, max_payload: int) -> list[str]:
    """Split a long-polling request body into its packets' text (see :func:`decode_part`)."""
    if len(body) > max_payload:
        raise PayloadTooLarge(f"payload of {len(body)} bytes exceeds {max_payload}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError("payload is not valid UTF-8") from exc
    return text.split(RECORD_SEPARATOR)


def decode_part(part: str) -> Packet:
    """One packet of a long-polling payload (``b`` + base64 for binary)."""
    if part.startswith("b"):
        try:
            data = base64.b64decode(part[1:], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ProtocolError("invalid base64 in binary packet") from exc
        return Packet(PacketType.MESSAGE, data)
    return _decode_text(part)


def decode_payload(body: bytes, *, max_payload: int) -> list[Packet]:
    """Split a long-polling request body into packets."""
    return [decode_part(part) for part in split_payload(body, max_payload=max_payload)]
