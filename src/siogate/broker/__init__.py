"""Delivery of commands to every node: an interface with in-memory and Redis implementations."""

from .base import (
    AckEmitQuery,
    AdminQuery,
    Answers,
    Broker,
    BrokerStats,
    BrokerUnavailable,
    Command,
    CountQuery,
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
    "AckEmitQuery",
    "AdminQuery",
    "Answers",
    "Broker",
    "BrokerStats",
    "BrokerUnavailable",
    "Command",
    "CountQuery",
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
