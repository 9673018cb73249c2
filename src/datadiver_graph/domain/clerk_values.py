"""Reading values out of Clerk payloads, where any optional field may be absent, null or of
an unexpected type: each reader returns None rather than raising."""

from __future__ import annotations

from typing import Any

from datadiver_graph.domain.clock import MAX_TIMESTAMP


def as_object(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def as_text(value: Any, max_length: int | None = None) -> str | None:
    """A non-empty string (no longer than `max_length`, when given)."""
    if not isinstance(value, str) or not value:
        return None
    return value if max_length is None or len(value) <= max_length else None


def as_timestamp(value: Any) -> int | None:
    """Clerk's epoch milliseconds; anything else counts as absent."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TIMESTAMP:
        return value
    return None


def as_int(value: Any) -> int | None:
    """An integer, also when JSON carried it as a float with no fraction (e.g. 1999.0)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None
