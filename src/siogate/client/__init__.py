"""The Python backend SDK: publish through the HTTP API, verify webhooks.

::

    from siogate.client import Client

    Client("http://127.0.0.1:8000", api_key).emit("hello", data={"text": "hi"})

:class:`Client` blocks, :class:`AsyncClient` is awaited; both take the same
arguments and have the same methods (see ``docs/sdk-python.md``). This package
never imports the gateway's server side (node, transport, api, app, cli, config).
"""

from __future__ import annotations

from siogate.client._client import AsyncClient, Client
from siogate.client._core import DEFAULT_BACKOFF, DEFAULT_RETRIES, DEFAULT_TIMEOUT
from siogate.client._exceptions import RequestError, RequestTimeout
from siogate.client._models import (
    AckReply,
    AckResult,
    Emit,
    EmitOptions,
    HistoryMessage,
    Listing,
    ListingNodes,
    PresenceListing,
    RoomHistory,
    RoomInfo,
    RoomPresenceListing,
    RoomsListing,
    Selector,
    SocketInfo,
    SocketsListing,
    UserCount,
    UserPresence,
)
from siogate.client._webhooks import (
    DEFAULT_TOLERANCE,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookVerificationError,
    verify_webhook,
)
from siogate.errors import ApiError, ConfigError, SiogateError

__all__ = [
    "DEFAULT_BACKOFF",
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT",
    "DEFAULT_TOLERANCE",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "AckReply",
    "AckResult",
    "ApiError",
    "AsyncClient",
    "Client",
    "ConfigError",
    "Emit",
    "EmitOptions",
    "HistoryMessage",
    "Listing",
    "ListingNodes",
    "PresenceListing",
    "RequestError",
    "RequestTimeout",
    "RoomHistory",
    "RoomInfo",
    "RoomPresenceListing",
    "RoomsListing",
    "Selector",
    "SiogateError",
    "SocketInfo",
    "SocketsListing",
    "UserCount",
    "UserPresence",
    "WebhookVerificationError",
    "verify_webhook",
]
