"""Opaque keyset cursors for newest-first lists."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson
from pymongo.asynchronous.collection import AsyncCollection

from datadiver_graph.domain.clock import MAX_TIMESTAMP
from datadiver_graph.domain.errors import InvalidInput

T = TypeVar("T")

_MAX_KEY_LENGTH = 128


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    cursors: list[str]  # cursors[i] resumes right after items[i]
    has_next_page: bool

    @property
    def end_cursor(self) -> str | None:
        return self.cursors[-1] if self.cursors else None


def encode_cursor(timestamp: int, key: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([timestamp, key])).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        timestamp, key = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise InvalidInput("cursor is not one this API issued") from None
    # Bounded like stored timestamps and keys: a forged cursor must never reach the driver
    # (an int beyond 64 bits makes it raise OverflowError rather than match nothing).
    if (
        not isinstance(timestamp, int)
        or isinstance(timestamp, bool)
        or not 0 <= timestamp <= MAX_TIMESTAMP
        or not isinstance(key, str)
        or not 0 < len(key) <= _MAX_KEY_LENGTH
    ):
        raise InvalidInput("cursor is not one this API issued")
    return timestamp, key


def check_page_size(first: int | None, maximum: int) -> int:
    if first is None:
        return maximum
    if first < 1:
        raise InvalidInput("first must be at least 1")
    if first > maximum:
        raise InvalidInput(f"first must be at most {maximum} (MAX_QUERY_SIZE)")
    return first


def after_filter(cursor: str | None, time_field: str, key_field: str) -> dict[str, object]:
    """Mongo filter for the items strictly after `cursor` in (time desc, key desc) order."""
    if cursor is None:
        return {}
    timestamp, key = decode_cursor(cursor)
    return {
        "$or": [
            {time_field: {"$lt": timestamp}},
            {time_field: timestamp, key_field: {"$lt": key}},
        ]
    }


async def newest_first(
    collection: AsyncCollection[dict[str, Any]],
    query: dict[str, Any],
    *,
    time_field: str,
    key_field: str,
    first: int,
    after: str | None,
    parse: Callable[[dict[str, Any]], T],
) -> Page[T]:
    """One page of `query`, ordered by (time desc, key desc); keys break ties so it is total."""
    query = {**query, **after_filter(after, time_field, key_field)}
    cursor = collection.find(query).sort([(time_field, -1), (key_field, -1)]).limit(first + 1)
    docs = [doc async for doc in cursor]
    has_next = len(docs) > first
    docs = docs[:first]
    return Page(
        items=[parse(doc) for doc in docs],
        cursors=[encode_cursor(doc[time_field], doc[key_field]) for doc in docs],
        has_next_page=has_next,
    )
