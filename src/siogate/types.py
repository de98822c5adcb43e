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


# A node id that socket ids can start with (what RedisBroker and MemoryBroker pick).
NODE_ID_LENGTH = 8
_NODE_SHAPE = re.compile(r"[A-Za-z0-9_-]{8}")


def is_node_id(name: str) -> bool:
    """Whether socket ids can start with ``name`` (8 of ``A-Z a-z 0-9 _ -``)."""
    return _NODE_SHAPE.fullmatch(name) is not None


def new_socket_id(node: str = "") -> Sid:
    """A socket id; always shaped as :func:`is_socket_id` expects.

    With ``node`` (an 8-character node id) the id starts with it, so that a command for
    the socket can be routed to its node (``siogate.broker.routing``); the other 12
    characters are random (72 bits). Without, all 20 are random (120 bits).
    """
    if is_node_id(node):
        return Sid(node + base64.urlsafe_b64encode(os.urandom(9)).decode("ascii"))
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
