"""The interface every fan-out backend implements, and the message it delivers.

Adapted from broadcaster 0.3.1 (encode/broadcaster, BSD-3-Clause, Copyright (c) 2020 Encode
OSS Ltd; its licence is in LICENSE-broadcaster.md): the same six coroutines and the same
Event. It is kept here rather than imported because broadcaster's backends live in private
modules (renamed after 0.3.1) and we replaced the ones we use, so no broadcaster release
can break the install.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Event:
    """One message as a backend received it: the channel and the text published on it."""

    channel: str
    message: str


class BroadcastBackend(ABC):
    """A pub/sub link shared by every subscription of one process."""

    @abstractmethod
    async def connect(self) -> None: ...

    @abstractmethod
    async def disconnect(self) -> None: ...

    @abstractmethod
    async def subscribe(self, channel: str) -> None: ...

    @abstractmethod
    async def unsubscribe(self, channel: str) -> None: ...

    @abstractmethod
    async def publish(self, channel: str, message: str) -> None: ...

    @abstractmethod
    async def next_published(self) -> Event:
        """The next message on a subscribed channel; raises once the link is lost, if the
        backend cannot recover by itself."""
