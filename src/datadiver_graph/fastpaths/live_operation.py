"""One graphql-transport-ws subscription to a live view, with no task while it is idle.

Strawberry runs each subscription as a task iterating a chain of async generators
(extension hooks, graphql-core's response stream, the resolver's stream), all suspended
for as long as the subscription lives: two tasks and their frames per idle subscription
(bench/RESULTS.md). Here a subscription is this one object. The fan-out hub tells it
when an event is queued for it; only then does a short-lived task fold the event into
the view (domain.live), execute the operation's selection set on the new value with
graphql-core, and send the result.

Behaviour is strawberry's, message for message: the same snapshot-then-changes stream,
the same `next`, `error` and `complete` messages, errors coded as ErrorCodes codes them,
and the same start and end log lines and metrics as the OperationObserver extension.
The handler (fastpaths/ws_handler.py) sends here only parsed, valid subscription
documents; strawberry's own path answers everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast

from graphql import ExecutionResult, GraphQLError
from graphql.execution import create_source_event_stream
from strawberry.execution import optimized_is_awaitable

from datadiver_graph.api.schema.errors import coded
from datadiver_graph.api.schema.live_source import LiveSource, shed_slow_connection
from datadiver_graph.api.schema.observe import (
    MAX_LOGGED_NAME,
    caller_fields,
    error_codes,
    metrics_of,
    record_operation,
    record_subscription_start,
)
from datadiver_graph.domain.live import ViewEnded
from datadiver_graph.fanout import SlowConsumer, Subscription
from datadiver_graph.fastpaths.direct import PreparedOperation
from datadiver_graph.fastpaths.internals import Internal
from datadiver_graph.fastpaths.strawberry_schema import graphql_schema

INTERNALS = (
    Internal(
        "graphql-core",
        "graphql.execution.executor:Executor",
        "build",
        "live_operation.py",
        parameters=(
            "schema",
            "document",
            "root_value",
            "context_value",
            "raw_variable_values",
            "operation_name",
        ),
    ),
    Internal(
        "graphql-core",
        "graphql.execution.executor:Executor",
        "execute_operation",
        "live_operation.py",
        parameters=("serially",),
    ),
    Internal(
        "graphql-core",
        "graphql.execution.executor:Executor",
        "async_helpers",
        "live_operation.py",
        instance=True,
    ),
    Internal(
        "graphql-core", "graphql.execution", "create_source_event_stream", "live_operation.py"
    ),
)

if TYPE_CHECKING:
    from datadiver_graph.api.schema.context import Context
    from datadiver_graph.domain.live import LiveView

log = logging.getLogger(__name__)


class LiveOperation:
    """A subscription's state between events: its view, its feed from the hub, its id."""

    __slots__ = (
        "_codes",
        "_counted",
        "_done",
        "_feed",
        "_show",
        "_started",
        "_view",
        "connection",
        "id",
        "prepared",
        "task",
        "variables",
    )

    def __init__(
        self,
        connection: LiveConnection,
        operation_id: str,
        prepared: PreparedOperation,
        variables: dict[str, Any] | None,
    ) -> None:
        self.connection = connection
        self.id = operation_id
        self.prepared = prepared
        self.variables = variables
        # The task working for this subscription right now (start, or a delivery), if any.
        self.task: asyncio.Task[None] | None = None
        self._view: LiveView[Any] | None = None
        self._show: Callable[[Any], Any] | None = None
        self._feed: Subscription | None = None
        self._started = time.perf_counter()
        self._counted = False  # started as a subscription: in the gauge, logged as one
        self._done = False
        self._codes: list[str] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def begin(self) -> None:
        self.task = self.connection.spawn(self._guarded(self._start))

    async def stop(self) -> None:
        """The client unsubscribed or went away."""
        if self._done:
            return
        self._done = True
        task = self.task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            # Cancelled, or failed and already reported: either way it is over.
            with contextlib.suppress(BaseException):
                await task
        await self._close_feed()
        self._finish("cancelled")

    async def _guarded(self, step: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run one step in this operation's task: a failure ends the operation with an error
        message, and the task slot is free again once the step ends. The step's coroutine
        is made here: a task cancelled before it runs (the client left, or reused the id at
        once) would leave one never awaited, and Python warns of it."""
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._fail(exc)
        finally:
            if self.task is asyncio.current_task():
                self.task = None

    async def _start(self) -> None:
        source = await self._source()
        if self._done:
            return
        if isinstance(source, ExecutionResult):
            await self._send_final("error", self._formatted(source.errors))
            return
        if not isinstance(source, LiveSource):
            await self._pull(source)
            return
        await self._follow(source)

    async def _source(self) -> Any:
        """Run the subscription field's resolver (permissions first), as graphql-core does."""
        executor = self._executor(None)
        if isinstance(executor, list):  # the variables did not coerce
            source: Any = ExecutionResult(None, errors=executor)
        else:
            source = create_source_event_stream(executor)
            if optimized_is_awaitable(source):
                source = await source
        # Where the observer's on_execute hook counts it: once the source stream (or the
        # errors instead of one) exists.
        self._count_start()
        return source

    async def _follow(self, source: LiveSource[Any]) -> None:
        view = self._view = source.view
        self._show = source.show
        feed = self._feed = view.store.events.subscribe(
            *view.channels, on_overflow=self._shed_connection
        )
        await feed.open()
        if self._done:  # stopped while subscribing: stop() ran before the feed existed
            await self._close_feed()
            return
        await self._send_value(await view.start())
        feed.notify = self._wake
        await self._deliver_queued()

    def _wake(self) -> None:
        """The hub queued an event for this subscription (called in the hub's task)."""
        if self.task is None and not self._done:
            self.task = self.connection.spawn(self._guarded(self._deliver_queued))

    async def _deliver_queued(self) -> None:
        feed, view = self._feed, self._view
        assert feed is not None and view is not None
        while not self._done:
            try:
                item = feed.pop()
                if item is None:
                    return
                changed = await view.advance(item)
            except (ViewEnded, SlowConsumer):
                await self._send_final("complete")
                return
            if changed:
                await self._send_value(view.state)

    async def _pull(self, source: Any) -> None:
        """Any other async iterable a resolver returns: iterate it here, as strawberry would."""
        iterator = aiter(source)
        try:
            async for value in iterator:
                if self._done:
                    return
                await self._send_result(await self._execute(value))
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()
        await self._send_final("complete")

    async def _fail(self, exc: Exception) -> None:
        """What strawberry does when the stream raises: one result with the error, then done.

        When the connection itself is gone, sending fails too; the handler's shutdown (or
        `_send_final`) ends the operation then, so that failure is only logged.
        """
        if self._done:
            return
        error = exc if isinstance(exc, GraphQLError) else GraphQLError(str(exc), original_error=exc)
        try:
            await self._send_result(ExecutionResult(None, [error]))
            await self._send_final("complete")
        except Exception as failure:
            log.debug("live subscription %s: could not report %r: %r", self.id, exc, failure)

    def _shed_connection(self) -> None:
        shed_slow_connection(self.connection.context.request)

    # -- execution and messages ---------------------------------------------------------------

    def _executor(self, root_value: Any) -> Any:
        schema = self.connection.schema
        return schema.execution_context_class.build(
            schema=graphql_schema(schema),
            document=self.prepared.document,
            root_value=root_value,
            context_value=self.connection.context,
            raw_variable_values=self.variables,
            operation_name=self.prepared.requested_name,
            is_awaitable=cast(Any, optimized_is_awaitable),
            operation_extensions=None,
        )

    async def _execute(self, value: Any) -> ExecutionResult:
        """The operation's selection set on one value, as graphql-core maps each event."""
        executor = self._executor(value)
        if isinstance(executor, list):
            return ExecutionResult(None, errors=executor)
        try:
            result = executor.execute_operation(False)
            if optimized_is_awaitable(result):
                result = await result
            return cast(ExecutionResult, result)
        finally:
            # graphql-core's Executor keeps bound methods of itself (its async_helpers), a
            # reference cycle only the garbage collector frees. graphql-core builds one per
            # subscription and copies it for each event; built here for each event, the
            # cycles made for long collections and a worse p99 delivery (bench/RESULTS.md).
            # Done with it: break the cycle.
            with contextlib.suppress(AttributeError):
                del executor.async_helpers

    async def _send_value(self, state: Any) -> None:
        assert self._show is not None
        await self._send_result(await self._execute(self._show(state)))

    async def _send_result(self, result: ExecutionResult) -> None:
        payload: dict[str, object] = {"data": result.data}
        if result.errors:
            payload["errors"] = self._formatted(result.errors)
        if not self._done:
            await self.connection.send({"id": self.id, "type": "next", "payload": payload})

    def _formatted(self, errors: list[GraphQLError] | None) -> list[Any]:
        schema = self.connection.schema
        found = [coded(e, parsed=True, production=schema.production) for e in errors or ()]
        if found:
            self._codes = (self._codes or []) + error_codes(found)
        return [error.formatted for error in found]

    async def _send_final(self, kind: str, payload: list[Any] | None = None) -> None:
        """`complete` or `error`: this operation's last message, and its end."""
        if self._done:
            return
        self._done = True
        self.connection.forget(self.id)  # the id is free again before the client hears
        message: dict[str, object] = {"id": self.id, "type": kind}
        if payload is not None:
            message["payload"] = payload
        try:
            await self.connection.send(message)
        finally:
            await self._close_feed()
            # Strawberry closes its stream right after an `error` message, which the
            # observer records as "cancelled"; a stream that ran out is "completed".
            self._finish("cancelled" if kind == "error" else "completed")

    async def _close_feed(self) -> None:
        feed, self._feed = self._feed, None
        if feed is not None:
            await feed.close()

    # -- what the OperationObserver extension records -----------------------------------------

    def _name(self) -> str | None:
        name = self.prepared.name
        return name[:MAX_LOGGED_NAME] if name else None

    def _count_start(self) -> None:
        context = self.connection.context
        self._counted = True
        record_subscription_start(metrics_of(context), self._name(), caller_fields(context))

    def _finish(self, reason: str) -> None:
        context = self.connection.context
        metrics = metrics_of(context)
        if self._counted and metrics is not None:
            metrics.active_subscriptions.dec()
        record_operation(
            metrics,
            name=self._name(),
            kind="subscription",
            caller=caller_fields(context),
            codes=self._codes or [],
            elapsed=time.perf_counter() - self._started,
            subscription_end=reason if self._counted else None,
        )


class LiveConnection(Protocol):
    """What a LiveOperation needs of its WebSocket connection (fastpaths/ws_handler.py)."""

    schema: Any  # datadiver_graph.api.schema.schema.Schema
    context: Context

    async def send(self, message: Mapping[str, object]) -> None: ...

    def forget(self, operation_id: str) -> None:
        """The operation is over: its id may be used again."""

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A task for this connection's work, in the connection's context."""
        ...
