"""Webhook delivery ids already handled, so a redelivered message changes nothing.

Svix gives every message one id (`svix-id`) and keeps it across retries. An id is
remembered only after its event was stored: a delivery that failed half-way is retried
and applied, never skipped. The TTL index in `db.INDEXES` forgets ids after a week, well
past Svix's retry window of about 27 hours.
"""

from __future__ import annotations

from datetime import UTC, datetime

from datadiver_graph import db
from datadiver_graph.store import Store


async def seen(store: Store, delivery_id: str) -> bool:
    doc = await store.db.collection(db.WEBHOOK_DELIVERIES).find_one(
        {"_id": delivery_id}, {"_id": 1}
    )
    return doc is not None


async def remember(store: Store, delivery_id: str, event_type: str) -> None:
    # An upsert: two concurrent deliveries of the same message both succeed here.
    await store.db.collection(db.WEBHOOK_DELIVERIES).update_one(
        {"_id": delivery_id},
        # A BSON date, not epoch ms: TTL indexes only expire dates.
        {"$setOnInsert": {"type": event_type, "receivedAt": datetime.now(UTC)}},
        upsert=True,
    )
