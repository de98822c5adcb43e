"""siogate: a Socket.IO gateway that stateless backends drive over HTTP and webhooks."""

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .client import AsyncClient, Client, RequestError, RequestTimeout, verify_webhook
from .config import Settings
from .errors import (
    ApiError,
    AuthError,
    ConfigError,
    PayloadTooLarge,
    ProtocolError,
    SiogateError,
    WebhookError,
)
from .handlers import HandlerSocket, Refuse

if TYPE_CHECKING:
    from .app import Gateway, build


def __getattr__(name: str) -> Any:
    # The server (and redis, httptools, uvloop) loads on first use, so that a backend
    # importing only the SDK (siogate.client) starts fast.
    if name in ("Gateway", "build"):
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module 'siogate' has no attribute {name!r}")


__all__ = [
    "ApiError",
    "AsyncClient",
    "AuthError",
    "Client",
    "ConfigError",
    "Gateway",
    "HandlerSocket",
    "PayloadTooLarge",
    "ProtocolError",
    "Refuse",
    "RequestError",
    "RequestTimeout",
    "Settings",
    "SiogateError",
    "WebhookError",
    "__version__",
    "build",
    "verify_webhook",
]
