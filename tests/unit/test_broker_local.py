"""The workers' broker: LocalBroker nodes through a real LocalRelay on a Unix socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from test_broker import Node

from siogate.broker import BrokerUnavailable, Command, EmitCommand, RoomsQuery, SocketsCommand
from siogate.broker.local import ACK, MAX_FRAME, FrameReader, LocalBroker, LocalRelay, frame
from siogate.types import Namespace, Room, Sid

Trio = tuple[LocalRelay, list[tuple[LocalBroker, Node]]]


@pytest.fixture
async def three(tmp_path: Path) -> AsyncIterator[Trio]:
    relay = LocalRelay(str(tmp_path / "relay.sock"))
    await relay.start()
    nodes: list[tuple[LocalBroker, Node]] = []
    for name in "abc":
        broker = LocalBroker(relay.path, advertise_url=f"http://{name}:1")
        node = Node(name)
        await broker.start(node.apply, node.answer)
        nodes.append((broker, node))
    # Each knows the others once the relay's registry reached it.
    for broker, _ in nodes:
        async with asyncio.timeout(5):
            while broker.stats.peers != 2:
                await asyncio.sleep(0.01)
    yield relay, nodes
    for broker, _ in nodes:
        await broker.close()
    await relay.close()


def test_frames_split_across_reads_come_out_whole() -> None:
    data = frame(ACK, b"12345678") + frame(7, b"") + frame(3, b"x" * 1000)
    reader = FrameReader()
    out = []
    for i in range(0, len(data), 7):
        out += reader.feed(data[i : i + 7])
    assert out == [(ACK, b"12345678"), (7, b""), (3, b"x" * 1000)]
    with pytest.raises(ValueError):
        FrameReader().feed((MAX_FRAME + 1).to_bytes(4, "big") + b"\x02")


async def test_batches_reach_every_other_worker_once_and_in_order(three: Trio) -> None:
    _, [(one, a), (_, b), (_, c)] = three
    batches: list[list[Command]] = [[EmitCommand(Namespace("/"), "seq", [i])] for i in range(300)]
    await asyncio.gather(*(one.publish(batch) for batch in batches))
    assert a.applied == batches  # applied locally, in call order, before returning
    assert await b.wait_batches(300) == batches
    assert await c.wait_batches(300) == batches
    await asyncio.sleep(0.05)
    assert len(a.applied) == 300


async def test_a_command_answered_by_one_worker_is_ahead_of_any_later_one(three: Trio) -> None:
    """Join through A, then emit through B: C applies the join first (as with Redis)."""
    _, [(one, _), (two, _), (_, c)] = three
    for i in range(50):
        join = [SocketsCommand("join", Namespace("/"), sockets=(Sid(f"s{i}"),), room=Room("r"))]
        emit: list[Command] = [EmitCommand(Namespace("/"), "e", [i], rooms=(Room("r"),))]
        await one.publish(join)
        await two.publish(emit)
    applied = await c.wait_batches(100)
    assert [type(batch[0]).__name__ for batch in applied] == ["SocketsCommand", "EmitCommand"] * 50


async def test_queries_gather_every_worker_and_a_gone_one_is_not_awaited(three: Trio) -> None:
    relay, [(one, _), (two, _), (three_, _)] = three
    answers = await one.query(RoomsQuery(Namespace("/")), timeout=2)
    assert [node for node, _ in answers.answers] == [one.node_id, two.node_id, three_.node_id]
    assert answers.complete and answers.missing == ()
    assert await one.node_url(two.node_id) == "http://b:1"
    assert set(relay.nodes) == {one.node_id, two.node_id, three_.node_id}
    gone = three_.node_id
    await three_.close()
    async with asyncio.timeout(5):
        while one.stats.peers != 1:
            await asyncio.sleep(0.01)
    started = asyncio.get_running_loop().time()
    answers = await one.query(RoomsQuery(Namespace("/")), timeout=2)
    assert asyncio.get_running_loop().time() - started < 1
    assert [node for node, _ in answers.answers] == [one.node_id, two.node_id]
    assert await one.node_url(gone) is None


async def test_without_the_relay_publishes_are_refused_and_listings_partial(three: Trio) -> None:
    relay, [(one, a), _, _] = three
    await relay.close()
    async with asyncio.timeout(5):
        while one.stats.connected:
            await asyncio.sleep(0.01)
    assert one.stats.error
    assert one.lost.is_set()  # the worker stops on it, to be restarted
    with pytest.raises(BrokerUnavailable):
        await one.publish([EmitCommand(Namespace("/"), "x", [])])
    assert a.applied == []  # a refused batch is not applied here either
    answers = await one.query(RoomsQuery(Namespace("/")), timeout=1)
    assert answers.answers == [(one.node_id, {"node": "a", "query": "RoomsQuery"})]
    assert not answers.complete


async def test_calls_reach_the_primarys_service_and_fail_without_one(tmp_path: Path) -> None:
    async def upper(request: bytes) -> bytes:
        return request.upper()

    served = LocalRelay(str(tmp_path / "a.sock"), upper)
    bare = LocalRelay(str(tmp_path / "b.sock"))
    for relay in (served, bare):
        await relay.start()
    one = LocalBroker(served.path, advertise_url=None)
    two = LocalBroker(bare.path, advertise_url=None)
    node = Node("n")
    for broker in (one, two):
        await broker.start(node.apply, node.answer)
    try:
        replies = await asyncio.gather(*(one.call(f"r{i}".encode()) for i in range(50)))
        assert replies == [f"R{i}".encode() for i in range(50)]
        with pytest.raises(BrokerUnavailable):
            await two.call(b"anything")
    finally:
        for broker in (one, two):
            await broker.close()
        for relay in (served, bare):
            await relay.close()
