"""The handle every domain function writes through: persistence plus publication."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from datadiver_graph.domain.batching import Batcher
from datadiver_graph.domain.events import ADMIN_CHANNEL, Event, change_summary, reread_summary
from datadiver_graph.domain.records import Record
from datadiver_graph.fanout import EventHub
from datadiver_graph.observability.logs import request_id_var
from datadiver_graph.storage.mongo import Database

T = TypeVar("T")
R = TypeVar("R")
StoredRecord = TypeVar("StoredRecord", bound=Record)


@dataclass(frozen=True, slots=True)
class Store:
    db: Database
    events: EventHub
    # Group-commit queues (domain.batching), one per batched write, made on first use.
    _batchers: dict[str, Batcher[Any, Any]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    async def publish(
        self, kind: str, record: StoredRecord, channels: tuple[str, ...]
    ) -> StoredRecord:
        """Announce `record` as stored; returns it, so a write can end `return await ...`.

        The one road from a write to its subscribers, whether a mutation, a webhook or an
        import made it. Call it only once the database acknowledged the write, so nobody
        hears of a change that could still roll back. Fan-out failures are the hub's to
        count and log (`EventHub.publish`), never the writer's: the write already happened.

        Then a summary of it goes to the operators' channel (`events.ADMIN_CHANNEL`): one
        more small message, after the subscribers' own.
        """
        doc = record.to_doc()
        await self.events.publish(channels, Event(kind, doc))
        summary = change_summary(kind, doc, channels, request_id_var.get())
        await self.events.publish((ADMIN_CHANNEL,), Event(kind, summary))
        return record

    async def announce_reread(self, prefixes: tuple[str, ...]) -> None:
        """Tell live subscribers of channels starting with `prefixes` to re-read: what a
        bulk write announces instead of one event per record. Call it after the commit.
        Operators see it as one `reread` change naming the prefixes."""
        await self.events.reread(prefixes)
        summary = reread_summary(prefixes, request_id_var.get())
        await self.events.publish((ADMIN_CHANNEL,), Event(summary["type"], summary))

    def batcher(self, name: str, make: Callable[[Store], Batcher[T, R]]) -> Batcher[T, R]:
        """The store's batcher called `name`, made by `make(store)` the first time."""
        found = self._batchers.get(name)
        if found is None:
            found = self._batchers[name] = make(self)
        return found
