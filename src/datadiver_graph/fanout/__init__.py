"""Cross-process fan-out of domain events: a local hub over one pub/sub backend.

The shape is broadcaster's (one small backend interface, one file per backend), without
depending on it: the hub keeps bounded subscriber queues where broadcaster 0.3.1 keeps
unbounded ones, and the backends notice a lost link and reconnect, where broadcaster's
Redis listener dies silently (its issue #144).
"""

from datadiver_graph.fanout.hub import RESYNC, EventHub, Item, SlowConsumer, Subscription

__all__ = ["RESYNC", "EventHub", "Item", "SlowConsumer", "Subscription"]
