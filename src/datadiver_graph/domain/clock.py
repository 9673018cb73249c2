"""Timestamps are integer epoch milliseconds everywhere in storage (Convex's and Clerk's unit)."""

from __future__ import annotations

import time


def now_ms() -> int:
    return time.time_ns() // 1_000_000
