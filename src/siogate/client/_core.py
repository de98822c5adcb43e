"""The part of the SDK that does no I/O, shared by ``Client`` and ``AsyncClient``.

A public method turns its arguments into a :class:`Call` (method, path, JSON body,
and how to read the answer); ``BaseClient`` turns a call into an ``httpx.Request``,
decides whether an outcome is worth another attempt, and turns the final outcome
into a value or an exception. What is left to the two clients is sending the
request and sleeping between attempts, the only steps that differ between
blocking and ``async`` code.
"""

from __future__ import annotations

import json
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx

from siogate._version import __version__
from siogate.auth.minting import mint_token
from siogate.client._exceptions import RequestError, RequestTimeout
from siogate.client._models import (
    AckReply,
    AckResult,
    Emit,
    EmitOptions,
    HistoryMessage,
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
from siogate.errors import ApiError, ConfigError

T = TypeVar("T")
PoolT = TypeVar("PoolT", httpx.Client, httpx.AsyncClient)

Outcome = httpx.Response | httpx.RequestError
"""What one attempt ends with: an answer of any status, or no answer."""

# Timeouts
DEFAULT_TIMEOUT = 10.0
"""Seconds for each of connecting, writing, reading and waiting for a pooled connection."""

# Retries
DEFAULT_RETRIES = 2
"""Further attempts of a call after a failed one (a POST is repeated under its idempotency key)."""
DEFAULT_BACKOFF = 0.25
"""Seconds before the first retry; each further retry waits twice as long."""
RETRY_STATUSES = frozenset({502, 503, 504})
MAX_ACK_TIMEOUT_MS = 60_000
"""The longest ``timeout_ms`` an emit with ack may wait (the gateway's limit)."""
"""Statuses a proxy or load balancer answers while the gateway is away or restarting."""
IN_PROGRESS = 409
"""The gateway is still applying an earlier attempt with the same idempotency key."""
IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY = 256


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One API request, before any I/O, and how to read its ``200`` body."""

    method: Literal["GET", "POST"]
    path: str
    parse: Callable[[Any], T]
    content: bytes | None = None
    # A sequence of pairs where a parameter repeats (?user=a&user=b).
    params: Mapping[str, str] | tuple[tuple[str, str], ...] | None = None
    # Sent on every attempt of a POST, so that the gateway applies it once however
    # many attempts reach it.
    idempotency_key: str | None = None
    # Seconds the gateway may take before it answers, on top of the client's timeout.
    wait: float = 0.0


# ------------------------------------------------------------------ building calls

# SDK option name -> API field name. ``except`` is a Python keyword.
_EMIT_FIELDS = {
    "event": "event",
    "data": "data",
    "args": "args",
    "rooms": "rooms",
    "except_": "except",
    "namespace": "namespace",
}
_SELECTOR_FIELDS = {"sockets": "sockets", "rooms": "rooms", "namespace": "namespace"}
_LIST_FIELDS = frozenset({"args", "rooms", "except", "sockets"})


def _encode(body: Mapping[str, Any]) -> bytes:
    # Refused here rather than by the gateway: NaN and Infinity are not JSON
    # (ValueError), and neither are bytes or other objects (TypeError).
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _fields(options: Mapping[str, Any], names: Mapping[str, str], where: str) -> dict[str, Any]:
    """``options`` with API field names; unknown keys raise as a bad keyword would."""
    body: dict[str, Any] = {}
    for key, value in options.items():
        field = names.get(key)
        if field is None:
            raise TypeError(f"{where} got an unexpected keyword argument {key!r}")
        if field in _LIST_FIELDS:
            # A str is a Sequence[str]: rooms="news" would become n, e, w, s.
            if isinstance(value, str | bytes) or not isinstance(value, Iterable):
                raise TypeError(f"{where}: {key} must be a list, not {type(value).__name__}")
            value = list(value)
        body[field] = value
    return body


def idempotency_key(given: str | None) -> str:
    """``given``, checked as the gateway would, or a fresh random key for one call."""
    if given is None:
        return str(uuid.uuid4())
    if not isinstance(given, str):
        raise TypeError(f"idempotency_key must be a str, not {type(given).__name__}")
    if not 0 < len(given) <= MAX_IDEMPOTENCY_KEY or not all(" " <= c <= "~" for c in given):
        raise ValueError("idempotency_key must be 1-256 printable ASCII characters")
    return given


def emit_call(event: str, options: EmitOptions, key: str | None = None) -> Call[None]:
    body = _fields({"event": event, **options}, _EMIT_FIELDS, "emit()")
    return Call("POST", "/v1/emit", _ok, _encode(body), idempotency_key=idempotency_key(key))


def emit_with_ack_call(
    event: str, timeout_ms: int, options: EmitOptions, key: str | None = None
) -> Call[AckResult]:
    if type(timeout_ms) is not int or not 1 <= timeout_ms <= MAX_ACK_TIMEOUT_MS:
        raise ValueError(f"timeout_ms must be an integer from 1 to {MAX_ACK_TIMEOUT_MS}")
    body = _fields({"event": event, **options}, _EMIT_FIELDS, "emit_with_ack()")
    body["ack"] = {"timeout_ms": timeout_ms}
    return Call(
        "POST",
        "/v1/emit",
        _ack_result,
        _encode(body),
        idempotency_key=idempotency_key(key),
        wait=timeout_ms / 1000,
    )


def batch_call(emits: Iterable[Emit], key: str | None = None) -> Call[int]:
    entries = [_fields(e, _EMIT_FIELDS, f"batch() entry {i}") for i, e in enumerate(emits)]
    content = _encode({"emits": entries})
    return Call("POST", "/v1/batch", _count, content, idempotency_key=idempotency_key(key))


def select_call(
    action: Literal["join", "leave", "disconnect"],
    room: str | None,
    selector: Selector,
    key: str | None = None,
) -> Call[None]:
    body = _fields(selector, _SELECTOR_FIELDS, f"{action}()")
    if room is not None:
        body["room"] = room
    path = f"/v1/{action}"
    return Call("POST", path, _ok, _encode(body), idempotency_key=idempotency_key(key))


def _page_params(namespace: str, limit: int | None, cursor: str | None) -> dict[str, str]:
    params = {"namespace": namespace}
    if limit is not None:
        params["limit"] = str(limit)
    if cursor is not None:
        params["cursor"] = cursor
    return params


def _room_path(room: str, what: str) -> str:
    # Every character is escaped, "/" included: the gateway decodes the segment.
    return f"/v1/rooms/{quote(room, safe='')}/{what}"


def rooms_call(
    namespace: str, limit: int | None = None, cursor: str | None = None
) -> Call[RoomsListing]:
    return Call("GET", "/v1/rooms", _rooms, params=_page_params(namespace, limit, cursor))


def sockets_call(
    room: str, namespace: str, limit: int | None = None, cursor: str | None = None
) -> Call[SocketsListing]:
    path = _room_path(room, "sockets")
    return Call("GET", path, _sockets, params=_page_params(namespace, limit, cursor))


def presence_call(users: Iterable[str], namespace: str) -> Call[PresenceListing]:
    if isinstance(users, str | bytes):
        # A str is an Iterable[str]: "alice" would ask about a, l, i, c, e.
        raise TypeError("presence(): users must be a list of user ids, not a string")
    params = (*(("user", user) for user in users), ("namespace", namespace))
    return Call("GET", "/v1/presence", _presence, params=params)


def room_presence_call(
    room: str, namespace: str, limit: int | None = None, cursor: str | None = None
) -> Call[RoomPresenceListing]:
    path = _room_path(room, "presence")
    return Call("GET", path, _room_presence, params=_page_params(namespace, limit, cursor))


def history_call(
    room: str, namespace: str, limit: int | None = None, since: str | None = None
) -> Call[RoomHistory]:
    params = {"namespace": namespace}
    if limit is not None:
        params["limit"] = str(limit)
    if since is not None:
        params["since"] = since
    return Call("GET", _room_path(room, "history"), _history, params=params)


# ------------------------------------------------------------------ reading answers
# Each parser may raise KeyError, TypeError, ValueError or AttributeError on a body of the wrong
# shape; BaseClient turns those into ApiError("unexpected_response").


def _ok(payload: Any) -> None:
    if payload["ok"] is not True:
        raise ValueError("ok is not true")


def _count(payload: Any) -> int:
    _ok(payload)
    count = payload["count"]
    if not isinstance(count, int):
        raise TypeError("count is not an integer")
    return count


def _nodes(payload: Any) -> ListingNodes | None:
    nodes = payload.get("nodes")
    if nodes is None:
        return None
    answered = nodes["answered"]
    if not isinstance(answered, int):
        raise TypeError("nodes.answered is not an integer")
    return ListingNodes(answered=answered, missing=tuple(str(n) for n in nodes["missing"]))


def _partial(payload: Any) -> bool:
    partial = payload.get("partial", False)
    if not isinstance(partial, bool):
        raise TypeError("partial is not a boolean")
    return partial


def _next_cursor(payload: Any) -> str | None:
    cursor = payload.get("next_cursor")
    if cursor is not None and not isinstance(cursor, str):
        raise TypeError("next_cursor is not a string")
    return cursor


def _rooms(payload: Any) -> RoomsListing:
    return RoomsListing(
        rooms=tuple(RoomInfo(str(r["name"]), int(r["sockets"])) for r in payload["rooms"]),
        partial=_partial(payload),
        nodes=_nodes(payload),
        next_cursor=_next_cursor(payload),
    )


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _sockets(payload: Any) -> SocketsListing:
    return SocketsListing(
        sockets=tuple(
            SocketInfo(
                str(s["id"]),
                _optional_str(s["user"]),
                _optional_str(s.get("node")),
                s.get("connected", True) is not False,
            )
            for s in payload["sockets"]
        ),
        partial=_partial(payload),
        nodes=_nodes(payload),
        next_cursor=_next_cursor(payload),
    )


def _history(payload: Any) -> RoomHistory:
    complete = payload["complete"]
    if not isinstance(complete, bool):
        raise TypeError("complete is not a boolean")
    messages = tuple(
        HistoryMessage(str(m["offset"]), str(m["event"]), list(m["data"]), int(m["ts"]))
        for m in payload["messages"]
    )
    return RoomHistory(messages=messages, complete=complete)


def _presence(payload: Any) -> PresenceListing:
    users = {
        str(user): UserPresence(bool(entry["online"]), int(entry.get("sockets", 0)))
        for user, entry in payload["users"].items()
    }
    return PresenceListing(users=users, partial=_partial(payload), nodes=_nodes(payload))


def _room_presence(payload: Any) -> RoomPresenceListing:
    return RoomPresenceListing(
        users=tuple(UserCount(str(u["user"]), int(u["sockets"])) for u in payload["users"]),
        anonymous=int(payload["anonymous"]),
        partial=_partial(payload),
        nodes=_nodes(payload),
        next_cursor=_next_cursor(payload),
    )


def _ack_result(payload: Any) -> AckResult:
    recipients = payload["recipients"]
    if not isinstance(recipients, int):
        raise TypeError("recipients is not an integer")
    return AckResult(
        recipients=recipients,
        acks=tuple(AckReply(str(a["socket"]), list(a["args"])) for a in payload["acks"]),
        timeouts=tuple(str(t) for t in payload["timeouts"]),
        partial=_partial(payload),
        nodes=_nodes(payload),
    )


def _api_error(response: httpx.Response, payload: Any) -> ApiError:
    status = response.status_code
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        return ApiError(status, error["code"], str(error.get("message", "")))
    kind = response.headers.get("content-type", "no content type")
    return ApiError(status, "unexpected_response", f"HTTP {status} with a body of {kind}")


# ------------------------------------------------------------------ the shared client


class BaseClient(ABC, Generic[PoolT]):
    """Settings, request building, retry policy and answer parsing for both clients."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        jwt_secret: str | None = None,
        # Timeouts
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        # Retries
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
    ) -> None:
        if retries < 0:
            raise ValueError("retries must be 0 or more")
        if backoff < 0:
            raise ValueError("backoff must be 0 or more")
        self.url = url.rstrip("/")
        """The gateway's base URL, as given without a trailing slash."""
        self.timeout = httpx.Timeout(timeout)
        self.retries = retries
        self.backoff = backoff
        self._jwt_secret = jwt_secret
        headers = {
            "Authorization": f"Bearer {api_key}",
            "Accept": "application/json",
            "User-Agent": f"siogate-python/{__version__}",
        }
        self._http: PoolT = self._open(headers)

    @abstractmethod
    def _open(self, headers: dict[str, str]) -> PoolT:
        """The httpx client (connection pool) that sends every request."""

    def __repr__(self) -> str:
        # The API key stays out of logs and tracebacks.
        return f"{type(self).__name__}({self.url!r})"

    def token(self, sub: str | None, rooms: Sequence[str] = (), ttl: float = 3600) -> str:
        """Mint a handshake JWT for a browser: user ``sub``, joining ``rooms`` on connect.

        Needs the client's ``jwt_secret`` (the gateway's ``--jwt-secret``); no
        request is made. The token expires ``ttl`` seconds from now.
        """
        if self._jwt_secret is None:
            raise ConfigError("token() needs the client's jwt_secret")
        return mint_token(self._jwt_secret, sub=sub, rooms=rooms, ttl=ttl)

    def _request(self, call: Call[Any]) -> httpx.Request:
        headers = {"Content-Type": "application/json"} if call.content is not None else {}
        if call.idempotency_key is not None:
            headers[IDEMPOTENCY_HEADER] = call.idempotency_key
        timeout = self.timeout
        if call.wait and timeout.read is not None:
            # The answer comes only once the gateway is done waiting (acks).
            timeout = httpx.Timeout(
                connect=timeout.connect,
                read=timeout.read + call.wait,
                write=timeout.write,
                pool=timeout.pool,
            )
        return self._http.build_request(
            call.method,
            call.path,
            params=call.params,
            content=call.content,
            headers=headers,
            timeout=timeout,
        )

    def _retry_delay(self, call: Call[Any], attempt: int, outcome: Outcome) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None to stop at ``outcome``.

        A POST whose answer was lost may already have been applied, so it is
        repeated only under an idempotency key (every SDK POST has one): the
        gateway then answers a repeat with the first answer instead of applying it
        again, and answers 409 while the first attempt is still being applied.
        """
        keyed = call.idempotency_key is not None
        if (call.method != "GET" and not keyed) or attempt >= self.retries:
            return None
        if isinstance(outcome, httpx.TransportError) or (
            isinstance(outcome, httpx.Response)
            and (
                outcome.status_code in RETRY_STATUSES
                or (keyed and outcome.status_code == IN_PROGRESS)
            )
        ):
            return self.backoff * 2.0**attempt
        return None

    def _result(self, call: Call[T], outcome: Outcome) -> T:
        """The value of a ``200`` answer; an exception for anything else."""
        if isinstance(outcome, httpx.RequestError):
            error = RequestTimeout if isinstance(outcome, httpx.TimeoutException) else RequestError
            detail = f"{type(outcome).__name__}: {outcome}" if str(outcome) else repr(outcome)
            raise error(f"{call.method} {call.path}: {detail}") from outcome
        try:
            payload = outcome.json()
        except ValueError:  # not JSON, or not UTF-8
            payload = None
        if outcome.status_code != 200:
            raise _api_error(outcome, payload)
        try:
            return call.parse(payload)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ApiError(
                200, "unexpected_response", f"unexpected body from {call.path}: {exc!r}"
            ) from None
