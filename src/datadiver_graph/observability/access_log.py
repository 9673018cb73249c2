"""ASGI middleware: a request id, one log line and the metrics for each request or WebSocket.

A plain ASGI middleware (not Starlette's BaseHTTPMiddleware) so streaming responses and
WebSockets pass through untouched. It replaces uvicorn's access log.

- HTTP: the id from `X-Request-ID` when valid (1-128 printable ASCII), else a new one; set in
  a context variable for every log line of the request, echoed in the response header; after
  the response, one line `method path status duration_ms` and the request metrics.
- WebSocket: the same id, echoed in the handshake response; the open-connections gauge; and
  one line when the connection ends, with its duration and close code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from datadiver_graph.observability.logs import (
    REQUEST_ID_HEADER,
    new_request_id,
    request_id_var,
    valid_request_id,
)
from datadiver_graph.observability.metrics import Metrics

log = logging.getLogger("datadiver_graph.access")

UNMATCHED = "unmatched"


def _route_label(scope: Scope) -> str:
    """The route template that answered (bounded: the app's own routes), never the raw path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not a coroutine itself: a WebSocket's call lasts as long as the connection, and
        # each suspended frame on its way costs every idle subscriber memory.
        if scope["type"] == "http":
            return self._http(scope, receive, send)
        if scope["type"] == "websocket":
            return self._websocket(scope, receive, send)
        return self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = valid_request_id(Headers(scope=scope).get(REQUEST_ID_HEADER))
        request_id = request_id or new_request_id()
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            method = scope.get("method", "")
            self.metrics.observe_http(method, _route_label(scope), status, elapsed)
            log.log(
                logging.ERROR if status >= 500 else logging.INFO,
                "%s %s %d",
                method,
                scope.get("path", ""),
                status,
                extra={
                    "event": "http_request",
                    "method": method,
                    "path": scope.get("path", ""),
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                },
            )
            request_id_var.reset(token)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = valid_request_id(Headers(scope=scope).get(REQUEST_ID_HEADER))
        request_id = request_id or new_request_id()
        token = request_id_var.set(request_id)
        connection = _WebSocketLog(self.metrics, request_id, receive, send)
        try:
            await self.app(scope, connection.receive, connection.send)
        finally:
            if connection.accepted:
                self.metrics.websocket_connections.dec()
            log.info(
                "websocket %s closed (%s)",
                scope.get("path", ""),
                connection.close_code,
                extra={
                    "event": "websocket",
                    "path": scope.get("path", ""),
                    "accepted": connection.accepted,
                    "close_code": connection.close_code,
                    "closed_by": connection.closed_by,
                    "duration_ms": round((time.perf_counter() - connection.started) * 1000, 2),
                },
            )
            request_id_var.reset(token)


class _WebSocketLog:
    """What the log line of one WebSocket needs, seen on its way in and out. A slotted object
    rather than closures: it lives as long as the connection, thousands at a time."""

    __slots__ = (
        "_metrics",
        "_receive",
        "_send",
        "accepted",
        "close_code",
        "closed_by",
        "request_id",
        "started",
    )

    def __init__(self, metrics: Metrics, request_id: str, receive: Receive, send: Send) -> None:
        self._metrics = metrics
        self._receive = receive
        self._send = send
        self.request_id = request_id
        self.started = time.perf_counter()
        self.accepted = False
        self.close_code: int | None = None
        self.closed_by = "server"

    async def send(self, message: Message) -> None:
        if message["type"] == "websocket.accept":
            headers = list(message.get("headers") or [])
            headers.append((REQUEST_ID_HEADER.encode(), self.request_id.encode()))
            message = {**message, "headers": headers}
        elif message["type"] == "websocket.close" and self.close_code is None:
            self.close_code = message.get("code", 1000)
        await self._send(message)
        if message["type"] == "websocket.accept" and not self.accepted:
            self.accepted = True
            self._metrics.websocket_connections.inc()

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "websocket.disconnect" and self.close_code is None:
            self.close_code = message.get("code", 1005)
            self.closed_by = "client"
        return message
