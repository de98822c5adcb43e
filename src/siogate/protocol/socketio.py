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
import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import PayloadTooLarge, ProtocolError

# Default attachments per packet for a Decoder. The server's sessions use the lower
# ``max_attachments`` setting (10); this default only serves decoders of a trusted
# peer (the client SDK reading the gateway).
MAX_ATTACHMENTS = 100
# Digits accepted in an ack id (JavaScript's safe integers have 16) and in an
# attachment count; checked before int(), which refuses over 4,300 digits with a
# ValueError and is quadratic below that.
_MAX_ID_DIGITS = 16
_MAX_COUNT_DIGITS = 6
# Containers nested in a packet's data, counting the data itself; the HTTP API has the
# same limit. Deeper data parses but cannot be written back (for a webhook, an ack, an
# echo) within Python's recursion limit.
MAX_DEPTH = 512
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


def _finite_float(text: str) -> float:
    # ``1e999`` is valid JSON but becomes infinity, which no encoder here writes back
    # (allow_nan=False): refuse it on the way in, like NaN and Infinity.
    value = float(text)
    if math.isinf(value):
        raise ProtocolError(f"number out of range: {text[:20]}")
    return value


_decode_json = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float).decode
_encode_json_utf8 = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":")
).encode
_encode_json_ascii = json.JSONEncoder(
    ensure_ascii=True, allow_nan=False, separators=(",", ":")
).encode
# One JSON string with anything not ASCII escaped (valid UTF-8 whatever the string).
_encode_string: Any = json.encoder.encode_basestring_ascii


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


# _deconstruct and json_safe recurse with one frame per level (no comprehensions, which
# are a frame of their own on Python 3.11): a decoded packet may nest MAX_DEPTH levels,
# and writing it back must fit in the recursion limit. Recursion, not a loop, so that a
# cyclic value from server code still ends in RecursionError rather than looping.


def _deconstruct(value: Any, buffers: list[bytes]) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        buffers.append(bytes(value))
        return {"_placeholder": True, "num": len(buffers) - 1}
    if isinstance(value, list | tuple):
        items = []
        for v in value:
            items.append(_deconstruct(v, buffers))
        return items
    if isinstance(value, dict):
        members = {}
        for k, v in value.items():
            members[k] = _deconstruct(v, buffers)
        return members
    return value


