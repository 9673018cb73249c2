"""broadcaster's Postgres LISTEN/NOTIFY backend, made to notice a lost connection.

Its listener queue simply stops filling when the connection dies; here the connection's
termination surfaces as an error from next_published(), which makes the hub reconnect.
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
    async def connect(self) -> None:
        await super().connect()
        self._conn.add_termination_listener(self._terminated)

    def _terminated(self, *args: Any) -> None:
        self._listen_queue.put_nowait(_Terminated())

    async def disconnect(self) -> None:
        if not self._conn.is_closed():
            await self._conn.close()

    async def next_published(self) -> Event:
        event = await self._listen_queue.get()
        if isinstance(event, _Terminated):
            raise ConnectionError("PostgreSQL fan-out connection terminated")
        return event

    async def ping(self) -> bool:
        try:
            await asyncio.wait_for(self._conn.fetchval("SELECT 1"), 2)
        except Exception:
            return False
        return True
