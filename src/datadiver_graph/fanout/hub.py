"""The process-local side of fan-out: who listens to which channel, with bounded queues.

One listener task reads every event the backend delivers and offers it to each local
subscriber of its channel without waiting: a subscriber whose queue is full is cut off
(SlowConsumer) instead of slowing everyone else or growing memory without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Final

from datadiver_graph.domain.events import REREAD_CHANNEL, Event, decode_reread, encode_reread
from datadiver_graph.fanout.backend_base import BroadcastBackend
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
    """One local subscriber: its channels and its bounded backlog, read by one consumer.

    `async with hub.subscribe(...)` (or `open()` ... `close()`) registers it. Its consumer
    either awaits `next()` (or iterates it), or is told by `notify` that an item is
    queued and takes it with `pop()` - for a consumer with no task of its own while idle.
    A server holds one per live subscription, thousands of them mostly idle, so it keeps
    no asyncio.Queue (four deques and an Event each): the backlog is a list that exists
    only while something is queued, and a waiting consumer a single future.
    """

    __slots__ = (
        "_hub",
        "_items",
        "_on_overflow",
        "_waiter",
        "channels",
        "maxsize",
        "notify",
        "overflowed",
    )

    def __init__(
        self,
        hub: EventHub,
        channels: tuple[str, ...],
        maxsize: int,
        on_overflow: Callable[[], None] | None,
    ) -> None:
        self._hub = hub
        self.channels = channels
        self.maxsize = maxsize
        self._on_overflow = on_overflow
        self._items: list[Item] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.notify: Callable[[], None] | None = None
        self.overflowed = False

    @property
    def queued(self) -> int:
        return len(self._items) if self._items else 0

    def offer(self, item: Item) -> None:
        if self.overflowed:
            return
        items = self._items
        if items is None:
            items = self._items = []
        elif len(items) >= self.maxsize > 0:
            self.overflowed = True
            # Free the backlog now; the consumer will only learn it was cut off.
            self._items = None
            self._wake()
            # Counted when the subscriber is cut off, not when its consumer next wakes up:
            # a consumer blocked on a stalled client may not wake for a long time.
            self._hub.dropped_slow += 1
            if self._on_overflow is not None:
                self._on_overflow()
            return
        items.append(item)
        if self._waiter is not None:
            self._wake()
        elif self.notify is not None:
            self.notify()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def pop(self) -> Item | None:
        """The next queued item, or None. Raises SlowConsumer once cut off."""
        if self.overflowed:
            raise SlowConsumer("subscriber fell too far behind")
        items = self._items
        if not items:
            return None
        item = items.pop(0)
        if not items:
            self._items = None
        return item

    async def next(self) -> Item:
        while not self._items:
            if self.overflowed:
                raise SlowConsumer("subscriber fell too far behind")
            if self._waiter is not None:
                raise RuntimeError("a Subscription has one consumer at a time")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        item = self.pop()
        assert item is not None
        return item

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Item:
        return await self.next()

    async def open(self) -> None:
        """Start listening on the channels."""
        try:
            await self._hub._register(self)
        except BaseException:
            await self._hub._unregister(self)
            raise

    async def close(self) -> None:
        """Stop listening; what is still queued is dropped."""
        self._items = None
        self.notify = None
        await self._hub._unregister(self)

    async def __aenter__(self) -> Subscription:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class EventHub:
    def __init__(self, url: str, *, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self.url = url
        self.queue_size = queue_size
        self._backend: BroadcastBackend = create_backend(url)
        self._max_bytes = max_message_bytes(url)
        self._local: dict[str, Subscription | set[Subscription]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._listener_healthy = True
        self.published = 0
        self.publish_failures = 0
        self.delivered = 0
        self.dropped_slow = 0

    # -- lifecycle --------------------------------------------------------------------------

    async def connect(self) -> None:
        await self._backend.connect()
        await self._backend.subscribe(REREAD_CHANNEL)
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
        subscriptions = self._subscriptions()
        return {
            "subscriptions": len(subscriptions),
            "channels": len(self._local),
            "published": self.published,
            "publish_failures": self.publish_failures,
            "delivered": self.delivered,
            "dropped_slow": self.dropped_slow,
            # Events waiting in local subscriber queues: at most queue_size per subscription.
            "queued": sum(s.queued for s in subscriptions),
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

    async def reread(self, prefixes: tuple[str, ...]) -> None:
        """Ask every subscriber, in every process, of a channel starting with one of
        `prefixes` to re-read its value: one message however many records changed (a bulk
        import). Best effort, like `publish`."""
        try:
            await self._backend.publish(REREAD_CHANNEL, encode_reread(prefixes))
            self.published += 1
        except Exception as exc:
            self.publish_failures += 1
            log.warning("could not publish a re-read of %s: %s", ", ".join(prefixes), exc)

    # -- subscribing ------------------------------------------------------------------------

    def subscribe(
        self, *channels: str, on_overflow: Callable[[], None] | None = None
    ) -> Subscription:
        """`async with hub.subscribe("a", "b") as subscription:` listens while inside."""
        return Subscription(self, channels, self.queue_size, on_overflow)

    async def _register(self, subscription: Subscription) -> None:
        for channel in subscription.channels:
            # One subscriber is kept as itself; a set only once a channel has several.
            found = self._local.get(channel)
            if found is None:
                self._local[channel] = subscription
                await self._backend_call("subscribe", channel)
            elif isinstance(found, set):
                found.add(subscription)
            elif found is not subscription:
                self._local[channel] = {found, subscription}

    async def _unregister(self, subscription: Subscription) -> None:
        emptied = []
        for channel in subscription.channels:
            found = self._local.get(channel)
            if found is subscription:
                del self._local[channel]
                emptied.append(channel)
            elif isinstance(found, set):
                found.discard(subscription)
                if len(found) == 1:
                    self._local[channel] = found.pop()
        # Forgotten locally first: an unsubscribe cut short cannot leave it registered.
        for channel in emptied:
            await self._backend_call("unsubscribe", channel)

    def _subscriptions(self) -> set[Subscription]:
        found: set[Subscription] = set()
        for subscribers in self._local.values():
            if isinstance(subscribers, set):
                found |= subscribers
            else:
                found.add(subscribers)
        return found

    async def _backend_call(self, method: str, channel: str) -> None:
        try:
            await getattr(self._backend, method)(channel)
        except Exception as exc:
            # The link is down; reconnecting re-subscribes every channel in use.
            log.warning("fan-out %s(%s) failed: %s", method, channel, exc)

    # -- delivery ---------------------------------------------------------------------------

    def _deliver(self, channel: str, message: str) -> None:
        if channel == REREAD_CHANNEL:
            self._reread(message)
            return
        subscribers = self._local.get(channel)
        if subscribers is None:
            return
        try:
            event = Event.decode(message)
        except Exception:
            log.warning("ignoring an undecodable message on %s", channel)
            return
        if isinstance(subscribers, Subscription):
            subscribers.offer(event)
            self.delivered += 1
            return
        for subscription in list(subscribers):
            subscription.offer(event)
            self.delivered += 1

    def _reread(self, message: str) -> None:
        try:
            prefixes = decode_reread(message)
        except ValueError:
            log.warning("ignoring an undecodable re-read message")
            return
        for subscription in self._subscriptions():
            if any(channel.startswith(prefixes) for channel in subscription.channels):
                subscription.offer(RESYNC)
                self.delivered += 1

    async def _resync_all(self) -> None:
        for subscription in self._subscriptions():
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
            await self._backend.subscribe(REREAD_CHANNEL)
            for channel in list(self._local):
                await self._backend.subscribe(channel)
        except Exception as exc:
            log.warning("fan-out reconnect failed: %s", exc)
            return False
        self._listener_healthy = True
        log.info("fan-out link is back")
        await self._resync_all()
        return True
