"""Fan-out within one process (`memory://`): development, tests and single-process serving."""

from __future__ import annotations

import asyncio

from datadiver_graph.fanout.backend_base import BroadcastBackend, Event


class MemoryBackend(BroadcastBackend):
    def __init__(self) -> None:
        self._subscribed: set[str] = set()
        self._published: asyncio.Queue[Event] = asyncio.Queue()

    async def connect(self) -> None:
        pass

    async def disconnect(self) -> None:
        pass

    async def subscribe(self, channel: str) -> None:
        self._subscribed.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._subscribed.discard(channel)

    async def publish(self, channel: str, message: str) -> None:
        # Nobody listens on it here, and nobody elsewhere can: nothing to keep.
        if channel in self._subscribed:
            self._published.put_nowait(Event(channel, message))

    async def next_published(self) -> Event:
        # One unsubscribed since it was published is dropped by the hub, which has nobody
        # left to hand it to.
        return await self._published.get()
