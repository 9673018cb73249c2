"""broadcaster's Postgres LISTEN/NOTIFY backend, made to notice a lost connection.

Its listener queue simply stops filling when the connection dies; here the connection's
termination surfaces as an error from next_published(), which makes the hub reconnect.

It also runs LISTEN, UNLISTEN and NOTIFY on one asyncpg connection, which refuses a second
operation while one is in flight ("another operation is in progress"): two subscriptions
starting together would lose a LISTEN. Every operation on the connection takes a lock here.
"""

from __future__ import annotations

import asyncio
from typing import Any

from broadcaster._backends.postgres import PostgresBackend
from broadcaster._base import Event


class _Terminated(Event):
    def __init__(self) -> None:
        super().__init__(channel="", message="")


class WatchedPostgresBackend(PostgresBackend):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._lock = asyncio.Lock()

    async def connect(self) -> None:
        await super().connect()
        self._conn.add_termination_listener(self._terminated)

    def _terminated(self, *args: Any) -> None:
        self._listen_queue.put_nowait(_Terminated())

    async def disconnect(self) -> None:
        if not self._conn.is_closed():
            await self._conn.close()

    async def subscribe(self, channel: str) -> None:
        async with self._lock:
            await super().subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        async with self._lock:
            await super().unsubscribe(channel)

    async def publish(self, channel: str, message: str) -> None:
        async with self._lock:
            await super().publish(channel, message)

    async def next_published(self) -> Event:
        event = await self._listen_queue.get()
        if isinstance(event, _Terminated):
            raise ConnectionError("PostgreSQL fan-out connection terminated")
        return event

    async def ping(self) -> bool:
        async def select_one() -> None:
            async with self._lock:
                await self._conn.fetchval("SELECT 1")

        try:
            await asyncio.wait_for(select_one(), 2)
        except Exception:
            return False
        return True
