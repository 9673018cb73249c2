"""The process-local side of fan-out: who listens to which channel, with bounded queues.

One listener task reads every event the backend delivers and offers it to each local
subscriber of its channel without waiting: a subscriber whose queue is full is cut off
(SlowConsumer) instead of slowing everyone else or growing memory without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Final

from broadcaster._backends.base import BroadcastBackend

from datadiver_graph.events import Event
from datadiver_graph.fanout.backends import SelfHealing, create_backend, max_message_bytes

log = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE = 256
RECONNECT_BACKOFF_MAX = 5.0


class _Resync:
    """Marker: events may have been missed (the link was down); re-read the current state."""

    def __repr__(self) -> str:
        return "RESYNC"


RESYNC: Final = _Resync()
Item = Event | _Resync


class SlowConsumer(Exception):
    """The subscriber fell more than its queue size behind and was cut off."""


class Subscription:
    def __init__(
        self, channels: tuple[str, ...], maxsize: int, on_overflow: Callable[[], None] | None
    ) -> None:
        self.channels = channels
        self._queue: asyncio.Queue[Item] = asyncio.Queue(maxsize)
        self._on_overflow = on_overflow
        self.overflowed = False

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def offer(self, item: Item) -> None:
        if self.overflowed:
            return
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed = True
            # Free the backlog now; the consumer will only learn it was cut off.
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(RESYNC)  # wakes a consumer blocked in get()
            if self._on_overflow is not None:
                self._on_overflow()

    async def next(self) -> Item:
        if self.overflowed:
            raise SlowConsumer("subscriber fell too far behind")
        item = await self._queue.get()
        if self.overflowed:
            raise SlowConsumer("subscriber fell too far behind")
        return item

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Item:
        return await self.next()


class EventHub:
    def __init__(self, url: str, *, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self.url = url
        self.queue_size = queue_size
        self._backend: BroadcastBackend = create_backend(url)
        self._max_bytes = max_message_bytes(url)
        self._local: dict[str, set[Subscription]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._listener_healthy = True
        self.published = 0
        self.publish_failures = 0
        self.delivered = 0
        self.dropped_slow = 0

    # -- lifecycle --------------------------------------------------------------------------

    async def connect(self) -> None:
        await self._backend.connect()
        if isinstance(self._backend, SelfHealing):
            self._backend.on_reconnect(self._resync_all)
        self._listener = asyncio.create_task(self._listen(), name="fanout-listener")

    async def disconnect(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        with contextlib.suppress(Exception):
            await self._backend.disconnect()

    async def link_ok(self) -> bool:
        """Whether events published elsewhere can reach this process right now."""
        if self._listener is None or self._listener.done():
            return False
        if isinstance(self._backend, SelfHealing):
            return self._backend.healthy and await self._backend.ping()
        return self._listener_healthy

    def stats(self) -> dict[str, int]:
        return {
            "subscriptions": len({id(s) for subs in self._local.values() for s in subs}),
            "channels": len(self._local),
            "published": self.published,
            "publish_failures": self.publish_failures,
            "delivered": self.delivered,
            "dropped_slow": self.dropped_slow,
            # Events waiting in local subscriber queues: at most queue_size per subscription.
            "queued": sum(s.queued for s in {s for subs in self._local.values() for s in subs}),
        }

    # -- publishing -------------------------------------------------------------------------

    async def publish(self, channels: tuple[str, ...], event: Event) -> None:
        """Best effort: the write is already committed, so a fan-out failure is logged, not
        raised; subscribers elsewhere catch up when their link comes back (RESYNC)."""
        message = event.encode()
        if self._max_bytes is not None and len(message.encode()) > self._max_bytes:
            message = Event(event.kind, None).encode()
        for channel in channels:
            try:
                await self._backend.publish(channel, message)
                self.published += 1
            except Exception as exc:
                self.publish_failures += 1
                log.warning("could not publish %s on %s: %s", event.kind, channel, exc)

    # -- subscribing ------------------------------------------------------------------------

    @asynccontextmanager
    async def subscribe(
        self, *channels: str, on_overflow: Callable[[], None] | None = None
    ) -> AsyncIterator[Subscription]:
        def overflowed() -> None:
            # Counted when the subscriber is cut off, not when its consumer next wakes up:
            # a consumer blocked on a stalled client may not wake for a long time.
            self.dropped_slow += 1
            if on_overflow is not None:
                on_overflow()

        subscription = Subscription(channels, self.queue_size, overflowed)
        try:
            for channel in channels:
                subscribers = self._local.setdefault(channel, set())
                subscribers.add(subscription)
                if len(subscribers) == 1:
                    await self._backend_call("subscribe", channel)
            yield subscription
        finally:
            for channel in channels:
                remaining = self._local.get(channel)
                if remaining is None:
                    continue
                remaining.discard(subscription)
                if not remaining:
                    del self._local[channel]
                    await self._backend_call("unsubscribe", channel)

    async def _backend_call(self, method: str, channel: str) -> None:
        try:
            await getattr(self._backend, method)(channel)
        except Exception as exc:
            # The link is down; reconnecting re-subscribes every channel in use.
            log.warning("fan-out %s(%s) failed: %s", method, channel, exc)

    # -- delivery ---------------------------------------------------------------------------

    def _deliver(self, channel: str, message: str) -> None:
        subscribers = self._local.get(channel)
        if not subscribers:
            return
        try:
            event = Event.decode(message)
        except Exception:
            log.warning("ignoring an undecodable message on %s", channel)
            return
        for subscription in list(subscribers):
            subscription.offer(event)
            self.delivered += 1

    async def _resync_all(self) -> None:
        for subscription in {s for subs in self._local.values() for s in subs}:
            subscription.offer(RESYNC)

    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            try:
                event = await self._backend.next_published()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Backends that cannot heal themselves (Postgres) are rebuilt here.
                self._listener_healthy = False
                log.warning("fan-out link lost: %s; reconnecting", exc)
                # Keep trying: after a failed attempt the old connection's queue is never
                # filled again, so waiting on next_published() would wait forever.
                while True:
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, RECONNECT_BACKOFF_MAX)
                    if await self._reconnect():
                        break
                continue
            backoff = 0.1
            self._deliver(event.channel, event.message)

    async def _reconnect(self) -> bool:
        with contextlib.suppress(Exception):
            await self._backend.disconnect()
        try:
            await self._backend.connect()
            for channel in list(self._local):
                await self._backend.subscribe(channel)
        except Exception as exc:
            log.warning("fan-out reconnect failed: %s", exc)
            return False
        self._listener_healthy = True
        log.info("fan-out link is back")
        await self._resync_all()
        return True
