"""Fan-out through Redis pub/sub on redis-py, surviving Redis restarts.

broadcaster's RedisBackend (0.3.1) reads in a task that dies with the connection, after
which every subscriber waits forever (its issue #144). Here one reader task owns the
subscriber connection: on any connection error it reconnects with backoff, subscribes to
every channel again, and tells the hub, which asks subscribers to re-read what they may
have missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from datadiver_graph.fanout.backend_base import BroadcastBackend, Event
from datadiver_graph.fanout.backends import ReconnectCallback

log = logging.getLogger(__name__)

BACKOFF_START = 0.1
BACKOFF_MAX = 2.0
# A silent network path (no RST) is only noticed by traffic: ping this often when idle.
IDLE_PING_SECONDS = 5.0


class ReconnectingRedisBackend(BroadcastBackend):
    def __init__(self, url: str) -> None:
        self._url = url
        self._publisher: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=5, retry_on_timeout=False
        )
        self._channels: set[str] = set()
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._healthy = False
        self._callbacks: list[ReconnectCallback] = []
        self._ever_connected = False

    @property
    def healthy(self) -> bool:
        return self._healthy

    def on_reconnect(self, callback: ReconnectCallback) -> None:
        self._callbacks.append(callback)

    async def connect(self) -> None:
        # Never fails: with Redis down the service starts degraded and keeps retrying.
        self._reader = asyncio.create_task(self._read_forever(), name="redis-fanout-reader")

    async def disconnect(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        await self._close_pubsub()
        await self._publisher.aclose()

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        pubsub = self._pubsub
        if pubsub is not None and self._healthy:
            with contextlib.suppress(RedisError, OSError):
                # On failure the reader reconnects and subscribes to every channel anyway.
                await pubsub.subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        pubsub = self._pubsub
        if pubsub is not None and self._healthy:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.unsubscribe(channel)

    async def publish(self, channel: str, message: str) -> None:
        await self._publisher.publish(channel, message)

    async def next_published(self) -> Event:
        return await self._queue.get()

    async def ping(self) -> bool:
        try:
            return bool(await self._publisher.ping())
        except (RedisError, OSError):
            return False

    async def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def _open(self) -> None:
        pubsub = aioredis.Redis.from_url(
            self._url, socket_connect_timeout=2, socket_timeout=None
        ).pubsub(ignore_subscribe_messages=True)
        # A pubsub with no channel has no connection yet; ping opens one so a down
        # server is noticed now, not at the first subscriber.
        await pubsub.ping()
        if self._channels:
            await pubsub.subscribe(*self._channels)
        self._pubsub = pubsub

    async def _read_forever(self) -> None:
        backoff = BACKOFF_START
        while True:
            try:
                await self._open()
                was_down = self._ever_connected
                self._healthy = self._ever_connected = True
                backoff = BACKOFF_START
                log.info("fan-out link to Redis is up")
                if was_down:
                    for callback in self._callbacks:
                        await callback()
                await self._pump()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure of the link: reconnect
                if self._healthy:
                    log.warning("fan-out link to Redis lost: %s; reconnecting", exc)
                self._healthy = False
                await self._close_pubsub()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)

    async def _pump(self) -> None:
        idle = 0.0
        while True:
            pubsub = self._pubsub
            assert pubsub is not None
            message = await pubsub.get_message(timeout=1.0)
            if message is None:
                idle += 1.0
                if idle >= IDLE_PING_SECONDS:
                    await pubsub.ping()
                    idle = 0.0
                continue
            idle = 0.0
            if message.get("type") == "message":
                channel = message["channel"]
                data = message["data"]
                self._queue.put_nowait(
                    Event(
                        channel=channel.decode() if isinstance(channel, bytes) else channel,
                        message=data.decode() if isinstance(data, bytes) else data,
                    )
                )
