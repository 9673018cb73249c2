"""Scalars: every timestamp is an ISO-8601 UTC string with milliseconds (`...T12:00:00.000Z`).

Storage keeps Convex's epoch milliseconds; GraphQL's Int is 32-bit and cannot carry them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NewType, cast

import strawberry
from strawberry.scalars import JSON
from strawberry.types.scalar import ScalarDefinition

__all__ = ["JSON", "SCALAR_MAP", "DateTime", "as_object", "from_epoch_ms", "to_epoch_ms"]


def from_epoch_ms(value: int) -> str:
    moment = datetime.fromtimestamp(value / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value % 1000:03d}Z"


def to_epoch_ms(value: object) -> int:
    if not isinstance(value, str):
        raise ValueError("DateTime must be an ISO-8601 string")
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("DateTime must carry a time zone (use Z for UTC)")
    return int(moment.timestamp() * 1000)


DateTime = NewType("DateTime", int)

SCALAR_MAP: dict[object, ScalarDefinition] = {
    DateTime: strawberry.scalar(
        name="DateTime",
        description=(
            "ISO-8601 instant in UTC with millisecond precision, e.g. 2026-01-31T09:30:00.000Z"
        ),
        serialize=from_epoch_ms,
        parse_value=to_epoch_ms,
    )
}


def as_object(value: JSON | None) -> dict[str, Any] | None:
    """JSON arguments reach the domain untyped; the domain rejects anything but an object."""
    return cast(dict[str, Any] | None, value)
