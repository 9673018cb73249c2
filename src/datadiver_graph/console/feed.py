"""The live feed: every change's summary from the operators' channel, as Server-Sent Events.

One stream serves the browser (`console.js`, through EventSource) and `datadiver-graph logs`
(over HTTP with the console token): each change is one `change` event whose data is the JSON
summary `domain.events.change_summary` made where the change happened, in any process
sharing BROADCAST_URL. Filters (`?user=`, `?type=`) are applied here, so a filtered watcher
receives only what it shows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from datadiver_graph.console import operations
from datadiver_graph.domain.events import ADMIN_CHANNEL, Event
from datadiver_graph.fanout import RESYNC, EventHub, SlowConsumer, Subscription

# A comment line this often keeps proxies from closing an idle stream, and lets the server
# notice a watcher that went away.
KEEPALIVE_S = 15.0
# How long EventSource waits before reconnecting after the stream ends.
RETRY_MS = 1000
MAX_FILTER = 128


@dataclass(frozen=True, slots=True)
class Filter:
    user: str | None = None
    type: str | None = None  # a full type ("session.ended") or a prefix ending in "." ("session.")
    operations: bool = False  # this process's operation lines too (`operations.py`)
    errors_only: bool = False  # only operations that failed

    @classmethod
    def of(
        cls,
        user: str | None,
        type_: str | None,
        operations: str | None = None,
        errors_only: str | None = None,
    ) -> Filter:
        errors = errors_only in ("1", "true")
        return cls(_clean(user), _clean(type_), operations in ("1", "true") or errors, errors)

    def matches(self, summary: dict[str, Any]) -> bool:
        if self.errors_only and summary.get("outcome") != "error":
            return False
        if self.user is not None and summary.get("userId") != self.user:
            return False
        if self.type is not None:
            kind = str(summary.get("type", ""))
            if self.type.endswith("."):
                return kind.startswith(self.type)
            return kind == self.type
        return True


def _clean(value: str | None) -> str | None:
    return (value or "").strip()[:MAX_FILTER] or None


def sse(event: str, data: object) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


async def stream(hub: EventHub, where: Filter) -> AsyncIterator[bytes]:
    """The SSE body: `retry`, a `ready` event once subscribed, then each matching change
    (`change`) and, when asked for, each operation line of this process (`operation`)."""
    watchers = operations.tap().watchers
    async with hub.subscribe(ADMIN_CHANNEL) as subscription:
        if where.operations:
            watchers.add(subscription)
        try:
            async for chunk in _events(subscription, where):
                yield chunk
        finally:
            watchers.discard(subscription)


async def _events(subscription: Subscription, where: Filter) -> AsyncIterator[bytes]:
    yield f"retry: {RETRY_MS}\n\n".encode()
    ready = {"user": where.user, "type": where.type, "operations": where.operations}
    yield sse("ready", ready)
    while True:
        try:
            async with asyncio.timeout(KEEPALIVE_S):
                item = await subscription.next()
        except TimeoutError:
            yield b": keepalive\n\n"
            continue
        except SlowConsumer:
            # Fell behind: end the stream; EventSource (and `logs`) reconnect.
            yield sse("lagging", {})
            return
        if item is RESYNC:
            yield sse("resync", {})
            continue
        assert isinstance(item, Event)
        if item.record is not None and where.matches(item.record):
            kind = "operation" if item.kind.startswith("operation.") else "change"
            yield sse(kind, item.record)
