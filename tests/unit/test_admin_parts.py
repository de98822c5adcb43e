"""The admin UI's pieces without a server: a node's snapshot, the check of other nodes'
answers, the wire question, and the UI's actions turned into commands."""

from __future__ import annotations

from typing import Any

import pytest

from siogate import admin_snapshot
from siogate.admin import Admin, AdminOptions, check_hash
from siogate.broker import AdminQuery, EmitCommand, SocketsCommand, wire
from siogate.hub import Hub, Socket, new_socket_id
from siogate.protocol.session import Session
from siogate.types import Namespace, Room


class FakeLink:
    """A hub Link with no transport (only the session id is read)."""

    def __init__(self, websocket: bool) -> None:
        self.session = Session("sess" + new_socket_id())
        self.ws = object() if websocket else None

    def flush(self) -> None:
        pass

    def write_broadcast(self, outgoing: Any) -> None:
        pass

    def close(self, reason: str) -> None:
        pass


def hub_with(count: int) -> Hub:
    hub = Hub()
    for i in range(count):
        socket = Socket(new_socket_id(), Namespace("/"), None, FakeLink(websocket=i % 2 == 0))
        hub.add(socket)
        hub.join(socket, Room("r"))
    return hub


def test_a_snapshot_lists_sockets_up_to_the_limit_and_parses_back() -> None:
    answer = admin_snapshot.local(hub_with(5), AdminQuery(3))
    assert answer["namespaces"] == {"/": 5} and answer["clients"] == 5
    assert answer["polling"] == 2 and answer["truncated"] is True
    snapshot = admin_snapshot.parse(answer)
    assert len(snapshot.sockets) == 3
    assert {v.transport for v in snapshot.sockets} <= {"websocket", "polling"}
    assert all(v.rooms == ("r",) for v in snapshot.sockets)


GOOD = admin_snapshot.local(hub_with(1), AdminQuery(10))


@pytest.mark.parametrize(
    "answer",
    [
        None,
        [],
        {**GOOD, "pid": -1},
        {**GOOD, "pid": True},
        {**GOOD, "uptime": "1"},
        {**GOOD, "namespaces": {"/": "2"}},
        {**GOOD, "sockets": {}},
        {**GOOD, "sockets": [["/", "id", "c", "carrier-pigeon", None, []]]},
        {**GOOD, "sockets": [["/", "id", "c", "websocket", None, [1]]]},
        {**GOOD, "sockets": [["/", "id", "websocket", None, []]]},
        {**GOOD, "truncated": None},
    ],
)
def test_malformed_answers_are_refused(answer: Any) -> None:
    with pytest.raises(admin_snapshot.BadSnapshot):
        admin_snapshot.parse(answer)


def test_the_admin_question_survives_the_wire() -> None:
    data = wire.encode_query("n", "id1", AdminQuery(500))
    assert wire.decode_query(wire.decode(data)) == ("id1", AdminQuery(500))
    with pytest.raises(wire.WireError):
        wire.decode_query({"id": "x", "query": "admin", "limit": 0})


def test_check_hash_refuses_what_is_not_bcrypt() -> None:
    with pytest.raises(ValueError, match="not a bcrypt hash"):
        check_hash("hunter2")
    assert check_hash("$2b$04$sKoiTPsBr2AEAIBpFt2k0uE93objqX5SbxeOuWZHZibiJFdlf2Jmm")


SID = new_socket_id()
NS = Namespace("/")
VIP = Room("vip")


@pytest.mark.parametrize(
    ("name", "args", "command"),
    [
        ("join", ["/", "vip", SID], SocketsCommand("join", NS, (SID,), (), VIP)),
        ("leave", ["/", "vip", "lobby"], SocketsCommand("leave", NS, (), (Room("lobby"),), VIP)),
        ("join", ["/c", "vip"], SocketsCommand("join", Namespace("/c"), (), (), VIP)),
        ("_disconnect", ["/", True, SID], SocketsCommand("disconnect", Namespace("/"), (SID,))),
        ("_disconnect", ["/", False], SocketsCommand("disconnect", Namespace("/"))),
        ("emit", ["/", None, "hi", 1, {"a": 2}], EmitCommand(Namespace("/"), "hi", [1, {"a": 2}])),
        ("emit", ["/", "r", "hi"], EmitCommand(Namespace("/"), "hi", [], (Room("r"),))),
        ("unknown", [], None),
    ],
)  # fmt: skip
def test_ui_actions_become_commands(name: str, args: list[Any], command: Any) -> None:
    admin = Admin(None, AdminOptions())  # type: ignore[arg-type]
    assert admin._command(name, args) == command


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("join", ["/", SID, SID]),  # a room named like a socket id
        ("join", ["chat", "vip"]),  # not a namespace
        ("join", ["/", "x" * 300]),
        ("leave", ["/"]),
        ("_disconnect", ["/", False, 5]),
        ("emit", ["/", None]),
        ("emit", ["/", 3, "e"]),
    ],
)
def test_bad_ui_actions_are_refused(name: str, args: list[Any]) -> None:
    admin = Admin(None, AdminOptions())  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        admin._command(name, args)
