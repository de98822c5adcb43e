"""The pending-ack bookkeeping (siogate.acks) and how ack emits travel between nodes."""

from __future__ import annotations

import asyncio
import json

import pytest

from siogate.acks import AckRegistry, AckResult, answer_json
from siogate.broker import AckEmitQuery, CountQuery, EmitCommand, wire
from siogate.types import Namespace, Room, Sid

A, B, C = Sid("a" * 20), Sid("b" * 20), Sid("c" * 20)


async def test_answers_and_departures_settle_an_emit() -> None:
    registry = AckRegistry()
    emit, ids = registry.open([A, B, C])
    assert len(set(ids)) == 3 and registry.owed() == 3
    assert registry.received(A, ids[0], ["x"])
    assert not registry.received(A, ids[0], ["again"])  # answered once only
    assert not registry.received(B, ids[0], ["not B's id"])
    registry.gone(B)
    assert not emit.done.is_set()
    assert registry.received(C, ids[2], [1, 2])
    assert emit.done.is_set()
    await registry.wait(emit, 10)
    assert emit.acks == [(A, ["x"]), (C, [1, 2])] and emit.timeouts == [B]
    assert registry.owed() == 0 and registry.pending == 0


async def test_the_timeout_releases_everything_and_ids_are_never_reused() -> None:
    registry = AckRegistry()
    first, first_ids = registry.open([A, B])
    await registry.wait(first, 0.01)
    assert first.timeouts == [A, B] and registry.owed() == 0 and registry.pending == 0
    assert not registry.received(A, first_ids[0], ["late"])
    second, second_ids = registry.open([A])
    assert not set(second_ids) & set(first_ids)
    registry.gone(A)
    assert (await registry.wait(second, 10)).timeouts == [A]


async def test_an_emit_without_recipients_is_done_at_once() -> None:
    registry = AckRegistry()
    emit, _ = registry.open([])
    async with asyncio.timeout(1):
        await registry.wait(emit, 30)
    assert answer_json(emit) == {"acks": [], "timeouts": []}


def test_merge_skips_malformed_answers_and_notes_refusals() -> None:
    result = AckResult()
    assert result.add("n1", {"acks": [[A, ["ok"]], ["bad"]], "timeouts": [B, 3]})
    assert result.add("n2", {"refused": 9})
    assert not result.add("n3", [1])
    assert result.acks == [(A, ["ok"])] and result.timeouts == [B]
    assert result.recipients == 2 and result.refused == ["n2"]


EMIT = EmitCommand(Namespace("/chat"), "ask", [{"big": "x" * 10}], (Room("r"),), (Room("s"),))


@pytest.mark.parametrize("query", [CountQuery(EMIT), AckEmitQuery(EMIT, 1500, 1000)])
def test_queries_round_trip_over_the_wire(query: CountQuery | AckEmitQuery) -> None:
    data = wire.encode_query("n1", "rid", query)
    request_id, decoded = wire.decode_query(wire.decode(data))
    assert request_id == "rid"
    if isinstance(query, CountQuery):
        # Only the selector travels for a count.
        assert decoded == CountQuery(
            EmitCommand(EMIT.namespace, "ask", [], EMIT.rooms, EMIT.exclude)
        )
    else:
        assert decoded == query


@pytest.mark.parametrize("timeout_ms", [0, 60_001, "5", 1.5, True, None])
def test_bad_ack_terms_from_the_wire_are_refused(timeout_ms: object) -> None:
    data = wire.encode_query("n1", "rid", AckEmitQuery(EMIT, 10, 10))
    obj = json.loads(data)
    obj["timeout_ms"] = timeout_ms
    with pytest.raises(wire.WireError):
        wire.decode_query(obj)