def json_safe(value: Any) -> Any:
    """``value`` with each bytes leaf as ``{"_binary": "<base64>"}``, for JSON documents
    outside the protocol (webhook bodies, ``siogate listen`` output)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {"_binary": base64.b64encode(value).decode("ascii")}
    if isinstance(value, list | tuple):
        items = []
        for v in value:
            items.append(json_safe(v))
        return items
    if isinstance(value, dict):
        members = {}
        for k, v in value.items():
            members[k] = json_safe(v)
        return members
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


def encode_messages(packet: Packet, trailing: str | None = None) -> list[str | bytes]:
    """Encode ``packet`` as Engine.IO packets (``4``-prefixed text, raw binary).

    ``trailing``: a string appended to the data of an event packet (whose data is a
    list) as it is written, as if it were its last element; a string adds no attachment.
    Connection state recovery sends every emit's offset this way, without copying the
    arguments or walking them again for binary leaves (bench/recovery_cost.py).
    """
    first, *attachments = encode(packet)
    if trailing is not None:
        # The text ends with the data, a JSON array.
        return [f"4{first[:-1]!s},{_encode_string(trailing)}]", *attachments]
    return ["4" + str(first), *attachments]


def event_packet(namespace: str, event: str, args: list[Any], ack_id: int | None = None) -> Packet:
    return Packet(PacketType.EVENT, namespace, [event, *args], ack_id)


# Decoding


def _placeholder_index(value: dict[str, Any], count: int) -> int | None:
    """The attachment index ``value`` stands for, or None if it is not a placeholder."""
    if value.get("_placeholder") is not True or len(value) != 2:
        return None
    num = value.get("num")
    if type(num) is not int or not 0 <= num < count:
        raise ProtocolError("invalid attachment placeholder")
    return num


def _reconstruct(value: Any, attachments: list[bytes]) -> Any:
    """``value`` (freshly parsed JSON, changed in place) with placeholders replaced."""
    count = len(attachments)
    if isinstance(value, dict):
        num = _placeholder_index(value, count)
        if num is not None:
            return attachments[num]
    # A loop rather than recursion: a hostile packet may nest as deep as the JSON
    # parser allows, which is deeper than Python's recursion limit leaves room for here.
    stack: list[dict[str, Any] | list[Any]] = [value] if isinstance(value, dict | list) else []
    while stack:
        container = stack.pop()
        items = container.items() if isinstance(container, dict) else enumerate(container)
        for key, item in items:
            if isinstance(item, dict):
                num = _placeholder_index(item, count)
                if num is None:
                    stack.append(item)
                else:
                    container[key] = attachments[num]  # type: ignore[index]
            elif isinstance(item, list):
                stack.append(item)
    return value


def deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` nests dicts and lists more than ``limit`` levels (no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def _parse(text: str, max_attachments: int) -> tuple[Packet, int]:
    """Parse the text part of a packet; returns it and its attachment count."""
    if not text or not "0" <= text[0] <= "6":
        raise ProtocolError("unknown Socket.IO packet type")
    ptype = PacketType(ord(text[0]) - 48)
    i, n = 1, len(text)
    attachments = 0
    if ptype in (PacketType.BINARY_EVENT, PacketType.BINARY_ACK):
        dash = text.find("-", i)
        digits = text[i:dash] if dash > 0 else ""
        if not digits.isdigit() or not digits.isascii() or len(digits) > _MAX_COUNT_DIGITS:
            raise ProtocolError("invalid attachment count")
        attachments = int(digits)
        if attachments > max_attachments:
            raise ProtocolError(f"more than {max_attachments} attachments")
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
    if i - start > _MAX_ID_DIGITS:
        raise ProtocolError("ack id too long")
    ack_id = int(text[start:i]) if i > start else None
    data = loads(text[i:]) if i < n else None
    # Counting brackets (C speed) rules out deep nesting for almost every packet; only
    # packets with many containers are walked.
    if text.count("[", i) + text.count("{", i) > MAX_DEPTH and deeper_than(data, MAX_DEPTH):
        raise ProtocolError(f"packet data nested more than {MAX_DEPTH} levels deep")
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

    A packet may announce at most ``max_attachments`` attachments, whose sizes together
    stay within ``max_attachment_bytes`` (None: no limit); both are checked as the
    packet and its attachments arrive. After :meth:`discard`, the attachments of the
    waiting packet are counted down and dropped instead of kept.
    """

    __slots__ = ("_pending", "_expected", "_size", "_skip", "_max_attachments", "_max_bytes")

    def __init__(
        self, *, max_attachments: int = MAX_ATTACHMENTS, max_attachment_bytes: int | None = None
    ) -> None:
        self._pending: Packet | None = None
        self._expected = 0
        self._size = 0
        # Attachments still to drop for a discarded packet.
        self._skip = 0
        self._max_attachments = max_attachments
        self._max_bytes = max_attachment_bytes

    @property
    def waiting(self) -> bool:
        """Whether attachments are expected (kept, or to be dropped)."""
        return self._pending is not None or self._skip > 0

    @property
    def namespace(self) -> str | None:
        """Namespace of the packet whose attachments are being kept, if any."""
        return self._pending.namespace if self._pending is not None else None

    def discard(self) -> None:
        """Drop the packet waiting for attachments: they are counted, not kept."""
        packet = self._pending
        if packet is not None:
            self._skip = self._expected - len(packet.attachments)
            self._pending, self._expected, self._size = None, 0, 0

    def feed(self, payload: str | bytes) -> Packet | None:
        if isinstance(payload, bytes):
            return self._feed_binary(payload)
        if self._pending is not None or self._skip:
            raise ProtocolError("text packet received while waiting for attachments")
        packet, attachments = _parse(payload, self._max_attachments)
        if attachments == 0:
            if packet.type in (PacketType.BINARY_EVENT, PacketType.BINARY_ACK):
                packet.data = _reconstruct(packet.data, [])
            return packet
        self._pending, self._expected, self._size = packet, attachments, 0
        return None

    def _feed_binary(self, payload: bytes) -> Packet | None:
        if self._skip:
            self._skip -= 1
            return None
        packet = self._pending
        if packet is None:
            raise ProtocolError("unexpected binary attachment")
        self._size += len(payload)
        if self._max_bytes is not None and self._size > self._max_bytes:
            raise PayloadTooLarge(f"attachments of one packet exceed {self._max_bytes} bytes")
        packet.attachments.append(payload)
        if len(packet.attachments) < self._expected:
            return None
        packet.data = _reconstruct(packet.data, packet.attachments)
        self._pending, self._expected, self._size = None, 0, 0
        return packet


def decode(text: str) -> Packet:
    """Decode a packet that has no attachments (``ProtocolError`` if it announces any)."""
    packet, attachments = _parse(text, MAX_ATTACHMENTS)
    if attachments:
        raise ProtocolError("packet announces attachments")
    return packet
