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

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from datadiver_graph.logs import REQUEST_ID_HEADER, new_request_id, request_id_var, valid_request_id
from datadiver_graph.metrics import Metrics

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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

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
        started = time.perf_counter()
        accepted = False
        close_code: int | None = None
        closed_by = "server"

        async def send_with_id(message: Message) -> None:
            nonlocal accepted, close_code
            if message["type"] == "websocket.accept":
                headers = list(message.get("headers") or [])
                headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
                message = {**message, "headers": headers}
            elif message["type"] == "websocket.close" and close_code is None:
                close_code = message.get("code", 1000)
            await send(message)
            if message["type"] == "websocket.accept" and not accepted:
                accepted = True
                self.metrics.websocket_connections.inc()

        async def receive_close(message_source: Receive = receive) -> Message:
            nonlocal close_code, closed_by
            message = await message_source()
            if message["type"] == "websocket.disconnect" and close_code is None:
                close_code = message.get("code", 1005)
                closed_by = "client"
            return message

        try:
            await self.app(scope, receive_close, send_with_id)
        finally:
            if accepted:
                self.metrics.websocket_connections.dec()
            log.info(
                "websocket %s closed (%s)",
                scope.get("path", ""),
                close_code,
                extra={
                    "event": "websocket",
                    "path": scope.get("path", ""),
                    "accepted": accepted,
                    "close_code": close_code,
                    "closed_by": closed_by,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )
            request_id_var.reset(token)
