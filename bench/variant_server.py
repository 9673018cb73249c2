"""`datadiver-graph serve` with chosen fast paths taken out, for measuring each one alone.

    python -m bench.variant_server <piece>[,<piece>...] serve --host H --port P

FAST_PATHS turns every fast path on or off together, and production has no finer setting
on purpose. To learn what one fast path buys on its own target, this wrapper starts the
real server with the fast paths on and puts the stock behaviour back for the named pieces
only, by patching in this process before the app is built (bench only; src/ is untouched):

- `direct`: fastpaths/view.py's direct path (direct.py); every HTTP request goes through
  strawberry's view, on graphql-core with execution.py's executor.
- `query_plans`: no document gets a plan (query_plans.py); the direct path runs
  graphql-core's executor for every operation.
- `execution`: execution.py's executor subclass is replaced by executor.py's (its parent),
  so graphql-core's own field collection and execution run.
- `executor`: executor.py's per-event memo reset is removed (graphql-core's own copies).
- `ws_transport`: uvicorn's own websockets protocol.
- `ws_shortcut`: /graphql WebSockets go through Starlette's router again.
- `ws_handler`: strawberry's graphql-transport-ws handler (its tasks per subscription)
  instead of ws_handler.py and live_operation.py.

`none` (or an empty list) changes nothing: the server as `serve` runs it.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any

PIECES = (
    "direct",
    "query_plans",
    "execution",
    "executor",
    "ws_transport",
    "ws_shortcut",
    "ws_handler",
)


def _without_direct() -> None:
    from datadiver_graph.api.http import GraphQLView
    from datadiver_graph.fastpaths.view import FastGraphQLView

    FastGraphQLView.answer = GraphQLView.answer  # type: ignore[method-assign]


def _without_query_plans() -> None:
    from datadiver_graph.fastpaths import direct

    direct.plan_for = lambda *args, **kwargs: None  # type: ignore[assignment]


def _without_execution() -> None:
    from datadiver_graph.api.schema import schema
    from datadiver_graph.fastpaths.executor import PerEventExecutionContext

    stock = schema._execution_context_class
    schema._execution_context_class = lambda fast: PerEventExecutionContext if fast else stock(fast)  # type: ignore[assignment]


def _without_executor() -> None:
    from datadiver_graph.fastpaths.executor import PerEventExecutionContext

    del PerEventExecutionContext.build_per_event_executor


def _without_protocol(name: str) -> None:
    from datadiver_graph import fastpaths

    chosen = fastpaths.uvicorn_protocols

    def protocols(settings: Any) -> dict[str, Any]:
        found = dict(chosen(settings))
        found.pop(name, None)  # uvicorn's default for this one
        return found

    fastpaths.uvicorn_protocols = protocols  # type: ignore[assignment]


class _Passthrough:
    """Stands in for WebSocketShortcut: hands every scope to the router, keeping no frame."""

    def __init__(self, app: Callable[..., Awaitable[None]], route: Any) -> None:
        self.app = app

    def __call__(self, scope: Any, receive: Any, send: Any) -> Awaitable[None]:
        return self.app(scope, receive, send)


def _without_ws_shortcut() -> None:
    from datadiver_graph.fastpaths import ws_shortcut

    ws_shortcut.WebSocketShortcut = _Passthrough  # type: ignore[misc, assignment]


def _without_ws_handler() -> None:
    from datadiver_graph.api.http import GraphQLView
    from datadiver_graph.fastpaths.view import FastGraphQLView

    FastGraphQLView.graphql_transport_ws_handler_class = (
        GraphQLView.graphql_transport_ws_handler_class
    )


PATCHES: dict[str, Callable[[], None]] = {
    "direct": _without_direct,
    "query_plans": _without_query_plans,
    "execution": _without_execution,
    "executor": _without_executor,
    "ws_transport": lambda: _without_protocol("ws"),
    "ws_shortcut": _without_ws_shortcut,
    "ws_handler": _without_ws_handler,
}


def apply(pieces: str) -> list[str]:
    names = [name for name in pieces.split(",") if name and name != "none"]
    unknown = sorted(set(names) - set(PATCHES))
    if unknown:
        raise SystemExit(f"unknown fast path(s): {', '.join(unknown)}; known: {PIECES}")
    for name in names:
        PATCHES[name]()
    return names


def main() -> None:
    apply(sys.argv[1])
    from datadiver_graph.cli import run

    sys.exit(run(sys.argv[2:]))


if __name__ == "__main__":
    main()
