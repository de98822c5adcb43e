"""Delivery of commands to every node: an interface with in-memory and Redis implementations."""

from .base import Broker, Command, EmitCommand, MessageHandler, SocketsCommand
from .memory import MemoryBroker

__all__ = ["Broker", "Command", "EmitCommand", "MemoryBroker", "MessageHandler", "SocketsCommand"]
