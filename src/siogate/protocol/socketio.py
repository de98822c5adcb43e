"""Socket.IO v5 packets, including binary attachments (Sans-I/O).

Wire form of one packet, carried in an Engine.IO MESSAGE::

    <type>[<attachments>-][<namespace>,][<ack id>][<JSON data>]

The namespace is omitted for ``/``. Binary leaves of the data are replaced by
``{"_placeholder": true, "num": i}`` and sent as ``<attachments>`` binary messages after
the text packet (types BINARY_EVENT and BINARY_ACK).
"""

from __future__ import annotations

import base64
import enum
import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import ProtocolError

MAX_ATTACHMENTS = 100
RESERVED_EVENTS = frozenset(
    {"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"}
)


class PacketType(enum.IntEnum):
    """The seven Socket.IO packet types."""

    CONNECT, DISCONNECT, EVENT, ACK, CONNECT_ERROR, BINARY_EVENT, BINARY_ACK = range(7)


@dataclass(slots=True)
class Packet:
    """One decoded Socket.IO packet; ``data`` has its binary leaves restored."""

    type: PacketType
    namespace: str = "/"
    data: Any = None
    id: int | None = None
    attachments: list[bytes] = field(default_factory=list)


def _reject_constant(name: str) -> Any:
    raise ProtocolError(f"{name} is not valid JSON")


_decode_json = json.JSONDecoder(parse_constant=_reject_constant).decode
_encode_json_utf8 = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":")
).encode
_encode_json_ascii = json.JSONEncoder(
    ensure_ascii=True, allow_nan=False, separators=(",", ":")
).encode


