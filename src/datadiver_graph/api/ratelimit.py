"""Per-identity request budgets: a fixed one-minute window per key.

Shared through Redis when the deployment has one (every instance counts against the same
budget), in process memory otherwise. Redis trouble fails open: an outage of the limiter
must not become an outage of the API.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Protocol
from urllib.parse import urlparse

from redis import asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60
MAX_TRACKED_KEYS = 100_000


class RateLimiter(Protocol):
    async def hit(self, key: str) -> float | None:
        """Count one request; None when allowed, else seconds until the budget renews."""
        ...

    async def close(self) -> None: ...


class MemoryRateLimiter:
    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._window = 0
        self._counts: dict[str, int] = {}

    async def hit(self, key: str) -> float | None:
        now = time.time()
        window = int(now // WINDOW_SECONDS)
        if window != self._window or len(self._counts) > MAX_TRACKED_KEYS:
            # A new window forgets the old one: memory is bounded by one minute of callers.
            self._window, self._counts = window, {}
        count = self._counts.get(key, 0) + 1
        self._counts[key] = count
        if count > self.per_minute:
            return (window + 1) * WINDOW_SECONDS - now
        return None

    async def close(self) -> None:
        return None


class RedisRateLimiter:
    def __init__(self, url: str, per_minute: int) -> None:
        self.per_minute = per_minute
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_connect_timeout=0.5, socket_timeout=0.5
        )

    async def hit(self, key: str) -> float | None:
        now = time.time()
        window = int(now // WINDOW_SECONDS)
        name = f"ratelimit:{window}:{key}"
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incr(name)
                pipe.expire(name, WINDOW_SECONDS * 2)
                count, _ = await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("rate limiter unavailable (%s); allowing the request", exc)
            return None
        if int(count) > self.per_minute:
            return (window + 1) * WINDOW_SECONDS - now
        return None

    async def close(self) -> None:
        await self._redis.aclose()


def identity_key(*, user_id: str | None, service_key: str | None, client_host: str | None) -> str:
    """The budget a caller counts against: its user, its service key (each key its own,
    named by a digest so no key reaches Redis or a log), else its address."""
    if service_key is not None:
        digest = hashlib.sha256(service_key.strip().encode()).hexdigest()[:16]
        return f"service:{digest}"
    if user_id is not None:
        return f"user:{user_id}"
    return f"ip:{client_host or 'unknown'}"


def create_rate_limiter(per_minute: int, broadcast_url: str) -> RateLimiter | None:
    if per_minute <= 0:
        return None
    if urlparse(broadcast_url).scheme in ("redis", "rediss"):
        return RedisRateLimiter(broadcast_url, per_minute)
    return MemoryRateLimiter(per_minute)
