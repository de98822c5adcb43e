"""Rate-limited logging for errors that a peer can trigger at will.

Hostile input must not flood the log: each kind of error is written at most once per
interval, and the next line says how many of that kind were left out meanwhile.
"""

from __future__ import annotations

import logging
import time

__all__ = ["INTERVAL", "RateLimitedLog"]

INTERVAL = 10.0
"""Seconds between two lines of the same kind."""


class RateLimitedLog:
    """Writes to ``logger`` at most one line per kind per ``interval`` seconds."""

    __slots__ = ("_logger", "_interval", "_last", "_suppressed")

    def __init__(self, logger: logging.Logger, interval: float = INTERVAL) -> None:
        self._logger = logger
        self._interval = interval
        # kind -> monotonic time of the last line written, and lines left out since.
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def log(
        self,
        level: int,
        kind: str,
        message: str,
        *args: object,
        exc_info: BaseException | None = None,
    ) -> bool:
        """Log ``message % args`` unless ``kind`` was logged less than an interval ago.

        Returns whether a line was written. ``exc_info`` adds the traceback.
        """
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return False
        # Bounded: kinds are names chosen in the code, not text from the peer.
        self._last[kind] = now
        skipped = self._suppressed.pop(kind, 0)
        if skipped:
            message += " (%d more like this in the last %.0f s)"
            args = (*args, skipped, self._interval)
        self._logger.log(level, message, *args, exc_info=exc_info)
        return True

    def warning(self, kind: str, message: str, *args: object) -> bool:
        return self.log(logging.WARNING, kind, message, *args)

    def error(
        self, kind: str, message: str, *args: object, exc_info: BaseException | None = None
    ) -> bool:
        return self.log(logging.ERROR, kind, message, *args, exc_info=exc_info)
