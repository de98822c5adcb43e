"""siogate: a Socket.IO gateway that stateless backends drive over HTTP and webhooks."""

from ._version import __version__
from .app import Gateway, build
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
    "AuthError",
    "ConfigError",
    "Gateway",
    "HandlerSocket",
    "PayloadTooLarge",
    "ProtocolError",
    "Refuse",
    "Settings",
    "SiogateError",
    "WebhookError",
    "__version__",
    "build",
]
