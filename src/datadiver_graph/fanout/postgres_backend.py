"""Fan-out through PostgreSQL LISTEN/NOTIFY on one asyncpg connection per process.

PostgreSQL keeps no notifications for a listener that is away, and an idle LISTEN
connection learns it is gone only when asyncpg reports its termination. That report ends
the connection's queue, so next_published() raises and the hub reconnects, listens again
and asks subscribers to re-read what they may have missed.

asyncpg refuses a second operation on a connection while one is in flight ("another
operation is in progress"): two subscriptions starting together would lose a LISTEN, so
every operation takes a lock.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

from datadiver_graph.fanout.backend_base import BroadcastBackend, Event

CLOSE_TIMEOUT = 2.0
PING_TIMEOUT = 2.0


class ConnectionTerminated(ConnectionError):
    """The LISTEN connection is gone, and its notifications with it."""


class _Listening:
    """One connection and what it was notified of, ended by None when it terminates.

    Each connection has its own queue: the end of a replaced connection must not be read
    as the end of the next one.
    """

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue()
        connection.add_termination_listener(self._terminated)

    def notified(self, _connection: Any, _pid: int, channel: str, payload: str) -> None:
        self.queue.put_nowait(Event(channel, payload))

    def _terminated(self, _connection: Any) -> None:
        self.queue.put_nowait(None)


class PostgresBackend(BroadcastBackend):
    def __init__(self, url: str) -> None:
        self._url = url
        self._listening: _Listening | None = None
        self._lock = asyncio.Lock()

    async def connect(self) -> None:
        self._listening = _Listening(await asyncpg.connect(self._url))

    async def disconnect(self) -> None:
        listening, self._listening = self._listening, None
        if listening is not None and not listening.connection.is_closed():
            # asyncpg aborts the connection when a polite close takes longer than this.
            await listening.connection.close(timeout=CLOSE_TIMEOUT)

    def _current(self) -> _Listening:
        if self._listening is None:
            raise ConnectionTerminated("PostgreSQL fan-out is not connected")
        return self._listening

    async def subscribe(self, channel: str) -> None:
        async with self._lock:
            listening = self._current()
            await listening.connection.add_listener(channel, listening.notified)

    async def unsubscribe(self, channel: str) -> None:
        async with self._lock:
            listening = self._current()
            await listening.connection.remove_listener(channel, listening.notified)

    async def publish(self, channel: str, message: str) -> None:
        async with self._lock:
            await self._current().connection.execute("SELECT pg_notify($1, $2)", channel, message)

    async def next_published(self) -> Event:
        event = await self._current().queue.get()
        if event is None:
            raise ConnectionTerminated("PostgreSQL fan-out connection terminated")
        return event

    async def ping(self) -> bool:
        async def select_one() -> None:
            async with self._lock:
                await self._current().connection.fetchval("SELECT 1")

        try:
            await asyncio.wait_for(select_one(), PING_TIMEOUT)
        except Exception:
            return False
        return True
