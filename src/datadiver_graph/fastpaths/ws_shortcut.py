"""WebSocket connections to /graphql go from our middleware straight to the GraphQL view.

A WebSocket's ASGI call lasts as long as the connection, and every layer it passes keeps a
suspended frame, some of them closures too, for all that time. Starlette's exception
middleware, router and route held a noticeable share of an idle subscription's memory
budget (bench/RESULTS.md). None of them does anything for this endpoint: the view closes
with the protocol's own codes and never raises Starlette's WebSocketException. So this
sits innermost among our middleware (the access log still sees every connection) and
hands a matching connection to the route's app with the scope the router would have
given it.
"""

from __future__ import annotations

from collections.abc import Awaitable

from starlette.routing import Match, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send


class WebSocketShortcut:
    __slots__ = ("app", "route")

    def __init__(self, app: ASGIApp, route: WebSocketRoute) -> None:
        self.app = app
        self.route = route

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not a coroutine itself: no frame of this layer is kept per connection either.
        if scope["type"] == "websocket":
            match, child_scope = self.route.matches(scope)
            if match is Match.FULL:
                scope.update(child_scope)
                scope["route"] = self.route  # what the router sets; the access log reads it
                return self.route.app(scope, receive, send)
        return self.app(scope, receive, send)
