"""Read-modify-write with optimistic concurrency on a record's `version` field."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection

from datadiver_graph.domain.errors import Conflict, NotFound

Document = dict[str, Any]
ATTEMPTS = 8
# The first retry waits up to this long, each later one up to twice the one before.
BACKOFF_S = 0.002


async def backoff(attempt: int) -> None:
    """Wait before retry `attempt` (0 first): a random time under an exponential bound, so
    writers that collided once do not collide again in lockstep."""
    await asyncio.sleep(random.uniform(0, BACKOFF_S * 2**attempt))


async def update_versioned(
    collection: AsyncCollection[Document],
    key: Document,
    change: Callable[[Document], Document],
    what: str,
) -> Document:
    """Apply `change(current) -> fields to $set`, retrying when another writer got there first.

    The change is computed from the stored document, so a merge never loses a concurrent
    writer's keys.
    """
    for attempt in range(ATTEMPTS):
        if attempt:
            await backoff(attempt - 1)
        current = await collection.find_one(key)
        if current is None:
            raise NotFound(f"{what} not found")
        fields = change(current)
        updated = await collection.find_one_and_update(
            {**key, "version": current.get("version", 1)},
            {"$set": fields, "$inc": {"version": 1}},
            return_document=ReturnDocument.AFTER,
        )
        if updated is not None:
            return updated
    raise Conflict(f"{what} is being changed by others; try again")


async def update_atomic(
    collection: AsyncCollection[Document], key: Document, fields: Document, what: str
) -> Document:
    """A blind $set that needs no read (touch, end): one round trip."""
    updated = await collection.find_one_and_update(
        key,
        {"$set": fields, "$inc": {"version": 1}},
        return_document=ReturnDocument.AFTER,
    )
    if updated is None:
        raise NotFound(f"{what} not found")
    return updated
