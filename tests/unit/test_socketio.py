"""Socket.IO v5 codec: every packet type, namespaces, ack ids and binary attachments."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siogate.errors import PayloadTooLarge, ProtocolError
from siogate.protocol import socketio
from siogate.protocol.socketio import Decoder, Packet, PacketType


@pytest.mark.parametrize(
    ("wire", "packet"),
    [
        ("0", Packet(PacketType.CONNECT)),
        ('0{"token":"123"}', Packet(PacketType.CONNECT, data={"token": "123"})),
        ("0/admin,", Packet(PacketType.CONNECT, "/admin")),
        ('0/admin,{"sid":"x"}', Packet(PacketType.CONNECT, "/admin", {"sid": "x"})),
        ("1", Packet(PacketType.DISCONNECT)),
        ("1/admin,", Packet(PacketType.DISCONNECT, "/admin")),
        ('2["hello",1]', Packet(PacketType.EVENT, data=["hello", 1])),
        ('2/admin,["hello"]', Packet(PacketType.EVENT, "/admin", ["hello"])),
        ('212["hello"]', Packet(PacketType.EVENT, data=["hello"], id=12)),
        ('2/admin,7["a",{"b":[]}]', Packet(PacketType.EVENT, "/admin", ["a", {"b": []}], 7)),
        ("3/admin,13[]", Packet(PacketType.ACK, "/admin", [], 13)),
        ('4{"message":"no"}', Packet(PacketType.CONNECT_ERROR, data={"message": "no"})),
    ],
)
def test_text_packets_round_trip(wire: str, packet: Packet) -> None:
    assert socketio.decode(wire) == packet
    assert socketio.encode(packet) == [wire]


def test_encode_messages_adds_engineio_prefix() -> None:
    packet = socketio.event_packet("/", "news", [{"a": 1}])
    assert socketio.encode_messages(packet) == ['42["news",{"a":1}]']


def test_binary_event_uses_placeholders_and_attachments() -> None:
    packet = socketio.event_packet("/admin", "file", [b"\x00\x01", {"x": [b"\x02"]}], 3)
    encoded = socketio.encode(packet)
    assert encoded == [
        '52-/admin,3["file",{"_placeholder":true,"num":0},{"x":[{"_placeholder":true,"num":1}]}]',
        b"\x00\x01",
        b"\x02",
    ]
    decoder = Decoder()
    assert decoder.feed(encoded[0]) is None
    assert decoder.waiting
    assert decoder.feed(encoded[1]) is None
    decoded = decoder.feed(encoded[2])
    assert decoded is not None
    assert decoded.type is PacketType.BINARY_EVENT
    assert decoded.data == ["file", b"\x00\x01", {"x": [b"\x02"]}]
    assert decoded.id == 3 and decoded.namespace == "/admin"
    assert not decoder.waiting


def test_binary_ack() -> None:
    packet = Packet(PacketType.ACK, "/", [b"\xff"], 9)
    first, blob = socketio.encode(packet)
    assert first == '61-9[{"_placeholder":true,"num":0}]'
    decoder = Decoder()
    assert decoder.feed(first) is None
    decoded = decoder.feed(blob)
    assert decoded is not None and decoded.data == [b"\xff"] and decoded.id == 9


def test_binary_event_with_zero_attachments() -> None:
    decoded = Decoder().feed('50-["a"]')
    assert decoded is not None and decoded.data == ["a"]


@pytest.mark.parametrize(
    "wire",
    [
        "",
        "7",
        "2",  # event without payload
        "2[]",  # event without a name
        '2["connect"]',  # reserved name
        "2{}",
        "3[]",  # ack without id
        '0"str"',  # connect payload must be an object
        '1{"a":1}',  # disconnect carries nothing
        '2["a",NaN]',
        '2["a",Infinity]',
        "2[1,",
        '5x-["a"]',
        '5101-["a"]',  # too many attachments
        '2["a"]junk',
        '2["a",1e999]',  # valid JSON, but infinity: no encoder writes it back
        "4",  # connect_error without payload
    ],
)
def test_invalid_packets_raise_protocol_error(wire: str) -> None:
    with pytest.raises(ProtocolError):
        Decoder().feed(wire)


def test_unexpected_binary_raises() -> None:
    with pytest.raises(ProtocolError):
        Decoder().feed(b"\x00")


def test_text_while_waiting_for_attachment_raises() -> None:
    decoder = Decoder()
    decoder.feed('51-["a",{"_placeholder":true,"num":0}]')
    with pytest.raises(ProtocolError):
        decoder.feed('2["b"]')


def test_placeholder_out_of_range_raises() -> None:
    decoder = Decoder()
    decoder.feed('51-["a",{"_placeholder":true,"num":5}]')
    with pytest.raises(ProtocolError):
        decoder.feed(b"x")


def test_dumps_keeps_unicode_and_escapes_lone_surrogates() -> None:
    assert socketio.dumps(["😀"]) == '["😀"]'
    lone = socketio.dumps(["\ud83d"])
    lone.encode("utf-8")  # always encodable
    assert socketio.loads(lone) == ["\ud83d"]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


@given(
    st.text(min_size=1).filter(lambda s: s not in socketio.RESERVED_EVENTS),
    st.lists(json_values | st.binary(max_size=20), max_size=4),
    st.sampled_from(["/", "/a", "/deep/ns"]),
    st.none() | st.integers(0, 2**31),
)
def test_any_event_round_trips(event: str, args: list[object], ns: str, ack: int | None) -> None:
    encoded = socketio.encode(socketio.event_packet(ns, event, args, ack))
    decoder = Decoder()
    results = [decoder.feed(part) for part in encoded]
    decoded = results[-1]
    assert decoded is not None and all(r is None for r in results[:-1])
    assert decoded.namespace == ns and decoded.id == ack
    assert _same(decoded.data, [event, *args])


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b and type(a) is type(b) or (isinstance(a, int | float) and a == b)


@pytest.mark.parametrize(
    "wire",
    [
        "2" + "1" * 5000 + '["a"]',  # int() refuses over 4,300 digits with a ValueError
        "2" + "1" * 17 + '["a"]',  # longer than a JavaScript safe integer
        "5" + "1" * 5000 + '-["a"]',  # attachment count
        "5" + "0" * 7 + '-["a"]',
    ],
)
def test_overlong_numbers_raise_protocol_error(wire: str) -> None:
    with pytest.raises(ProtocolError):
        Decoder().feed(wire)


@pytest.mark.parametrize("container", ["list", "dict"])
def test_deeply_nested_placeholder_tree_is_rebuilt_without_recursion(container: str) -> None:
    # 500 levels parse as JSON, but rebuilding them recursively (two frames per level)
    # ran out of Python's recursion limit.
    depth = 500
    leaf = '{"_placeholder":true,"num":0}'
    if container == "list":
        tree = "[" * depth + leaf + "]" * depth
    else:
        tree = '{"k":' * depth + leaf + "}" * depth
    decoder = Decoder()
    assert decoder.feed(f'51-["a",{tree}]') is None
    packet = decoder.feed(b"bin")
    assert packet is not None
    node = packet.data[1]
    for _ in range(depth):
        node = node[0] if container == "list" else node["k"]
    assert node == b"bin"


def test_attachment_count_is_limited_per_decoder() -> None:
    with pytest.raises(ProtocolError, match="more than 2 attachments"):
        Decoder(max_attachments=2).feed('53-["a"]')
    assert Decoder(max_attachments=2).feed('52-["a"]') is None
    with pytest.raises(ProtocolError):
        Decoder(max_attachments=0).feed('51-["a"]')


def test_attachment_bytes_are_limited_as_they_arrive() -> None:
    decoder = Decoder(max_attachment_bytes=10)
    assert decoder.feed('53-["a"]') is None
    assert decoder.feed(b"x" * 6) is None
    with pytest.raises(PayloadTooLarge):
        decoder.feed(b"x" * 6)  # refused before the third attachment


def test_discarded_packet_drops_its_attachments() -> None:
    decoder = Decoder(max_attachment_bytes=10)
    assert decoder.feed('52-/x,["a",{"_placeholder":true,"num":1}]') is None
    assert decoder.namespace == "/x"
    decoder.discard()
    assert decoder.waiting and decoder.namespace is None
    assert decoder.feed(b"y" * 100) is None  # not kept, so not counted against the limit
    with pytest.raises(ProtocolError):
        decoder.feed('2["b"]')  # the second attachment is still due
    assert decoder.feed(b"y" * 100) is None
    assert not decoder.waiting
    packet = decoder.feed('2["b"]')
    assert packet is not None and packet.data == ["b"]


def test_nesting_is_limited_and_what_is_accepted_can_be_written_back() -> None:
    def packet(depth: int) -> str:  # data nested ``depth`` levels, counting itself
        return (
            '51-["a",'
            + "[" * (depth - 2)
            + '{"_placeholder":true,"num":0}'
            + "]" * (depth - 2)
            + "]"
        )

    decoder = Decoder()
    assert decoder.feed(packet(socketio.MAX_DEPTH)) is None
    decoded = decoder.feed(b"bin")
    assert decoded is not None
    decoded.namespace = "/ns"
    encoded = socketio.encode(decoded)  # the same depth, written back (an echo)
    assert encoded[1:] == [b"bin"]
    assert socketio.json_safe(decoded.data)  # and as a webhook body
    with pytest.raises(ProtocolError, match="nested"):
        Decoder().feed(packet(socketio.MAX_DEPTH + 1))
    with pytest.raises(ProtocolError, match="nested"):
        Decoder().feed('2["a",' + '{"k":' * 600 + "1" + "}" * 600 + "]")


_json_leaf = st.none() | st.booleans() | st.integers() | st.text() | st.binary(max_size=8)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(
    namespace=st.sampled_from(["/", "/admin"]),
    # Reserved names (connect, removeListener...) are refused by the decoder either way.
    event=st.text(min_size=1).filter(lambda e: e not in socketio.RESERVED_EVENTS),
    args=st.lists(_json, max_size=3),
    offset=st.text(),
)
def test_a_trailing_string_spliced_in_decodes_as_if_it_were_encoded(
    namespace: str, event: str, args: list[object], offset: str
) -> None:
    # Recovery adds the offset to the packet encoded for the emit; a client must read
    # the same event as the one encoded with the offset among its arguments.
    spliced = socketio.encode_messages(socketio.event_packet(namespace, event, args), offset)
    direct = socketio.encode_messages(socketio.event_packet(namespace, event, [*args, offset]))
    assert spliced[1:] == direct[1:]
    decoded = []
    for wire in (spliced, direct):
        decoder = Decoder()
        packets = [decoder.feed(m[1:] if isinstance(m, str) else m) for m in wire]
        decoded.append(packets[-1])
    assert decoded[0] == decoded[1]
    assert decoded[0].data == [event, *args, offset]


def test_a_trailing_offset_is_the_same_text_as_encoded() -> None:
    news = socketio.event_packet("/", "news", [{"n": 1}])
    assert socketio.encode_messages(news, "a1b2c3d4-17") == ['42["news",{"n":1},"a1b2c3d4-17"]']
    bare = socketio.event_packet("/chat", "ping", [])
    assert socketio.encode_messages(bare, "1-0") == ['42/chat,["ping","1-0"]']
