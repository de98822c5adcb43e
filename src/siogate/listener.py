"""A WebSocket Socket.IO client for ``siogate listen``, driving the sans-I/O ClientSession."""

from __future__ import annotations

import base64
import json
import sys
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from .protocol.client import ClientSession, Connected, ConnectFailed, Disconnected
from .protocol.events import EventReceived


def _printable(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"_binary": base64.b64encode(value).decode("ascii")}
    if isinstance(value, list):
        return [_printable(v) for v in value]
    if isinstance(value, dict):
        return {k: _printable(v) for k, v in value.items()}
    return value


async def listen(url: str, namespace: str, auth: dict[str, Any], count: int) -> int:
    """Print events as JSON lines; returns the process exit status."""
    ws_url = url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    ws_url = ws_url.rstrip("/") + "/socket.io/?EIO=4&transport=websocket"
    session = ClientSession()
    seen = 0
    try:
        async with connect(ws_url, max_size=None, compression=None) as ws:
            session.connect(namespace, auth)
            while True:
                for message in session.data_to_send():
                    await ws.send(message)
                for event in session.events_received():
                    if isinstance(event, Connected):
                        print(f"connected to {event.namespace} as {event.sid}", file=sys.stderr)
                    elif isinstance(event, ConnectFailed):
                        print(f"connect refused: {event.message}", file=sys.stderr)
                        return 1
                    elif isinstance(event, Disconnected):
                        print(f"disconnected: {event.reason}", file=sys.stderr)
                        return 1
                    elif isinstance(event, EventReceived):
                        line = {"event": event.event, "args": _printable(event.args)}
                        print(json.dumps(line, ensure_ascii=False), flush=True)
                        seen += 1
                        if count and seen >= count:
                            return 0
                session.receive(await ws.recv())
    except (OSError, WebSocketException) as exc:
        print(f"connection failed: {exc}", file=sys.stderr)
        return 1
