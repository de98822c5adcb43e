"""A WebSocket Socket.IO client for ``siogate listen``, driving the sans-I/O ClientSession."""

from __future__ import annotations

import json
import sys
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from .protocol.client import ClientSession, Connected, ConnectFailed, Disconnected
from .protocol.events import EventReceived
from .protocol.socketio import json_safe


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
                        line = {"event": event.event, "args": json_safe(event.args)}
                        print(json.dumps(line, ensure_ascii=False), flush=True)
                        seen += 1
                        if count and seen >= count:
                            return 0
                session.receive(await ws.recv())
    except (OSError, WebSocketException) as exc:
        print(f"connection failed: {exc}", file=sys.stderr)
        return 1
