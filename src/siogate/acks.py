"""Emits that wait for their recipients' acknowledgements (``POST /v1/emit`` with ``ack``).

Each node keeps here the ack emits it is waiting on: which of its sockets still owe an
answer, under which ack id, and what the others answered. The node sends the packets and
routes the clients' ACK packets in; this module only does the bookkeeping.

Ack ids come from one counter per node that never goes back: an id is never handed out
twice in a process, so a late answer to an emit that already timed out can never be
taken for the answer to a newer one (which it could, were ids reused per socket).

Every pending emit ends by its timeout at the latest; its entries are dropped then, so
an unanswered emit holds memory for ``timeout`` seconds and no longer. A socket that
leaves while it owes an answer is counted as timed out at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from .errors import ApiError
from .types import Sid


class TooManyRecipients(ApiError):
    """The emit selects more sockets than one ack emit may wait on; nothing was sent."""

    def __init__(self, count: int, limit: int) -> None:
        super().__init__(
            400,
            "too_many_recipients",
            f"the emit selects {count} sockets; an emit with ack may have at most {limit} "
            "recipients (--max-ack-recipients)",
        )
        self.count = count
        self.limit = limit


class TooManyPending(ApiError):
    """This node already waits on as many ack emits as it may; nothing was sent."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            503,
            "too_many_pending_acks",
            f"{limit} emits with ack are already waiting on this node (--max-pending-acks); "
            "retry later",
        )


class PendingEmit:
    """One ack emit on this node: who still owes an answer, and the answers so far."""

    __slots__ = ("waiting", "acks", "timeouts", "done")

    def __init__(self) -> None:
        # Socket id -> the ack id it was sent, for sockets that have not answered.
        self.waiting: dict[Sid, int] = {}
        self.acks: list[tuple[Sid, list[Any]]] = []
        self.timeouts: list[Sid] = []
        self.done = asyncio.Event()

    def _settle(self, sid: Sid, args: list[Any] | None) -> None:
        del self.waiting[sid]
        if args is None:
            self.timeouts.append(sid)
        else:
            self.acks.append((sid, args))
        if not self.waiting:
            self.done.set()


class AckRegistry:
    """The ack emits this node waits on, indexed by socket and ack id."""

    def __init__(self) -> None:
        self._next_id = 0
        # Socket id -> {ack id: emit}, only for sockets that owe an answer.
        self._owed: dict[Sid, dict[int, PendingEmit]] = {}
        # Emits opened and not yet finished.
        self.pending = 0

    def open(self, sids: Iterable[Sid]) -> tuple[PendingEmit, list[int]]:
        """A new emit waiting on ``sids`` (distinct), and the ack id for each of them."""
        emit = PendingEmit()
        ids = []
        for sid in sids:
            ack_id = self._next_id
            self._next_id += 1
            emit.waiting[sid] = ack_id
            self._owed.setdefault(sid, {})[ack_id] = emit
            ids.append(ack_id)
        if not emit.waiting:
            emit.done.set()
        self.pending += 1
        return emit, ids

    def received(self, sid: Sid, ack_id: int, args: list[Any]) -> bool:
        """Socket ``sid`` answered ``ack_id``; False when nothing waits for that answer
        (late, repeated or made up), which is then ignored."""
        owed = self._owed.get(sid)
        if owed is None:
            return False
        emit = owed.pop(ack_id, None)
        if emit is None:
            return False
        if not owed:
            del self._owed[sid]
        emit._settle(sid, args)
        return True

    def gone(self, sid: Sid) -> None:
        """Socket ``sid`` left: every answer it owed is a timeout now."""
        owed = self._owed.pop(sid, None)
        if owed is not None:
            for emit in owed.values():
                emit._settle(sid, None)

    async def wait(self, emit: PendingEmit, timeout: float) -> PendingEmit:
        """Wait until every recipient answered or left, or ``timeout`` seconds passed;
        those still silent then are timeouts. Releases the emit's entries either way."""
        try:
            async with asyncio.timeout(timeout):
                await emit.done.wait()
        except TimeoutError:
            pass
        finally:
            self.pending -= 1
            for sid, ack_id in list(emit.waiting.items()):
                owed = self._owed.get(sid)
                if owed is not None:
                    owed.pop(ack_id, None)
                    if not owed:
                        del self._owed[sid]
                emit._settle(sid, None)
        return emit

    def owed(self) -> int:
        """Answers still awaited, all emits together (for tests and metrics)."""
        return sum(len(o) for o in self._owed.values())


class AckResult:
    """The merged outcome of one ack emit over the nodes that answered."""

    __slots__ = ("acks", "timeouts", "refused")

    def __init__(self) -> None:
        self.acks: list[tuple[str, list[Any]]] = []
        self.timeouts: list[str] = []
        # Nodes that sent nothing: their own share of recipients was over the cap.
        self.refused: list[str] = []

    @property
    def recipients(self) -> int:
        return len(self.acks) + len(self.timeouts)

    def add(self, node: str, answer: Any) -> bool:
        """Merge one node's answer (see :func:`answer_json`); False if it is malformed."""
        if not isinstance(answer, dict):
            return False
        if "refused" in answer:
            self.refused.append(node)
            return True
        acks, timeouts = answer.get("acks"), answer.get("timeouts")
        if not isinstance(acks, list) or not isinstance(timeouts, list):
            return False
        for entry in acks:
            match entry:
                case [str(sid), list(args)]:
                    self.acks.append((sid, args))
        self.timeouts.extend(t for t in timeouts if isinstance(t, str))
        return True


def answer_json(emit: PendingEmit) -> dict[str, Any]:
    """A node's answer to an ack emit, as it travels between nodes."""
    return {"acks": [[sid, args] for sid, args in emit.acks], "timeouts": list(emit.timeouts)}
