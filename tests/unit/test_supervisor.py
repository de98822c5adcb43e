"""The parts of ``serve --workers`` that need no processes: names, counts, URLs, claims."""

from __future__ import annotations

import json
import os

import click
import pytest

from siogate.cli import WorkerCount, usable_cores
from siogate.config import Settings
from siogate.errors import ConfigError
from siogate.idempotency import Claim, MemoryIdempotencyStore, StoredResponse
from siogate.presence_tracker import PresenceCounts
from siogate.supervisor import _advertised, _claim, _claim_json, primary_service


def test_worker_counts_parse_numbers_and_auto() -> None:
    kind = WorkerCount()
    assert kind.convert("4", None, None) == 4
    assert kind.convert(3, None, None) == 3
    assert kind.convert(" Auto ", None, None) == usable_cores()
    assert usable_cores() == len(os.sched_getaffinity(0))
    with pytest.raises(click.BadParameter):
        kind.convert("four", None, None)


@pytest.mark.parametrize("workers", [0, -1, 257])
def test_worker_counts_out_of_range_are_config_errors(workers: int) -> None:
    with pytest.raises(ConfigError, match="workers must be 1-256"):
        Settings(workers=workers)


def test_workers_make_a_cluster_and_one_does_not() -> None:
    assert Settings(workers=2).cluster
    assert not Settings(workers=1).cluster


def test_a_worker_advertises_its_own_port_on_the_advertised_host() -> None:
    assert _advertised(Settings(host="0.0.0.0"), 4100) == "http://127.0.0.1:4100"
    assert _advertised(Settings(host="10.0.0.5"), 4100) == "http://10.0.0.5:4100"
    settings = Settings(advertise_url="http://node-a.internal:8000")
    assert _advertised(settings, 4100) == "http://node-a.internal:4100"
    settings = Settings(advertise_url="http://[fd00::5]:8000")
    assert _advertised(settings, 4100) == "http://[fd00::5]:4100"


def test_claims_survive_the_relay() -> None:
    response = StoredResponse(200, '{"ok":true}')
    for claim in (
        Claim("new", token="t", fingerprint="f"),
        Claim("replay", response),
        Claim("in_progress"),
        Claim("mismatch"),
    ):
        assert _claim(_claim_json(claim)) == claim


async def test_the_primarys_store_answers_claims_completions_and_releases() -> None:
    import json

    serve = primary_service(MemoryIdempotencyStore(60), PresenceCounts())

    async def call(**request: object) -> dict[str, object]:
        reply: dict[str, object] = json.loads(await serve(json.dumps(request).encode()))
        return reply

    first = await call(op="claim", key="k", fingerprint="f")
    assert first["state"] == "new"
    assert (await call(op="claim", key="k", fingerprint="f"))["state"] == "in_progress"
    response = {"status": 200, "body": "{}", "content_type": "application/json"}
    await call(op="complete", key="k", claim=first, response=response)
    replay = await call(op="claim", key="k", fingerprint="f")
    assert replay["state"] == "replay" and replay["response"] == response
    assert (await call(op="claim", key="k", fingerprint="g"))["state"] == "mismatch"
    other = await call(op="claim", key="j", fingerprint="f")
    await call(op="release", key="j", claim=other)
    assert (await call(op="claim", key="j", fingerprint="f"))["state"] == "new"


async def test_the_primary_answers_presence_changes_with_the_transitions_to_report() -> None:
    import json

    counts = PresenceCounts()
    serve = primary_service(MemoryIdempotencyStore(60), counts)

    async def call(**request: object) -> list[list[str]]:
        reply = json.loads(await serve(json.dumps({"op": "presence", **request}).encode()))
        transitions: list[list[str]] = reply["transitions"]
        return transitions

    assert await call(node="a", changes=[["/", "ann", 1]]) == [["user.online", "/", "ann"]]
    assert await call(node="b", changes=[["/", "ann", 1], ["/", "bob", 1]]) == [
        ["user.online", "/", "bob"]
    ]
    # Worker b dies (the relay saw its connection close): bob is left with no socket,
    # and the next worker to ask reports it, before its own transitions.
    counts.orphans.extend(counts.drop("b"))
    assert await call(node="a", changes=[]) == [["user.offline", "/", "bob"]]
    assert await call(node="a", changes=[]) == []
    # A worker that stops drops what it still counts.
    assert await call(node="a", changes=[], leave=True) == [["user.offline", "/", "ann"]]


async def test_malformed_recovery_log_calls_raise_so_the_relay_answers_empty() -> None:
    # The relay turns a raising service into an empty reply, which the worker's client
    # raises as BrokerUnavailable (tests/unit/test_relay_log.py).
    from siogate.broker.relay_log import RelayLog

    store, counts = MemoryIdempotencyStore(60), PresenceCounts()
    with_log = primary_service(store, counts, RelayLog(window=10))
    for bad in (
        {"op": "rlog", "call": "after"},  # no offset
        {"op": "rlog", "call": "drop everything"},
        {"op": "rlog", "call": "save", "pid": "p", "node": "n", "fields": []},
    ):
        with pytest.raises((KeyError, ValueError, AttributeError)):
            await with_log(json.dumps(bad).encode())
    without = primary_service(store, counts)
    with pytest.raises(ValueError):
        await without(b'{"op": "rlog", "call": "last"}')
    assert json.loads(await with_log(b'{"op": "rlog", "call": "last"}')) == {"last": "0-0"}
