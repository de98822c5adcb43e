"""Routing, authentication and error handling for the HTTP API."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from .. import dashboard
from ..auth import BasicAuth, check_bearer
from ..broker import BrokerUnavailable
from ..errors import ApiError
from ..listings import Listing, Page
from ..node import Node
from ..transport.http import Request, Response
from ..types import Namespace, Room, Sid, UserId
from . import paging, schemas
from .idempotent import Idempotency, OnePublish, Plan
from .openapi import openapi_document

logger = logging.getLogger("siogate.api")

OK_BODY = b'{"ok":true}'

Handler = Callable[[Request], Awaitable[Response]]

# POSTs that take an Idempotency-Key (see api/idempotent.py).
IDEMPOTENT_ROUTES = frozenset({"/v1/emit", "/v1/batch", "/v1/join", "/v1/leave", "/v1/disconnect"})
# Routes for people as well as backends: the API key as a Bearer token, or HTTP Basic
# credentials (see siogate.auth.basic); a refusal asks the browser for them.
VIEW_ROUTES = frozenset({dashboard.PAGE_PATH, "/v1/stats"})
# The most history /v1/stats?last= may ask for, in seconds.
MAX_STATS_SECONDS = 86_400


def json_response(
    status: int, value: Any, headers: list[tuple[str, str]] | None = None
) -> Response:
    body = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(status, body, headers=headers or [])


def _offset_answer(offset: str | None) -> Response:
    """``{"ok":true,"offset":...}``, the answer to every emit with offsets on. The offsets
    are this gateway's own (``<run>-<n>``, or a Redis stream id ``<ms>-<seq>``), so the
    common case is written without the JSON encoder (about 2 us of the emit's ~110)."""
    if offset is not None and offset.replace("-", "").isalnum() and offset.isascii():
        return Response(200, b'{"ok":true,"offset":"' + offset.encode() + b'"}')
    return json_response(200, {"ok": True, "offset": offset})


class Api:
    """Serves every path outside ``/socket.io/``."""

    def __init__(
        self,
        node: Node,
        *,
        api_key: str,
        namespaces: frozenset[str] | None,
        cluster: bool = False,
        idempotency: Idempotency | None = None,
        people: BasicAuth | None = None,
    ) -> None:
        self.node = node
        # people checks HTTP Basic credentials on VIEW_ROUTES (none: the API key only).
        self.people = people
        self.idempotency = idempotency
        if idempotency is not None:
            idempotency.bind(node)
        self._cluster = cluster
        self._api_key = api_key
        self._namespaces = namespaces
        # path -> {method: (handler, needs the API key)}
        self._routes: dict[str, dict[str, tuple[Handler, bool]]] = {
            "/healthz": {"GET": (self._health, False)},
            "/metrics": {"GET": (self._metrics, True)},
            "/v1/openapi.json": {"GET": (self._openapi, False)},
            "/v1/emit": {"POST": (self._emit, True)},
            "/v1/batch": {"POST": (self._batch, True)},
            "/v1/join": {"POST": (self._join, True)},
            "/v1/leave": {"POST": (self._leave, True)},
            "/v1/disconnect": {"POST": (self._disconnect, True)},
            "/v1/rooms": {"GET": (self._rooms, True)},
            "/v1/presence": {"GET": (self._presence, True)},
            "/v1/stats": {"GET": (self._stats, True)},
            dashboard.PAGE_PATH: {"GET": (self._dashboard, True)},
            **{path: {"GET": (self._dashboard_asset, False)} for path in dashboard.ASSETS},
        }
        # How idempotent routes read a request as one publish (see api/idempotent.py).
        self._plans: dict[str, Plan] = {
            "/v1/emit": self._emit_plan,
            "/v1/batch": self._batch_plan,
            "/v1/join": self._join_plan,
            "/v1/leave": self._leave_plan,
            "/v1/disconnect": self._disconnect_plan,
        }
        self._openapi_body = json.dumps(
            openapi_document(max_ack_recipients=node.options.max_ack_recipients)
        ).encode()

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        route, response = await self._dispatch(request)
        self.node.metrics.api_request(route, response.status, time.perf_counter() - started)
        return response

    def _match(self, path: str) -> tuple[str, dict[str, tuple[Handler, bool]]] | None:
        methods = self._routes.get(path)
        if methods is not None:
            return path, methods
        # /v1/rooms/<room>/sockets and /presence, with <room> percent-encoded.
        prefix = "/v1/rooms/"
        if path.startswith(prefix):
            for suffix, handler in (
                ("/sockets", self._room_sockets),
                ("/presence", self._room_presence),
                ("/history", self._room_history),
            ):
                if path.endswith(suffix) and len(path) > len(prefix) + len(suffix):
                    return f"/v1/rooms/{{room}}{suffix}", {"GET": (handler, True)}
        return None

    async def _dispatch(self, request: Request) -> tuple[str, Response]:
        matched = self._match(request.path)
        if matched is None:
            error = ApiError(404, "not_found", f"no route for {request.path}")
            return "unmatched", json_response(404, error.to_json())
        route, methods = matched
        entry = methods.get(request.method)
        if entry is None and request.method == "HEAD":
            # The GET handler's headers; the HTTP layer leaves the body out.
            entry = methods.get("GET")
        if entry is None:
            allow = ", ".join(sorted(methods))
            error = ApiError(405, "method_not_allowed", f"{request.method} is not allowed here")
            return route, json_response(405, error.to_json(), [("allow", allow)])
        handler, needs_key = entry
        if route in VIEW_ROUTES:
            if not await self._may_view(request):
                error = ApiError(401, "unauthorized", "missing or invalid credentials")
                return route, dashboard.unauthorized(json.dumps(error.to_json()).encode())
        elif needs_key and not check_bearer(request.headers.get("authorization"), self._api_key):
            error = ApiError(401, "unauthorized", "missing or invalid API key")
            return route, json_response(401, error.to_json())
        if route in IDEMPOTENT_ROUTES and self.idempotency is not None:
            idempotency = self.idempotency
            plan = self._plans.get(route)

            async def run(request: Request) -> Response:
                return await idempotency.run(request, lambda: self._call(handler, request), plan)

            # Through _call as well: a one-step publish's errors (503) are answered here.
            return route, await self._call(run, request)
        return route, await self._call(handler, request)

    async def _call(self, handler: Handler, request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as exc:
            return json_response(exc.status, exc.to_json())
        except BrokerUnavailable as exc:
            error = ApiError(503, "broker_unavailable", str(exc))
            return json_response(503, error.to_json(), [("retry-after", "1")])
        except RecursionError:
            # Parsed, but too deep to encode again at the depth the emit path runs at.
            error = ApiError(400, "invalid_json", "request body is nested too deeply")
            return json_response(400, error.to_json())

    async def _may_view(self, request: Request) -> bool:
        header = request.headers.get("authorization")
        if check_bearer(header, self._api_key):
            return True
        return self.people is not None and await self.people.check(header)

    # Handlers

    async def _health(self, request: Request) -> Response:
        # 200 either way: a node cut off from Redis still serves its own sockets, and a
        # balancer that pulled every such node would turn a Redis outage into a full one.
        broker = self.node.broker
        stats = broker.stats
        body: dict[str, Any] = {"status": "ok" if stats.connected else "degraded"}
        if self._cluster:
            body["node"] = broker.node_id
            body["broker"] = {
                "connected": stats.connected,
                "since": stats.since,
                # Generic on purpose: the broker's own error names the Redis address,
                # and this route needs no key. The detail is in the log.
                "error": None if stats.connected else "broker unreachable",
                "peers": stats.peers,
            }
        return json_response(200, body)

    async def _metrics(self, request: Request) -> Response:
        text = self.node.metrics.render().encode()
        return Response(200, text, content_type="text/plain; version=0.0.4; charset=utf-8")

    async def _openapi(self, request: Request) -> Response:
        return Response(200, self._openapi_body)

    # A POST that only publishes is read into a OnePublish (what to publish, what to
    # answer), then published; the idempotent path publishes it in its own way.

    async def _published(self, one: OnePublish | None) -> Response:
        assert one is not None
        await self.node.publish(one.commands)
        return one.response

    def _emit_plan(self, request: Request) -> OnePublish | None:
        body = schemas.parse_body(request.body)
        if schemas.ack_timeout(body) is not None or self.node.offsets is not None:
            return None  # answered with the acks once they are in, or with its offset
        return OnePublish([schemas.emit(body, self._namespaces)], Response(200, OK_BODY))

    def _batch_plan(self, request: Request) -> OnePublish:
        commands = schemas.batch(schemas.parse_body(request.body), self._namespaces)
        return OnePublish(commands, json_response(200, {"ok": True, "count": len(commands)}))

    def _join_plan(self, request: Request) -> OnePublish:
        body = schemas.parse_body(request.body)
        command = schemas.sockets_command("join", body, self._namespaces)
        return OnePublish([command], Response(200, OK_BODY))

    def _leave_plan(self, request: Request) -> OnePublish:
        body = schemas.parse_body(request.body)
        command = schemas.sockets_command("leave", body, self._namespaces)
        return OnePublish([command], Response(200, OK_BODY))

    def _disconnect_plan(self, request: Request) -> OnePublish:
        body = schemas.parse_body(request.body)
        command = schemas.sockets_command("disconnect", body, self._namespaces)
        return OnePublish([command], Response(200, OK_BODY))

    async def _emit(self, request: Request) -> Response:
        if self.node.offsets is None:  # else answered with its offset: no plan
            one = self._emit_plan(request)
            if one is not None:
                return await self._published(one)
        body = schemas.parse_body(request.body)
        ack = schemas.ack_timeout(body)
        command = schemas.emit(body, self._namespaces)
        if ack is None:
            await self.node.publish([command])
            # Set by the publish that just returned: the emit's own offset (the in-memory
            # broker applied it; across nodes, the Redis log assigned it).
            return _offset_answer(self.node.last_offset)
        result, listing = await self.node.emit_with_ack(command, ack)
        return json_response(
            200,
            {
                "recipients": result.recipients,
                "acks": [{"socket": sid, "args": args} for sid, args in result.acks],
                "timeouts": result.timeouts,
                **_listing_json(listing),
            },
        )

    async def _batch(self, request: Request) -> Response:
        return await self._published(self._batch_plan(request))

    async def _join(self, request: Request) -> Response:
        return await self._published(self._join_plan(request))

    async def _leave(self, request: Request) -> Response:
        return await self._published(self._leave_plan(request))

    async def _disconnect(self, request: Request) -> Response:
        return await self._published(self._disconnect_plan(request))

    def _query_namespace(self, request: Request, extra: tuple[str, ...] = ()) -> Namespace:
        unknown = sorted(set(request.query) - {"namespace", *extra})
        if unknown:
            raise schemas.bad(f"unknown query parameter(s): {', '.join(unknown)}")
        return schemas.namespace(request.arg("namespace"), self._namespaces)

    def _page(self, request: Request, of: str, scope: dict[str, str]) -> paging.PageRequest:
        for key in _PAGING:
            if len(request.query.get(key, ())) > 1:
                raise schemas.bad(f"{key} may be given once")
        return paging.page_request(request.arg("limit"), request.arg("cursor"), of, scope)

    def _room_in_path(self, request: Request, suffix: str) -> Room:
        raw = request.path[len("/v1/rooms/") : -len(suffix)]
        try:
            decoded = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            raise schemas.bad("room must be percent-encoded UTF-8") from None
        return Room(schemas.name(decoded, "room"))

    async def _room_history(self, request: Request) -> Response:
        if self.node.history is None:
            raise ApiError(400, "history_off", "room history is off (--history-size)")
        ns = self._query_namespace(request, ("limit", "since"))
        room = self._room_in_path(request, "/history")
        for key in ("limit", "since"):
            if len(request.query.get(key, ())) > 1:
                raise schemas.bad(f"{key} may be given once")
        raw = request.arg("limit")
        if raw is None:
            limit = paging.DEFAULT_LIMIT
        elif raw.isdigit() and len(raw) <= 4 and 1 <= int(raw) <= paging.MAX_LIMIT:
            limit = int(raw)
        else:
            raise schemas.bad(f"limit must be an integer from 1 to {paging.MAX_LIMIT}")
        found = await self.node.room_history(ns, room, request.arg("since"), limit)
        if found is None:
            raise schemas.bad("since is not an offset of this gateway run", "unknown_offset")
        messages, complete = found
        items = [
            {"offset": offset, "event": m.event, "data": m.args, "ts": m.ts}
            for offset, m in messages
        ]
        return json_response(200, {"messages": items, "complete": complete})

    async def _rooms(self, request: Request) -> Response:
        ns = self._query_namespace(request, _PAGING)
        scope: dict[str, str] = {"ns": ns}
        asked = self._page(request, "rooms", scope)
        page, listing = await self.node.rooms(ns, _opt(Room, asked.after), asked.limit)
        items = [{"name": name, "sockets": n} for name, n in page.items]
        more = _next(asked, page, "rooms", scope, lambda last: last[0])
        return json_response(200, {"rooms": items, **more, **_listing_json(listing)})

    async def _room_sockets(self, request: Request) -> Response:
        ns = self._query_namespace(request, _PAGING)
        room = self._room_in_path(request, "/sockets")
        scope = {"ns": ns, "room": room}
        asked = self._page(request, "sockets", scope)
        page, listing = await self.node.sockets_in(ns, room, _opt(Sid, asked.after), asked.limit)
        # "connected": false only for a socket in its recovery window (siogate.recovery).
        items = [
            {"id": sid, "user": user, "node": node} | ({} if connected else {"connected": False})
            for sid, user, node, connected in page.items
        ]
        more = _next(asked, page, "sockets", scope, lambda last: last[0])
        return json_response(200, {"sockets": items, **more, **_listing_json(listing)})

    async def _presence(self, request: Request) -> Response:
        ns = self._query_namespace(request, ("user",))
        asked = request.query.get("user", [])
        if not asked:
            raise schemas.bad("give at least one user: ?user=<sub>&user=<sub>")
        if len(asked) > paging.MAX_PRESENCE_USERS:
            raise schemas.bad(f"at most {paging.MAX_PRESENCE_USERS} users per request")
        # Repeated users are answered once.
        users = tuple(dict.fromkeys(UserId(schemas.name(u, "user")) for u in asked))
        counts, listing = await self.node.presence(ns, users)
        body = {user: {"online": n > 0, "sockets": n} for user, n in counts.items()}
        return json_response(200, {"users": body, **_listing_json(listing)})

    async def _room_presence(self, request: Request) -> Response:
        ns = self._query_namespace(request, _PAGING)
        room = self._room_in_path(request, "/presence")
        scope = {"ns": ns, "room": room}
        asked = self._page(request, "presence", scope)
        page, anonymous, listing = await self.node.room_presence(
            ns, room, _opt(UserId, asked.after), asked.limit
        )
        items = [{"user": user, "sockets": n} for user, n in page.items]
        more = _next(asked, page, "users", scope, lambda last: last[0], "presence")
        body = {"users": items, "anonymous": anonymous, **more, **_listing_json(listing)}
        return json_response(200, body)

    async def _stats(self, request: Request) -> Response:
        unknown = sorted(set(request.query) - {"last"})
        if unknown:
            raise schemas.bad(f"unknown query parameter(s): {', '.join(unknown)}")
        last = request.arg("last")
        seconds = None
        if last is not None:
            try:
                seconds = float(last)
            except ValueError:
                seconds = math.nan
            if not 0 <= seconds <= MAX_STATS_SECONDS:  # False for NaN
                raise schemas.bad(f"last must be a number of seconds from 0 to {MAX_STATS_SECONDS}")
        nodes, listing = await self.node.cluster_stats(seconds)
        body = {
            "time": round(time.time(), 3),
            "stats": [n.to_json() for n in nodes],
            **_listing_json(listing),
        }
        return json_response(200, body, [("cache-control", "no-store")])

    async def _dashboard(self, request: Request) -> Response:
        return dashboard.page()

    async def _dashboard_asset(self, request: Request) -> Response:
        response = dashboard.asset(request.path)
        assert response is not None  # routed by path
        return response


_PAGING = ("limit", "cursor")


def _opt(kind: Callable[[str], Any], value: str | None) -> Any:
    return None if value is None else kind(value)


def _next(
    asked: paging.PageRequest,
    page: Page[Any],
    what: str,
    scope: dict[str, str],
    key: Callable[[Any], str],
    of: str | None = None,
) -> dict[str, str | None]:
    """``next_cursor`` for a page; the unpaged form refuses an answer that does not fit."""
    if not page.more:
        return {"next_cursor": None}
    if not asked.paged:
        raise paging.too_many_results(what)
    return {"next_cursor": paging.encode_cursor(of or what, scope, key(page.items[-1]))}


def _listing_json(listing: Listing) -> dict[str, Any]:
    return {
        "partial": listing.partial,
        "nodes": {"answered": listing.nodes, "missing": list(listing.missing)},
    }
