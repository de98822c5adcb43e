"""The broker contract, run against every implementation available here."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from siogate.broker import Broker, Command, EmitCommand, MemoryBroker, SocketsCommand
from siogate.types import Namespace, Room, Sid

FACTORIES = {"memory": MemoryBroker}


@pytest.fixture(params=sorted(FACTORIES))
def broker(request: pytest.FixtureRequest) -> Broker:
    return FACTORIES[request.param]()


async def test_publish_applies_batch_in_order(broker: Broker) -> None:
    seen: list[Sequence[Command]] = []
    await broker.start(seen.append)
    batch = [
        EmitCommand(Namespace("/"), "a", [1], rooms=(Room("r"),)),
        SocketsCommand("join", Namespace("/"), sockets=(Sid("s"),), room=Room("r")),
        EmitCommand(Namespace("/"), "b", [2]),
    ]
    await broker.publish(batch)
    assert [list(b) for b in seen] == [batch]
    await broker.close()


async def test_publish_before_start_is_an_error(broker: Broker) -> None:
    with pytest.raises(RuntimeError):
        await broker.publish([EmitCommand(Namespace("/"), "a", [])])
