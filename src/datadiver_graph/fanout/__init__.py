"""Cross-process fan-out of domain events: broadcaster backends under a local hub.

broadcaster 0.3.1 (its last release) keeps one unbounded queue per subscriber and its
Redis listener dies silently when the connection drops (upstream issue #144). We keep its
backend interface and its memory/Postgres backends, and put our own pieces where those
weaknesses are: a reconnecting Redis backend and a hub with bounded subscriber queues.
"""

from datadiver_graph.fanout.hub import RESYNC, EventHub, Item, SlowConsumer, Subscription

__all__ = ["RESYNC", "EventHub", "Item", "SlowConsumer", "Subscription"]
