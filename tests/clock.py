"""A clock for tests that moves only when the test moves it."""

from __future__ import annotations


class ManualClock:
    """`clock()` reads it in seconds; `clock.ms()` in epoch milliseconds, as `now_ms` does.

    Code that takes a clock (or whose `now_ms` a test patches) then sees exactly the times
    the test sets, so a test steps past a TTL or orders two writes without sleeping.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def ms(self) -> int:
        return round(self.now * 1000)

    def advance(self, seconds: float) -> None:
        self.now += seconds
