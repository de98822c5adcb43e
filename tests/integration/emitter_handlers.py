"""In-process handlers for test_emitter_compat.py (loaded by the gateway subprocesses)."""

from __future__ import annotations

import json
import os
from typing import Any


class ServerEvents:
    """Writes each serverSideEmit it is given as one JSON line to $EMITTER_TEST_EVENTS."""

    def on_server_event(self, namespace: str, event: str, args: list[Any]) -> None:
        line = {"pid": os.getpid(), "namespace": namespace, "event": event, "args": args}
        with open(os.environ["EMITTER_TEST_EVENTS"], "a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")
