"""Channel names, the event codec, and publish/subscribe over broadcaster.

Messages are JSON text (broadcaster's Redis backend carries strings) and carry the
changed record, so a subscriber never needs a database read to deliver a change.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from broadcaster import Broadcast
from broadcaster._base import Unsubscribed

log = logging.getLogger(__name__)


def user_channel(external_id: str) -> str:
    return f"user:{external_id}"


def session_channel(session_id: str) -> str:
    return f"session:{session_id}"


def user_sessions_channel(external_id: str) -> str:
    return f"user-sessions:{external_id}"


def payments_channel(external_id: str) -> str:
    return f"payments:{external_id}"


@dataclass(frozen=True, slots=True)
class Event:
    """`kind` is e.g. "session.updated"; `record` is the stored document after the change."""

    kind: str
    record: dict[str, Any]

    def encode(self) -> str:
        return orjson.dumps({"kind": self.kind, "record": self.record}).decode()

    @classmethod
    def decode(cls, message: str) -> Event:
        data = orjson.loads(message)
        return cls(kind=data["kind"], record=data["record"])


class EventBus:
    """Publishes domain events to every process through one broadcaster instance."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._broadcast = Broadcast(url)
        self._connected = False

    async def connect(self) -> None:
        await self._broadcast.connect()
        self._connected = True

    async def disconnect(self) -> None:
        if self._connected:
            self._connected = False
            await self._broadcast.disconnect()

    async def publish(self, channels: tuple[str, ...], event: Event) -> None:
        message = event.encode()
        for channel in channels:
            await self._broadcast.publish(channel, message)

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[AsyncIterator[Event]]:
        async with self._broadcast.subscribe(channel) as subscriber:

            async def events() -> AsyncIterator[Event]:
                while True:
                    try:
                        raw = await subscriber.get()
                    except Unsubscribed:
                        return
                    yield Event.decode(raw.message)

            yield events()
