"""Named identifier types used across siogate."""

from __future__ import annotations

import base64
import os
import re
from typing import NewType, TypeAlias

Sid = NewType("Sid", str)
"""A Socket.IO socket id: one per (Engine.IO session, namespace) pair."""

# 15 random bytes in URL-safe base64: 20 characters, no padding, 120 bits.
_SID_BYTES = 15
_SID_SHAPE = re.compile(r"[A-Za-z0-9_-]{20}")


def new_socket_id() -> Sid:
    """A random socket id; always shaped as :func:`is_socket_id` expects."""
    return Sid(base64.urlsafe_b64encode(os.urandom(_SID_BYTES)).decode("ascii"))


def is_socket_id(name: str) -> bool:
    """Whether ``name`` has the shape of a socket id (20 of ``A-Z a-z 0-9 _ -``).

    Such a name addresses one socket and is never a named room (see ``siogate.hub``).
    """
    return _SID_SHAPE.fullmatch(name) is not None


EngineSid = NewType("EngineSid", str)
"""An Engine.IO session id: one per physical client connection."""

Namespace = NewType("Namespace", str)
"""A Socket.IO namespace such as ``/`` or ``/chat``."""

Room = NewType("Room", str)
"""A room name inside one namespace."""

UserId = NewType("UserId", str)
"""The application's user id, taken from the JWT ``sub`` claim."""

JsonValue: TypeAlias = "None | bool | int | float | str | list[JsonValue] | dict[str, JsonValue]"
"""Any value that survives a JSON round trip."""

SioValue: TypeAlias = (
    "None | bool | int | float | str | bytes | list[SioValue] | dict[str, SioValue]"
)
"""A Socket.IO argument: JSON plus binary leaves (sent as attachments)."""
