"""What a subscription resolver returns: a live view (domain.live) and how to show its value.

graphql-core and strawberry iterate it like any async iterable (the legacy graphql-ws
protocol does): that runs the view in the iterating task. The graphql-transport-ws
handler (fastpaths/ws_handler.py) recognises it and follows the view itself instead, so
that an idle subscription keeps no task and no chain of suspended generators.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, Generic, TypeVar

from starlette.websockets import WebSocket

from datadiver_graph.domain import live

log = logging.getLogger(__name__)

T = TypeVar("T")

# 1013 "Try Again Later": the server shed this connection because it could not keep up.
SLOW_CONSUMER_CLOSE_CODE = 1013
SLOW_CONSUMER_REASON = "slow consumer: too many undelivered events"


def shed_slow_connection(request: Any) -> None:
    """Close the whole connection when one of its subscriptions overflows.

    The delivery task may be blocked writing to this very client, so the close runs in a
    task of its own rather than in the subscription's.
    """
    if not isinstance(request, WebSocket):
        return
    log.warning("closing a WebSocket that fell behind on its subscriptions")

    async def close() -> None:
        with contextlib.suppress(Exception):
            await request.close(code=SLOW_CONSUMER_CLOSE_CODE, reason=SLOW_CONSUMER_REASON)

    asyncio.get_running_loop().create_task(close())


class LiveSource(Generic[T]):
    __slots__ = ("request", "show", "view")

    def __init__(self, view: live.LiveView[T], show: Callable[[T], Any], request: Any) -> None:
        self.view = view
        self.show = show
        self.request = request  # the connection to shed when the subscriber falls behind

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._pull()

    async def _pull(self) -> AsyncIterator[Any]:
        request = self.request
        states = live.stream(self.view, on_overflow=lambda: shed_slow_connection(request))
        try:
            async for state in states:
                yield self.show(state)
        finally:
            await states.aclose()
