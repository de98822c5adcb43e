"""Hub: sockets, rooms and fan-out selection."""

from __future__ import annotations

from siogate.hub import Hub, Outgoing, Socket, is_socket_id, new_socket_id
from siogate.protocol.session import Session
from siogate.types import Namespace, Room, Sid, UserId


class FakeLink:
    """A link that records what it was asked to write."""

    def __init__(self) -> None:
        self.session = Session("e")
        self.written: list[Outgoing] = []

    def flush(self) -> None:
        pass

    def write_broadcast(self, outgoing: Outgoing) -> None:
        self.written.append(outgoing)

    def close(self, reason: str) -> None:
        pass


NS = Namespace("/")


def make(hub: Hub, sid: str, *rooms: str, ns: Namespace = NS) -> Socket:
    socket = Socket(Sid(sid), ns, UserId(sid.upper()), FakeLink())
    hub.add(socket)
    for room in rooms:
        hub.join(socket, Room(room))
    return socket


def ids(sockets: object) -> set[str]:
    return {s.id for s in sockets}  # type: ignore[attr-defined]


def test_select_whole_namespace_rooms_and_except() -> None:
    hub = Hub()
    make(hub, "a", "red", "blue")
    make(hub, "b", "red")
    make(hub, "c", "green")
    make(hub, "d", "red", ns=Namespace("/admin"))
    assert ids(hub.select(NS)) == {"a", "b", "c"}
    assert ids(hub.select(NS, [Room("red")])) == {"a", "b"}
    assert ids(hub.select(NS, [Room("red"), Room("blue")])) == {"a", "b"}
    assert ids(hub.select(NS, [Room("red")], [Room("blue")])) == {"b"}
    assert ids(hub.select(NS, (), [Room("green")])) == {"a", "b"}
    assert ids(hub.select(Namespace("/admin"), [Room("red")])) == {"d"}
    assert ids(hub.select(Namespace("/none"))) == set()


def test_socket_in_several_target_rooms_is_selected_once() -> None:
    hub = Hub()
    make(hub, "a", "r1", "r2", "r3")
    selected = list(hub.select(NS, [Room("r1"), Room("r2"), Room("r3")]))
    assert [s.id for s in selected] == ["a"]


def test_socket_id_is_a_room() -> None:
    hub = Hub()
    a, b = new_socket_id(), new_socket_id()
    make(hub, a)
    make(hub, b)
    assert ids(hub.select(NS, [Room(a)])) == {a}
    assert ids(hub.select(NS, (), [Room(a)])) == {b}
    assert hub.rooms(NS) == {}


def test_leave_and_remove_clean_up_empty_rooms() -> None:
    hub = Hub()
    a = make(hub, "a", "red")
    b = make(hub, "b", "red")
    assert hub.rooms(NS) == {Room("red"): 2}
    hub.leave(a, Room("red"))
    assert hub.rooms(NS) == {Room("red"): 1}
    hub.remove(b)
    assert hub.rooms(NS) == {}
    assert hub.get(NS, Sid("b")) is None
    assert hub.count() == 1
    hub.remove(a)
    assert hub.namespaces() == []


def test_join_is_idempotent_and_ignores_unknown_sockets() -> None:
    hub = Hub()
    a = make(hub, "a", "red", "red")
    assert hub.rooms(NS) == {Room("red"): 1}
    stranger = Socket(Sid("x"), NS, None, FakeLink())
    hub.join(stranger, Room("red"))
    assert hub.rooms(NS) == {Room("red"): 1}
    assert a.rooms == {Room("red")}


# Socket ids and named rooms (issue #9, item 8)

SID_A = "AAAAAAAAAAAAAAAAAAAa"
SID_B = "bbbbbbbbbbbbbbbbbb-_"


def test_socket_ids_have_one_shape() -> None:
    for _ in range(100):
        assert is_socket_id(new_socket_id())
    assert is_socket_id(SID_A) and is_socket_id(SID_B)
    for name in ("", "user:alice", "a" * 19, "a" * 21, "a" * 19 + "=", "a" * 19 + ":", "ä" * 20):
        assert not is_socket_id(name), name


def test_a_room_named_like_a_socket_id_cannot_be_joined() -> None:
    hub = Hub()
    a = make(hub, SID_A)
    b = make(hub, SID_B)
    # The old hub let a join a room named b's id; b's direct emits then went to a.
    assert hub.join(a, Room(SID_B)) is False
    assert a.rooms == set()
    assert hub.rooms(NS) == {}
    assert ids(hub.select(NS, [Room(SID_B)])) == {SID_B}
    assert ids(hub.select(NS, (), [Room(SID_B)])) == {SID_A}
    assert b.rooms == set()
    assert hub.join(a, Room("news")) is True


def test_a_socket_id_of_another_node_resolves_to_no_one() -> None:
    # In a cluster every node resolves the names of an emit on its own: a node that
    # does not hold the socket must not find anyone under its id.
    hub = Hub()
    make(hub, SID_A, "news")
    assert ids(hub.select(NS, [Room(SID_B)])) == set()
    assert ids(hub.select(NS, [Room(SID_B), Room("news")])) == {SID_A}


def test_a_name_not_shaped_like_a_socket_id_is_only_a_room() -> None:
    hub = Hub()
    # A socket whose id is not id-shaped (only tests make these) is not addressable
    # by it: names of other shapes are rooms, and this room has no members.
    make(hub, "short-id")
    assert ids(hub.select(NS, [Room("short-id")])) == set()
