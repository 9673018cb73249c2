"""Timestamps are integer epoch milliseconds everywhere in storage (Convex's and Clerk's unit)."""

from __future__ import annotations

import time

# The largest epoch ms we store: beyond it JavaScript clients would lose precision.
MAX_TIMESTAMP = 2**53


def now_ms() -> int:
    return time.time_ns() // 1_000_000