def dumps(value: Any) -> str:
    """Compact JSON that is always valid UTF-8 once encoded.

    Non-ASCII text stays as is (smaller frames); a string holding a lone surrogate
    (possible when the value came from JavaScript) falls back to ``\\u`` escapes, which
    every JSON parser maps back to the same UTF-16 string.
    """
    text = _encode_json_utf8(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _encode_json_ascii(value)
    return text


def loads(text: str) -> Any:
    """Parse JSON, refusing ``NaN`` and ``Infinity`` (JavaScript cannot send them)."""
    try:
        return _decode_json(text)
    except ValueError as exc:
        raise ProtocolError(f"invalid JSON: {exc}") from exc
    except RecursionError:
        raise ProtocolError("JSON nested too deeply") from None


# Encoding


def _deconstruct(value: Any, buffers: list[bytes]) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        buffers.append(bytes(value))
        return {"_placeholder": True, "num": len(buffers) - 1}
    if isinstance(value, list | tuple):
        return [_deconstruct(v, buffers) for v in value]
    if isinstance(value, dict):
        return {k: _deconstruct(v, buffers) for k, v in value.items()}
    return value


def json_safe(value: Any) -> Any:
    """``value`` with each bytes leaf as ``{"_binary": "<base64>"}``, for JSON documents
    outside the protocol (webhook bodies, ``siogate listen`` output)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {"_binary": base64.b64encode(value).decode("ascii")}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    return value


def has_binary(value: Any) -> bool:
    """Whether ``value`` holds any bytes leaf (and so needs attachments)."""
    # A loop rather than recursion: nesting is limited by the JSON encoder's depth only.
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, bytes | bytearray | memoryview):
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def encode(packet: Packet) -> list[str | bytes]:
    """Encode ``packet`` as Engine.IO MESSAGE payloads: one text, then the attachments.

    The returned strings do not include the Engine.IO ``4`` prefix; see
    :func:`encode_messages` for ready-to-send Engine.IO packets.
    """
    ptype = packet.type
    buffers: list[bytes] = []
    data = packet.data
    if ptype in (PacketType.EVENT, PacketType.ACK) and has_binary(data):
        ptype = PacketType.BINARY_EVENT if ptype is PacketType.EVENT else PacketType.BINARY_ACK
    if ptype in (PacketType.BINARY_EVENT, PacketType.BINARY_ACK):
        data = _deconstruct(data, buffers)
    parts = [str(int(ptype))]
    if buffers:
        parts.append(f"{len(buffers)}-")
    if packet.namespace != "/":
        parts.append(packet.namespace + ",")
    if packet.id is not None:
        parts.append(str(packet.id))
    if data is not None:
        parts.append(dumps(data))
    return ["".join(parts), *buffers]


def encode_messages(packet: Packet) -> list[str | bytes]:
    """Encode ``packet`` as Engine.IO packets (``4``-prefixed text, raw binary)."""
    first, *attachments = encode(packet)
    return ["4" + str(first), *attachments]


def event_packet(namespace: str, event: str, args: list[Any], ack_id: int | None = None) -> Packet:
    return Packet(PacketType.EVENT, namespace, [event, *args], ack_id)


# Decoding


def _reconstruct(value: Any, attachments: list[bytes]) -> Any:
    if isinstance(value, dict):
        if value.get("_placeholder") is True and len(value) == 2:
            num = value.get("num")
            if type(num) is not int or not 0 <= num < len(attachments):
                raise ProtocolError("invalid attachment placeholder")
            return attachments[num]
        return {k: _reconstruct(v, attachments) for k, v in value.items()}
    if isinstance(value, list):
        return [_reconstruct(v, attachments) for v in value]
    return value


def _parse(text: str) -> tuple[Packet, int]:
    """Parse the text part of a packet; returns it and its attachment count."""
    if not text or not "0" <= text[0] <= "6":
        raise ProtocolError("unknown Socket.IO packet type")
    ptype = PacketType(ord(text[0]) - 48)
    i, n = 1, len(text)
    attachments = 0
    if ptype in (PacketType.BINARY_EVENT, PacketType.BINARY_ACK):
        dash = text.find("-", i)
        digits = text[i:dash] if dash > 0 else ""
        if not digits.isdigit() or not digits.isascii():
            raise ProtocolError("invalid attachment count")
        attachments = int(digits)
        if attachments > MAX_ATTACHMENTS:
            raise ProtocolError(f"more than {MAX_ATTACHMENTS} attachments")
        i = dash + 1
    namespace = "/"
    if i < n and text[i] == "/":
        comma = text.find(",", i)
        end = n if comma < 0 else comma
        namespace = text[i:end]
        i = end + 1 if comma >= 0 else end
    start = i
    while i < n and "0" <= text[i] <= "9":
        i += 1
    ack_id = int(text[start:i]) if i > start else None
    if ack_id is not None and (i - start > 16):
        raise ProtocolError("ack id too long")
    data = loads(text[i:]) if i < n else None
    packet = Packet(ptype, namespace, data, ack_id)
    _validate(packet)
    return packet, attachments


def _validate(packet: Packet) -> None:
    ptype, data = packet.type, packet.data
    if ptype is PacketType.CONNECT:
        ok = data is None or isinstance(data, dict)
    elif ptype is PacketType.DISCONNECT:
        ok = data is None
    elif ptype is PacketType.CONNECT_ERROR:
        ok = isinstance(data, dict | str)
    elif ptype in (PacketType.EVENT, PacketType.BINARY_EVENT):
        ok = (
            isinstance(data, list)
            and len(data) > 0
            and (
                (isinstance(data[0], str) and data[0] not in RESERVED_EVENTS)
                or (type(data[0]) is int)
            )
        )
    else:  # ACK, BINARY_ACK
        ok = isinstance(data, list) and packet.id is not None
    if not ok:
        raise ProtocolError(f"invalid payload for {ptype.name} packet")


class Decoder:
    """Reassembles packets from Engine.IO message payloads (binary attachments included).

    Feed every MESSAGE payload in order; a complete packet is returned once its last
    attachment has arrived, ``None`` while it is still waiting for attachments.
    """

    __slots__ = ("_pending", "_expected")

    def __init__(self) -> None:
        self._pending: Packet | None = None
        self._expected = 0

    @property
    def waiting(self) -> bool:
        return self._pending is not None

    def feed(self, payload: str | bytes) -> Packet | None:
        if isinstance(payload, bytes):
            return self._feed_binary(payload)
        if self._pending is not None:
            raise ProtocolError("text packet received while waiting for attachments")
        packet, attachments = _parse(payload)
        if attachments == 0:
            if packet.type in (PacketType.BINARY_EVENT, PacketType.BINARY_ACK):
                packet.data = _reconstruct(packet.data, [])
            return packet
        self._pending, self._expected = packet, attachments
        return None

    def _feed_binary(self, payload: bytes) -> Packet | None:
        packet = self._pending
        if packet is None:
            raise ProtocolError("unexpected binary attachment")
        packet.attachments.append(payload)
        if len(packet.attachments) < self._expected:
            return None
        packet.data = _reconstruct(packet.data, packet.attachments)
        self._pending, self._expected = None, 0
        return packet


def decode(text: str) -> Packet:
    """Decode a packet that has no attachments (``ProtocolError`` if it announces any)."""
    packet, attachments = _parse(text)
    if attachments:
        raise ProtocolError("packet announces attachments")
    return packet
