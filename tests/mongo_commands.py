"""What the service sends MongoDB: every command while `commands()` is open, and a query
plan's stages, so tests can assert the reads a page or an export really makes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from pymongo import monitoring


class Commands(monitoring.CommandListener):
    """Every command pymongo sends while `on` (registered once: pymongo cannot unregister)."""

    def __init__(self) -> None:
        self.on = False
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.on:
            self.seen.append((event.command_name, dict(event.command)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


COMMANDS = Commands()
monitoring.register(COMMANDS)


@contextlib.contextmanager
def commands() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """The commands of clients created after this module was imported."""
    COMMANDS.seen = []
    COMMANDS.on = True
    try:
        yield COMMANDS.seen
    finally:
        COMMANDS.on = False


def plan_stages(plan: dict[str, Any]) -> list[str]:
    """A winning plan's stages, outermost first, each index scan with its index's name."""
    stages = []
    while plan:
        stages.append(plan["stage"] + (f"({plan['indexName']})" if "indexName" in plan else ""))
        plan = plan.get("inputStage") or {}
    return stages
