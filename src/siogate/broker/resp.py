"""Redis commands packed by hand (RESP2 arrays of bulk strings), for the publish path.

redis-py packs each argument of each command through its encoder, which cost more CPU
than the rest of a publish at thousands of publishes a second (a guarded publish has
eight arguments). Here the constant head of a command is packed once and each call
appends only its variable arguments.
"""

from __future__ import annotations


def bulk(value: bytes) -> bytes:
    """One bulk string: ``$<length>\\r\\n<bytes>\\r\\n``."""
    return b"$%d\r\n%b\r\n" % (len(value), value)


def head(count: int, *parts: bytes) -> bytes:
    """The start of a command of ``count`` arguments in all, the first being ``parts``."""
    return b"*%d\r\n" % count + b"".join(bulk(p) for p in parts)
