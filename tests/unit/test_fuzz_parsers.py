"""Property-based fuzzing of the sans-I/O parsers with hostile input.

Property, for every entry point a peer can reach: any input ends in a result or a
:class:`~siogate.errors.ProtocolError` (``PayloadTooLarge`` included), never another
exception (``ValueError`` from ``int()``, ``RecursionError``, ``UnicodeError``,
``IndexError``...). Inputs are drawn both as random bytes/text and from a grammar close
to the real wire formats, so that the fuzzer gets past the first checks.

The example counts keep every fuzz test of this file and ``test_fuzz_api.py`` together
well under 20 s on a loaded 2-core machine.
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from siogate.errors import ProtocolError
from siogate.protocol import engineio, socketio
from siogate.protocol.events import SessionClosed
from siogate.protocol.session import Session, State
from siogate.protocol.websocket import FrameParser, accept_key, valid_key

fuzz = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Grammar pieces

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=10)
    | st.fixed_dictionaries(  # attachment placeholders, valid or not
        {"_placeholder": st.just(True), "num": st.integers(-2, 12) | st.text(max_size=2)}
    ),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)

# Values around the limits that matter, drawn explicitly (the fuzzer favours small
# ones): int() refuses over 4,300 digits, ack ids have at most 16, and nesting near
# Python's recursion limit (1,000 frames) parses as JSON but breaks recursive code.
_long_digits = st.sampled_from([17, 4301, 6000]).map(lambda n: "9" * n)
_depths = st.sampled_from([300, 510, 600, 1200])
_PLACEHOLDER = '{"_placeholder":true,"num":0}'

_deep_json = st.one_of(
    _depths.map(lambda n: '["a",' + "[" * n + "]" * n + "]"),
    _depths.map(lambda n: '["a",' + '{"k":' * n + "0" + "}" * n + "]"),
    _depths.map(lambda n: '["a",' + "[" * n + _PLACEHOLDER + "]" * n + "]"),
    _depths.map(lambda n: "[" + '{"k":' * n + _PLACEHOLDER + "}" * n + "]"),
)

# Packet data: valid JSON, deep JSON, or text that json.dumps would not produce.
raw_json = st.one_of(
    st.builds(json.dumps, json_values),
    _deep_json,
    st.sampled_from(["NaN", "-Infinity", "[1e999]", '["a",]', "{", "]", '"\\ud800"', "[-0]"])
    | _long_digits.map(lambda d: f"[{d}]"),
    st.text(max_size=20),
)

digits = st.one_of(
    st.integers(0, 12).map(str),
    st.integers(0, 2**60).map(str),
    _long_digits,
    st.sampled_from(["", "-1", "０", "²", "1_0", " 1", "007"]),
)

namespaces = st.sampled_from(["", "/admin,", "/a/b,", "/x", "/é,", "/,", "/"])


@st.composite
def sio_text(draw: st.DrawFn) -> str:
    """One Socket.IO text packet, mostly well formed."""
    ptype = draw(st.sampled_from([*"0123456", "7", "a", ""]))
    count = draw(digits) + "-" if ptype in ("5", "6") else ""
    return "".join(
        [
            ptype,
            count,
            draw(namespaces),
            draw(st.none() | digits) or "",
            draw(st.none() | raw_json) or "",
        ]
    )


@st.composite
def binary_sequence(draw: st.DrawFn) -> list[str | bytes]:
    """A BINARY_EVENT / BINARY_ACK text packet and about as many attachments as it says."""
    count = draw(st.integers(0, 4))
    text = "".join(
        [
            draw(st.sampled_from("56")),
            draw(st.just(str(count)) | digits),
            "-",
            draw(namespaces),
            draw(st.none() | st.just("7") | digits) or "",
            draw(raw_json),
        ]
    )
    sent = draw(st.integers(max(0, count - 1), count + 1))
    return [text, *draw(st.lists(st.binary(max_size=30), min_size=sent, max_size=sent))]


sio_payloads = st.one_of(sio_text(), st.binary(max_size=30), st.text(max_size=30))
sio_sequences = st.lists(sio_payloads.map(lambda p: [p]) | binary_sequence(), max_size=6).map(
    lambda seqs: [p for seq in seqs for p in seq]
)


@st.composite
def eio_message(draw: st.DrawFn) -> str | bytes:
    """One Engine.IO WebSocket message: binary, or a type digit and data."""
    choice = draw(st.integers(0, 5))
    if choice == 5:
        return "4" + draw(binary_sequence())[0]
    if choice == 0:
        return draw(st.binary(max_size=40))
    if choice == 1:
        return draw(st.text(max_size=20))
    if choice == 2:
        return draw(st.sampled_from("0123456")) + draw(st.text(max_size=10))
    return "4" + draw(sio_text())


# Engine.IO


@fuzz
@given(st.text() | st.binary())
def test_engineio_decode(message: str | bytes) -> None:
    try:
        packet = engineio.decode(message)
    except ProtocolError:
        return
    assert isinstance(packet.type, engineio.PacketType)


@st.composite
def polling_bodies(draw: st.DrawFn) -> bytes:
    parts = draw(
        st.lists(
            st.one_of(
                eio_message().map(lambda m: m if isinstance(m, str) else "b"),
                st.binary(max_size=20).map(lambda b: "b" + base64.b64encode(b).decode()),
                st.text(max_size=12).map(lambda t: "b" + t),
            ),
            max_size=8,
        )
    )
    body = "\x1e".join(parts).encode("utf-8", "surrogatepass")
    return body if draw(st.booleans()) else body + draw(st.binary(max_size=4))


@fuzz
@given(polling_bodies() | st.binary(max_size=300), st.integers(0, 400))
def test_engineio_decode_payload(body: bytes, max_payload: int) -> None:
    try:
        packets = engineio.decode_payload(body, max_payload=max_payload)
    except ProtocolError:
        return
    assert packets and all(isinstance(p, engineio.Packet) for p in packets)


# Socket.IO


@fuzz
@given(
    sio_sequences,
    st.integers(0, 12),
    st.none() | st.integers(0, 60),
    st.data(),
)
def test_socketio_decoder(
    payloads: list[str | bytes], max_attachments: int, max_bytes: int | None, data: st.DataObject
) -> None:
    decoder = socketio.Decoder(max_attachments=max_attachments, max_attachment_bytes=max_bytes)
    for payload in payloads:
        try:
            packet = decoder.feed(payload)
        except ProtocolError:
            continue  # the session closes here; the decoder must still not misbehave
        if packet is not None:
            assert isinstance(packet.type, socketio.PacketType)
            assert len(packet.attachments) <= max_attachments
            socketio.encode(packet)  # what was accepted can be written back
        if decoder.namespace is not None and data.draw(st.booleans()):
            decoder.discard()


@fuzz
@given(st.lists(binary_sequence(), min_size=1, max_size=3))
def test_socketio_decoder_binary_sequences(sequences: list[list[str | bytes]]) -> None:
    decoder = socketio.Decoder(max_attachments=3, max_attachment_bytes=80)
    for sequence in sequences:
        try:
            for payload in sequence:
                packet = decoder.feed(payload)
                if packet is not None:
                    assert not decoder.waiting and len(packet.attachments) <= 3
        except ProtocolError:
            decoder = socketio.Decoder(max_attachments=3, max_attachment_bytes=80)


@fuzz
@given(sio_text() | st.text())
def test_socketio_decode(text: str) -> None:
    try:
        socketio.decode(text)
    except ProtocolError:
        pass


# WebSocket framing


@st.composite
def ws_frames(draw: st.DrawFn) -> bytes:
    """One frame: valid half of the time, else with random bits, opcode, a length
    encoding that may lie about the payload, and maybe no mask."""
    payload = draw(st.binary(max_size=200))
    opcode = draw(st.sampled_from([0, 1, 2, 8, 9, 10]))
    if draw(st.booleans()):
        fin = draw(st.booleans()) or opcode >= 8
        b0, masked = (0x80 if fin else 0) | opcode, True
        payload = payload[:125] if opcode >= 8 else payload
        length = len(payload)
    else:
        b0 = draw(st.integers(0, 0xF0)) | draw(st.just(opcode) | st.integers(0, 15))
        length = draw(st.just(len(payload)) | st.integers(0, 300) | st.integers(0, 2**64 - 1))
        masked = draw(st.booleans())
    form = draw(st.sampled_from(["short", "16", "64"]))
    if form == "short" and length < 126:
        head = bytes([b0, (0x80 if masked else 0) | length])
    elif form == "16" and length < 65536:
        head = bytes([b0, (0x80 if masked else 0) | 126]) + struct.pack("!H", length)
    else:
        head = bytes([b0, (0x80 if masked else 0) | 127]) + struct.pack("!Q", length)
    return head + (draw(st.binary(min_size=4, max_size=4)) if masked else b"") + payload


@fuzz
@given(
    st.lists(ws_frames(), max_size=8) | st.binary(max_size=400).map(lambda b: [b]),
    st.integers(1, 64),
    st.integers(0, 400),
)
def test_frame_parser(frames: list[bytes], chunk: int, max_size: int) -> None:
    data = b"".join(frames)
    parser = FrameParser(max_size=max_size)
    try:
        for i in range(0, len(data), chunk):
            for message in parser.feed(data[i : i + chunk]):
                if isinstance(message, bytes | str):
                    assert len(message) <= max_size
            assert len(parser.replies) <= 1
    except ProtocolError:
        pass


@fuzz
@given(st.text(max_size=30) | st.binary(max_size=16).map(lambda b: base64.b64encode(b).decode()))
def test_sec_websocket_key(key: str) -> None:
    try:
        accepted = accept_key(key)
    except ProtocolError:
        assert not valid_key(key)
        return
    assert valid_key(key) and len(accepted) == 28


# Session


def _session(joined: list[str]) -> Session:
    session = Session("eio1", max_attachments=3, max_attachment_bytes=50)
    for ns in joined:
        session.receive("40" if ns == "/" else f"40{ns},")
        session.accept(ns, "s-" + ns)
    session.events_received()
    session.data_to_send()
    return session


@fuzz
@given(
    st.lists(eio_message(), max_size=12),
    st.lists(st.sampled_from(["/", "/admin", "/x"]), max_size=2, unique=True),
)
def test_session_receive(messages: list[str | bytes], joined: list[str]) -> None:
    session = _session(joined)
    for message in messages:
        session.receive(message)  # must not raise
    events = session.events_received()
    closes = [e for e in events if isinstance(e, SessionClosed)]
    assert len(closes) <= 1 and (session.state is State.CLOSED) == bool(closes)


@fuzz
@given(polling_bodies(), st.lists(st.sampled_from(["/", "/admin"]), max_size=2, unique=True))
def test_session_receive_packets(body: bytes, joined: list[str]) -> None:
    try:
        packets = engineio.decode_payload(body, max_payload=10_000)
    except ProtocolError:
        return
    session = _session(joined)
    session.receive_packets(packets)  # must not raise
    outcome: list[Any] = session.events_received()
    assert sum(isinstance(e, SessionClosed) for e in outcome) <= 1
