"""A siogate webhook receiver in FastAPI: verify the signed request, answer with an ack.

    pip install siogate fastapi uvicorn      # from a checkout: pip install . fastapi uvicorn
    export SIOGATE_URL=http://127.0.0.1:8000 SIOGATE_API_KEY=... SIOGATE_WEBHOOK_SECRET=...
    PORT=9000 python examples/webhook_fastapi.py
    siogate serve --webhook-url http://127.0.0.1:9000/siogate

A client's ``socket.emit("echo", x, ack)`` gets ``x`` back; ``socket.emit("join",
room, ack)`` puts the socket in ``room`` through the HTTP API, then acks.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request

from siogate.client import AsyncClient, WebhookVerificationError, verify_webhook

SECRET = os.environ["SIOGATE_WEBHOOK_SECRET"]
gateway = AsyncClient(os.environ["SIOGATE_URL"], os.environ["SIOGATE_API_KEY"])


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with gateway:  # closes its connections on shutdown
        yield


app = FastAPI(lifespan=lifespan)


@app.post("/siogate")
async def siogate_webhook(request: Request) -> dict[str, Any]:
    body = await request.body()  # the raw bytes: the signature covers them exactly
    try:
        # Also refuses a timestamp more than 300 s off this clock (a replayed request).
        verify_webhook(
            body,
            request.headers.get("x-siogate-signature"),
            request.headers.get("x-siogate-timestamp"),
            SECRET,
        )
    except WebhookVerificationError as exc:
        raise HTTPException(status_code=401, detail=exc.code) from None
    payload = json.loads(body)
    if payload["type"] != "event":
        return {}  # connect and disconnect are notifications: nothing to answer
    if payload["event"] == "join":
        room = payload["args"][0]
        await gateway.join(room, sockets=[payload["socket"]["id"]])
        return {"ack": [{"joined": room}]}
    return {"ack": payload["args"]}  # each element is one argument of the client's ack


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "9000")))
