"""Forwarder: relayed polling requests are capped per owner node."""

from __future__ import annotations

import asyncio
import json

from siogate.transport.forward import Forwarder
from siogate.transport.http import Request

ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"


class SlowOwner(asyncio.Protocol):
    """An owner node that answers each request once ``release`` is set."""

    def __init__(self, release: asyncio.Event, seen: list[bytes]) -> None:
        self.release = release
        self.seen = seen

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.seen.append(data)
        asyncio.get_running_loop().create_task(self._answer())

    async def _answer(self) -> None:
        await self.release.wait()
        self.transport.write(ANSWER)  # type: ignore[attr-defined]


def poll(sid: str) -> Request:
    return Request("GET", "/socket.io/", f"EIO=4&transport=polling&sid={sid}", {})


async def test_requests_over_the_cap_get_503_at_once() -> None:
    release = asyncio.Event()
    seen: list[bytes] = []
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SlowOwner(release, seen), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def resolve(node: str) -> str | None:
        return f"http://127.0.0.1:{port}" if node == "bbbbbbbb" else None

    forwarder = Forwarder("aaaaaaaa", resolve, timeout=5, max_body=1000, max_in_flight=3)
    try:
        held = [asyncio.ensure_future(forwarder.forward(poll("bbbbbbbbs1"), "bbbbbbbb"))]
        held += [asyncio.ensure_future(forwarder.forward(poll("bbbbbbbbs1"), "bbbbbbbb"))]
        held += [asyncio.ensure_future(forwarder.forward(poll("bbbbbbbbs1"), "bbbbbbbb"))]
        while len(seen) < 3:
            await asyncio.sleep(0.01)
        busy = await asyncio.wait_for(forwarder.forward(poll("bbbbbbbbs1"), "bbbbbbbb"), 1)
        assert busy is not None and busy.status == 503
        assert json.loads(busy.body)["error"]["code"] == "forward_overloaded"
        assert forwarder.refused == 1
        # Another owner, or an unknown one, is not affected by this owner's count.
        assert await forwarder.forward(poll("ccccccccs2"), "cccccccc") is None
        release.set()
        answers = await asyncio.wait_for(asyncio.gather(*held), 5)
        assert [a.status for a in answers if a is not None] == [200, 200, 200]
        again = await asyncio.wait_for(forwarder.forward(poll("bbbbbbbbs1"), "bbbbbbbb"), 5)
        assert again is not None and again.status == 200
        assert forwarder._in_flight == {}
    finally:
        await forwarder.aclose()
        server.close()
        await server.wait_closed()
