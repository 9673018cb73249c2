"""The handle every domain function writes through: persistence plus publication."""

from __future__ import annotations

from dataclasses import dataclass

from datadiver_graph.db import Database
from datadiver_graph.fanout import EventHub


@dataclass(frozen=True, slots=True)
class Store:
    db: Database
    events: EventHub
