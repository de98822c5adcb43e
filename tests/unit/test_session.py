"""The server session state machine: Engine.IO packets in, events and packets out."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from siogate.errors import ProtocolError
from siogate.protocol import engineio
from siogate.protocol.events import (
    AckReceived,
    ConnectRequested,
    EventReceived,
    NamespaceLeft,
    SessionClosed,
)
from siogate.protocol.session import Session, State


def connected(namespace: str = "/") -> Session:
    session = Session("eio1")
    session.receive("40" if namespace == "/" else f"40{namespace},")
    session.events_received()
    session.accept(namespace, "sock1")
    session.data_to_send()
    return session


def test_connect_request_then_accept() -> None:
    session = Session("eio1")
    session.receive('40{"token":"t"}')
    assert session.events_received() == [ConnectRequested("/", {"token": "t"})]
    assert session.data_to_send() == []
    session.accept("/", "s1")
    assert session.data_to_send() == ['40{"sid":"s1"}']
    assert session.namespaces == {"/": "s1"}


def test_connect_to_namespace_then_refuse() -> None:
    session = Session("eio1")
    session.receive("40/admin,")
    assert session.events_received() == [ConnectRequested("/admin", None)]
    session.refuse("/admin", "Invalid namespace")
    assert session.data_to_send() == ['44/admin,{"message":"Invalid namespace"}']
    assert session.namespaces == {}
    assert session.state is State.OPEN


def test_event_with_and_without_ack() -> None:
    session = connected()
    session.receive('42["chat","hi"]')
    session.receive('4211["chat",{"n":1}]')
    assert session.events_received() == [
        EventReceived("/", "chat", ["hi"], None),
        EventReceived("/", "chat", [{"n": 1}], 11),
    ]


def test_binary_event_across_messages() -> None:
    session = connected()
    session.receive('451-["up",{"_placeholder":true,"num":0}]')
    assert session.events_received() == []
    session.receive(b"\x00\xff")
    assert session.events_received() == [EventReceived("/", "up", [b"\x00\xff"], None)]


def test_ack_from_client() -> None:
    session = connected()
    session.receive("435[1]")
    assert session.events_received() == [AckReceived("/", 5, [1])]


def test_events_for_unjoined_namespace_are_ignored() -> None:
    session = connected()
    session.receive('42/other,["x"]')
    assert session.events_received() == []
    assert session.state is State.OPEN


def test_client_namespace_disconnect() -> None:
    session = connected()
    session.receive("41")
    assert session.events_received() == [NamespaceLeft("/", "sock1", "client namespace disconnect")]
    assert session.namespaces == {}
    assert session.state is State.OPEN


def test_malformed_packet_closes_with_parse_error() -> None:
    session = connected()
    session.receive('42["a"')
    assert session.events_received() == [SessionClosed("parse error")]
    assert session.state is State.CLOSED
    session.receive('42["a"]')  # ignored once closed
    assert session.events_received() == []


def test_unexpected_engineio_packets_close_the_session() -> None:
    for wire in ("2", "5", "0{}", "9", ""):
        session = connected()
        session.receive(wire)
        assert session.events_received() == [SessionClosed("parse error")], wire


def test_duplicate_connect_is_a_protocol_error() -> None:
    session = connected()
    session.receive("40")
    assert session.events_received() == [SessionClosed("parse error")]


def test_ping_pong_keeps_session_open() -> None:
    session = connected()
    session.send_ping()
    assert session.data_to_send() == [engineio.PING]
    session.receive("3")
    assert not session.ping_expired()
    assert session.state is State.OPEN


def test_missing_pong_closes_with_ping_timeout() -> None:
    session = connected()
    session.send_ping()
    assert session.ping_expired()
    assert session.events_received() == [SessionClosed("ping timeout")]


def test_client_close_packet() -> None:
    session = connected()
    session.receive("1")
    assert session.events_received() == [SessionClosed("transport close")]


def test_server_close_sends_close_packet() -> None:
    session = connected()
    session.close("server shutting down")
    assert session.data_to_send() == ["1"]
    assert session.events_received() == [SessionClosed("server shutting down")]


def test_server_namespace_disconnect() -> None:
    session = connected("/admin")
    assert session.disconnect("/admin")
    assert session.data_to_send() == ["41/admin,"]
    assert not session.disconnect("/admin")


def test_polling_payload_packets_in_order() -> None:
    session = connected()
    packets = engineio.decode_payload(b'42["a"]\x1e3\x1e42["b"]', max_payload=1000)
    session.receive_packets(packets)
    assert session.events_received() == [
        EventReceived("/", "a", [], None),
        EventReceived("/", "b", [], None),
    ]


def test_accept_after_close_sends_nothing() -> None:
    session = Session("eio1")
    session.receive("40")
    session.receive_eof()
    session.accept("/", "s1")
    assert session.data_to_send() == []
    assert session.namespaces == {}


@given(st.lists(st.text(max_size=40) | st.binary(max_size=40), max_size=12))
def test_arbitrary_input_never_raises(messages: list[str | bytes]) -> None:
    # Any sequence of messages leaves the session open or closed, never raising.
    session = connected()
    for message in messages:
        session.receive(message)
    session.receive_packets(engineio.decode_payload(b"40", max_payload=100))
    events = session.events_received()
    closes = [e for e in events if isinstance(e, SessionClosed)]
    assert len(closes) <= 1
    assert (session.state is State.CLOSED) == bool(closes)


@given(st.binary(max_size=200))
def test_arbitrary_polling_bodies_never_raise_anything_but_protocol_error(body: bytes) -> None:
    try:
        packets = engineio.decode_payload(body, max_payload=1000)
    except ProtocolError:
        return
    session = connected()
    session.receive_packets(packets)


def test_deeply_nested_json_closes_with_parse_error() -> None:
    session = connected()
    session.receive('42["a",' + "[" * 100_000 + "]" * 100_000 + "]")
    assert session.events_received() == [SessionClosed("parse error")]


PLACEHOLDERS = ",".join(f'{{"_placeholder":true,"num":{i}}}' for i in range(10))


def test_attachments_are_limited_per_packet() -> None:
    session = Session("eio1", max_attachments=3, max_attachment_bytes=1000)
    session.receive("40")
    session.accept("/", "s1")
    session.receive('454-["a"]')
    assert session.events_received() == [ConnectRequested("/", None), SessionClosed("parse error")]

    session = Session("eio1", max_attachments=3, max_attachment_bytes=1000)
    session.receive("40")
    session.accept("/", "s1")
    session.receive('453-["a",{"_placeholder":true,"num":0}]')
    session.receive(b"x" * 600)
    assert session.state is State.OPEN
    session.receive(b"x" * 600)  # 1,200 bytes: refused as it arrives
    assert session.events_received()[-1] == SessionClosed("parse error")


def test_attachments_for_a_namespace_not_joined_are_not_buffered() -> None:
    # Before its CONNECT is accepted (auth still running) and for a namespace never
    # joined: the packet is dropped, and its attachments with it, uncounted.
    for setup in ["40", "40/admin,", ""]:
        session = Session("eio1", max_attachments=10, max_attachment_bytes=1000)
        if setup:
            session.receive(setup)
        session.receive(f'4510-/admin,["up",{PLACEHOLDERS}]')
        for _ in range(10):
            session.receive(b"z" * 100_000)  # far over max_attachment_bytes
        assert session.state is State.OPEN
        assert not any(isinstance(e, EventReceived) for e in session.events_received())
        session.accept("/admin", "s1")
        session.receive('42/admin,["after"]')  # back to normal parsing
        assert session.events_received() == [EventReceived("/admin", "after", [], None)]


def test_binary_ack_for_a_namespace_not_joined_is_dropped() -> None:
    session = connected()
    session.receive('462-/other,5[{"_placeholder":true,"num":0}]')
    session.receive(b"a")
    session.receive(b"b")
    session.receive('461-5[{"_placeholder":true,"num":0}]')
    session.receive(b"c")
    assert session.events_received() == [AckReceived("/", 5, [b"c"])]
    assert session.state is State.OPEN
