"""Bytes held per connection by a WebSocket frame parser, measured with tracemalloc.

    .venv/bin/python bench/parser_memory.py

Compares the sans-I/O protocol object of the ``websockets`` library (what siogate used
first) with siogate's own ``FrameParser`` (docs/architecture.md, "Hand-written WebSocket
framing").
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

from websockets.protocol import State
from websockets.server import ServerProtocol

from siogate.protocol.websocket import FrameParser

N = 2000


def per_object(factory: Callable[[], object]) -> float:
    tracemalloc.start()
    kept = [factory() for _ in range(N)]
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del kept
    return size / N


def main() -> None:
    rows = [
        ("websockets ServerProtocol", lambda: ServerProtocol(state=State.OPEN, max_size=10**6)),
        ("siogate FrameParser", lambda: FrameParser(10**6)),
    ]
    for name, factory in rows:
        print(f"{name}: {per_object(factory):,.0f} bytes")


if __name__ == "__main__":
    main()
