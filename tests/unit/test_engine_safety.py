"""EngineServer's safety net: a bug while handling one request ends only that session."""

from __future__ import annotations

import logging

import pytest

from siogate.metrics import Metrics
from siogate.protocol.session import SessionClosed
from siogate.transport.engine import EngineOptions, EngineServer
from siogate.transport.http import Request


class BuggyNode:
    """A node whose event handling fails (except for the end of a session)."""

    def __init__(self) -> None:
        self.metrics = Metrics()
        self.closed: list[str] = []

    def handle_events(self, link: object, events: list[object]) -> None:
        for event in events:
            if isinstance(event, SessionClosed):
                self.closed.append(event.reason)
            else:
                raise RuntimeError("a bug")


def polling(method: str = "GET", sid: str | None = None, body: bytes = b"") -> Request:
    query = "EIO=4&transport=polling" + (f"&sid={sid}" if sid else "")
    return Request(method, "/socket.io/", query, {}, body=body)


async def test_a_bug_while_posting_ends_that_session_with_400(
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = BuggyNode()
    engine = EngineServer(node, EngineOptions())  # type: ignore[arg-type]
    caplog.set_level(logging.ERROR, "siogate.engine")
    sids = []
    for _ in range(5):
        opened = await engine.handle(polling())
        assert opened.status == 200
        sid = opened.body.decode().split('"sid":"')[1].split('"')[0]
        answer = await engine.handle(polling("POST", sid, b"40"))
        assert answer.status == 400 and b'"code": 3' in answer.body
        sids.append(sid)
    assert engine.clients == {}
    assert node.closed == ["transport error"] * 5
    assert len(caplog.records) <= 1  # one line per kind per interval
    gone = await engine.handle(polling("GET", sids[0]))
    assert gone.status == 400 and b'"code": 1' in gone.body
