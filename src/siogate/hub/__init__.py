"""Node-local state: which sockets exist and which rooms they are in. No I/O."""

from ..types import is_socket_id, new_socket_id
from .hub import Hub, Link, Outgoing, Socket

__all__ = ["Hub", "Link", "Outgoing", "Socket", "is_socket_id", "new_socket_id"]
