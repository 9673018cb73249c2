"""Choosing a backend from BROADCAST_URL, and what the hub needs to know of each."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable
from urllib.parse import urlparse

from datadiver_graph.fanout.backend_base import BroadcastBackend
from datadiver_graph.fanout.memory_backend import MemoryBackend

ReconnectCallback = Callable[[], Awaitable[None]]


@runtime_checkable
class SelfHealing(Protocol):
    """A backend that reconnects by itself and reports its link state."""

    @property
    def healthy(self) -> bool: ...

    def on_reconnect(self, callback: ReconnectCallback) -> None: ...

    async def ping(self) -> bool: ...


# pg_notify refuses payloads of 8000 bytes or more; larger events travel as a "refresh" hint.
MAX_MESSAGE_BYTES = {"postgres": 7900, "postgresql": 7900}


def create_backend(url: str) -> BroadcastBackend:
    scheme = urlparse(url).scheme
    if scheme == "memory":
        return MemoryBackend()
    if scheme in ("redis", "rediss"):
        from datadiver_graph.fanout.redis_backend import ReconnectingRedisBackend

        return ReconnectingRedisBackend(url)
    if scheme in ("postgres", "postgresql"):
        from datadiver_graph.fanout.postgres_backend import PostgresBackend

        return PostgresBackend(url)
    raise ValueError(f"unsupported BROADCAST_URL scheme {scheme!r}")


def max_message_bytes(url: str) -> int | None:
    return MAX_MESSAGE_BYTES.get(urlparse(url).scheme)
