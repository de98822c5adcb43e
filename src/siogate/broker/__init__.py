"""Delivery of commands to every node: an interface with in-memory and Redis implementations."""

from .base import (
    Answers,
    Broker,
    BrokerStats,
    BrokerUnavailable,
    Command,
    EmitCommand,
    MessageHandler,
    PresenceQuery,
    Query,
    QueryHandler,
    RoomPresenceQuery,
    RoomsQuery,
    SocketsCommand,
    SocketsQuery,
)
from .memory import MemoryBroker

__all__ = [
    "Answers",
    "Broker",
    "BrokerStats",
    "BrokerUnavailable",
    "Command",
    "EmitCommand",
    "MemoryBroker",
    "MessageHandler",
    "PresenceQuery",
    "Query",
    "QueryHandler",
    "RoomPresenceQuery",
    "RoomsQuery",
    "SocketsCommand",
    "SocketsQuery",
]
