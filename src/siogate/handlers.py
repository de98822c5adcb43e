"""In-process Python handlers: logic that runs inside the gateway.

``siogate serve --handlers module:attr`` loads an object (a class is instantiated with no
arguments) whose optional methods are called with a :class:`HandlerSocket`::

    async def on_connect(self, socket, auth) -> None      # raise Refuse("why") to refuse
    async def on_event(self, socket, event, args) -> list | None   # the ack arguments
    async def on_disconnect(self, socket, reason) -> None
    async def on_server_event(self, namespace, event, args) -> None  # serverSideEmit

Plain (non-async) methods work too.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .errors import ConfigError


class Refuse(Exception):  # noqa: N818 - reads as a verb at the raise site
    """Raised by ``on_connect`` to refuse the socket; the client gets CONNECT_ERROR."""

    def __init__(self, message: str = "refused", data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data


class HandlerSocket(Protocol):
    """The socket as handlers see it."""

    @property
    def id(self) -> str: ...
    @property
    def namespace(self) -> str: ...
    @property
    def user(self) -> str | None: ...
    @property
    def rooms(self) -> frozenset[str]: ...

    def emit(self, event: str, *args: Any) -> None: ...
    def join(self, room: str) -> None: ...
    def leave(self, room: str) -> None: ...
    def disconnect(self) -> None: ...


HandlerMethod = Callable[..., Any]


class Handlers:
    """The loaded handler object, with each hook resolved once."""

    def __init__(self, target: object) -> None:
        self.target = target
        self.on_connect = self._hook("on_connect")
        self.on_event = self._hook("on_event")
        self.on_disconnect = self._hook("on_disconnect")
        # An emitter's serverSideEmit (--emitter-compat), called on every node.
        self.on_server_event = self._hook("on_server_event")

    def _hook(self, name: str) -> HandlerMethod | None:
        method = getattr(self.target, name, None)
        if method is not None and not callable(method):
            raise ConfigError(f"handlers attribute {name!r} is not callable")
        return method


async def call(method: HandlerMethod, *args: Any) -> Any:
    """Call a handler hook that may or may not be async."""
    result = method(*args)
    if inspect.isawaitable(result):
        awaitable: Awaitable[Any] = result
        return await awaitable
    return result


def load(spec: str) -> Handlers:
    """Import ``module:attr`` (the current directory is importable, as with uvicorn)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"--handlers must look like module:attr, got {spec!r}")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import handlers module {module_name!r}: {exc}") from exc
    target: object = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise ConfigError(f"module {module_name!r} has no attribute {attr!r}") from exc
    if inspect.isclass(target):
        target = target()
    return Handlers(target)
