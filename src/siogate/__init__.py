"""siogate: a Socket.IO gateway that stateless backends drive over HTTP and webhooks."""

from ._version import __version__
from .app import Gateway, build
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
