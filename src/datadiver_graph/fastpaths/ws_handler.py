"""The graphql-transport-ws handler: strawberry's, keeping less per idle connection.

A server holds thousands of these connections, each mostly waiting, so per connection:

- Subscriptions to live views (every Subscription field; see api/schema/live_source.py) run
  as a LiveOperation (fastpaths/live_operation.py), with no task while idle, instead of a
  task iterating strawberry's stream. Anything else a client sends (queries and
  mutations over the socket, documents that do not parse or validate) takes strawberry's
  own path, unchanged.
- The connection_init deadline is a timer, not a task that outlives the handshake.
- Messages are read in `handle` itself rather than through an async generator and
  Starlette's receive_text(): fewer coroutine frames suspended while it waits.

The protocol is strawberry's: same messages, close codes and limits, and the same
persisted-document rules as the stock handlers (api/ws.py's `resolve_persisted`).
View hook (api/http.py): `graphql_transport_ws_handler_class = LiveTransportWSHandler`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Coroutine, Mapping
from json import JSONDecodeError
from typing import Any, cast

from graphql import GraphQLError, OperationType, get_operation_ast
from starlette.websockets import WebSocketDisconnect, WebSocketState
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
    SubscribeMessage,
)

from datadiver_graph.api.schema.context import Context
from datadiver_graph.api.ws import (
    MESSAGE_TOO_BIG_CLOSE,
    admit_operation,
    too_large,
    transport_message_problem,
)
from datadiver_graph.fastpaths.direct import PreparedOperation
from datadiver_graph.fastpaths.internals import Internal
from datadiver_graph.fastpaths.live_operation import LiveOperation


class LiveTransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    _init_timer: asyncio.TimerHandle | None = None
    _closing: asyncio.Task[None] | None = None
    _stopping: set[asyncio.Task[None]] | None = None
    run_context: contextvars.Context

    # -- what a LiveOperation needs (live_operation.LiveConnection) -----------------------

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work, context=self.run_context)
        task.add_done_callback(_retrieve)
        return task

    async def send(self, message: Mapping[str, object]) -> None:
        await self.send_message(cast(Any, message))

    def forget(self, operation_id: str) -> None:
        self.operations.pop(operation_id, None)

    # -- the connection -------------------------------------------------------------------

    async def handle(self) -> None:
        self.on_request_accepted()
        websocket = self.websocket.ws  # type: ignore[attr-defined]
        limit = self.view.settings.max_body_bytes  # type: ignore[attr-defined]
        try:
            while websocket.application_state != WebSocketState.DISCONNECTED:
                # Starlette's receive_text(), without a coroutine frame of its own kept
                # suspended for as long as the connection is idle.
                received = await websocket.receive()
                if received["type"] == "websocket.disconnect":
                    return
                text = received.get("text")
                del received
                if text is None:  # a binary frame: strawberry's NonTextMessageReceived
                    await self.handle_invalid_message("WebSocket message type must be text")
                    return
                if too_large(text, limit):  # as api/ws.py's adapter
                    reason = f"message exceeds {limit} bytes"
                    await self.websocket.close(code=MESSAGE_TOO_BIG_CLOSE, reason=reason)
                    return
                try:
                    message = self.view.decode_json(text)
                except JSONDecodeError:
                    await self.handle_invalid_message("WebSocket message must be valid JSON")
                    return
                # Not kept alive while the connection waits for its next message.
                del text
                problem = transport_message_problem(message)
                if problem is not None:
                    await self.handle_invalid_message(problem)
                    return
                await self.handle_message(cast(Any, message))
                del message
        except (WebSocketDisconnect, WebSocketDisconnected):
            pass
        finally:
            await self.shutdown()

    def on_request_accepted(self) -> None:
        # Work started for this connection later (from the fan-out hub's task) runs in
        # this context: its log lines carry the connection's request id.
        self.run_context = contextvars.copy_context()
        delay = self.connection_init_wait_timeout.total_seconds()
        self._init_timer = asyncio.get_running_loop().call_later(delay, self._init_timed_out)

    def _init_timed_out(self) -> None:
        self._init_timer = None
        if self.connection_init_received:
            return
        self.connection_timed_out = True
        reason = "Connection initialisation timeout"
        self._closing = self.spawn(self.websocket.close(code=4408, reason=reason))

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        if self._init_timer is not None and not self.connection_timed_out:
            self._init_timer.cancel()
            self._init_timer = None
        await super().handle_connection_init(message)

    async def shutdown(self) -> None:
        if self._init_timer is not None:
            self._init_timer.cancel()
            self._init_timer = None
        if self._closing is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._closing
        waits: list[asyncio.Future[Any]] = []
        for operation_id in list(self.operations):
            operation: Any = self.operations.pop(operation_id)
            if isinstance(operation, LiveOperation):
                await operation.stop()
            elif operation.task is not None:
                operation.task.cancel()
                waits.append(operation.task)
        waits.extend(self._stopping or ())
        # Let cancelled tasks finish their finally blocks before shutdown returns.
        for task in waits:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await task

    # -- operations -----------------------------------------------------------------------

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        # The checks strawberry makes before it looks at the operation, in its order.
        if not self.connection_acknowledged:
            await self.websocket.close(code=4401, reason="Unauthorized")
            return
        operation_id = message["id"]
        if operation_id in self.operations:
            reason = f"Subscriber for {operation_id} already exists"
            await self.websocket.close(code=4409, reason=reason)
            return
        limit = self.max_subscriptions_per_connection
        if limit is not None and len(self.operations) >= limit:
            error = GraphQLError("Subscription limit reached")
            await self.send_message(
                {"id": operation_id, "type": "error", "payload": [error.formatted]}
            )
            return
        refusal = await admit_operation(self, message["payload"])
        if refusal is not None:
            await self.send({"id": operation_id, "type": "error", "payload": [refusal]})
            return
        prepared = self._live_subscription(message)
        if prepared is None:
            await super().handle_subscribe(message)  # its checks pass again
            return
        variables = message["payload"].get("variables")
        operation = LiveOperation(self, operation_id, prepared, variables)
        self.operations[operation_id] = cast(Any, operation)
        operation.begin()

    def _live_subscription(self, message: SubscribeMessage) -> PreparedOperation | None:
        """The parsed, valid subscription this message asks for; None for anything else."""
        payload = message["payload"]
        query = payload["query"]
        variables = payload.get("variables")
        name = payload.get("operationName")
        if not isinstance(query, str) or not isinstance(name, str | None):
            return None
        if variables is not None and not isinstance(variables, dict):
            return None
        try:
            document, errors = self.schema.prepare(query)  # type: ignore[attr-defined]
        except Exception:
            return None  # a syntax error, or too many tokens: strawberry closes with it
        if errors:
            return None
        operation = get_operation_ast(document, name)
        if operation is None or operation.operation != OperationType.SUBSCRIPTION:
            return None
        return PreparedOperation(document, operation, name)

    async def cleanup_operation(self, operation_id: str) -> None:
        operation: Any = self.operations.get(operation_id)
        if not isinstance(operation, LiveOperation):
            await super().cleanup_operation(operation_id)
            return
        del self.operations[operation_id]
        # Stopping unsubscribes from the fan-out backend (a round trip to Redis): in a
        # task, as strawberry cancels its operation tasks, so reading goes on meanwhile.
        if self._stopping is None:
            self._stopping = set()
        task = self.spawn(operation.stop())
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)


def _retrieve(task: asyncio.Task[None]) -> None:
    # Failures were reported where they happened; never "exception was never retrieved".
    if not task.cancelled():
        task.exception()


_HANDLER = "strawberry.subscriptions.protocols.graphql_transport_ws.handlers"
INTERNALS = (
    *(
        Internal(
            "strawberry-graphql", f"{_HANDLER}:BaseGraphQLTransportWSHandler", name, "ws_handler.py"
        )
        for name in (
            "handle",
            "on_request_accepted",
            "shutdown",
            "send_message",
            "handle_message",
            "handle_invalid_message",
        )
    ),
    *(
        Internal(
            "strawberry-graphql",
            f"{_HANDLER}:BaseGraphQLTransportWSHandler",
            name,
            "ws_handler.py",
            parameters=(parameter,),
        )
        for name, parameter in (
            ("handle_connection_init", "message"),
            ("handle_subscribe", "message"),
            ("cleanup_operation", "operation_id"),
        )
    ),
    *(
        Internal(
            "strawberry-graphql",
            f"{_HANDLER}:BaseGraphQLTransportWSHandler",
            name,
            "ws_handler.py",
            instance=True,
        )
        for name in (
            "operations",
            "connection_acknowledged",
            "connection_init_received",
            "connection_timed_out",
            "connection_init_wait_timeout",
            "max_subscriptions_per_connection",
            "view",
            "schema",
            "websocket",
            "context",
        )
    ),
    Internal("strawberry-graphql", f"{_HANDLER}:Operation", "task", "ws_handler.py", instance=True),
    # The Starlette WebSocket under strawberry's adapter (`self.websocket.ws`).
    Internal(
        "strawberry-graphql",
        "strawberry.asgi:ASGIWebSocketAdapter",
        "ws",
        "ws_handler.py",
        instance=True,
    ),
)
