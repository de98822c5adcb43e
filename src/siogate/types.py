"""Named identifier types used across siogate."""

from __future__ import annotations

from typing import NewType, TypeAlias

Sid = NewType("Sid", str)
"""A Socket.IO socket id: one per (Engine.IO session, namespace) pair."""

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
