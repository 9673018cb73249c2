"""Webhook delivery ids already handled, so a redelivered message changes nothing.

Svix gives every message one id (`svix-id`) and keeps it across retries. An id is
remembered only after its event was stored: a delivery that failed half-way is retried
and applied, never skipped. The TTL index in `db.INDEXES` forgets ids after a week, well
past Svix's retry window of about 27 hours.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from pymongo.errors import BulkWriteError

from datadiver_graph.domain.store import Store
from datadiver_graph.storage import mongo as db
from datadiver_graph.storage.mongo import Document


async def seen(store: Store, delivery_id: str) -> bool:
    doc = await store.db.collection(db.WEBHOOK_DELIVERIES).find_one(
        {"_id": delivery_id}, {"_id": 1}
    )
    return doc is not None


def handled_lookup(delivery_id_field: str) -> Document:
    """A `$lookup` stage adding `handled` (non-empty when handled before) to rows that name
    a delivery id in `delivery_id_field` (`Database.look_up`)."""
    return {
        "$lookup": {
            "from": db.WEBHOOK_DELIVERIES,
            "localField": delivery_id_field,
            "foreignField": "_id",
            "as": "handled",
        }
    }


async def remember(store: Store, delivery_id: str, event_type: str) -> None:
    await remember_all(store, [(delivery_id, event_type)])


async def remember_all(store: Store, deliveries: Sequence[tuple[str, str]]) -> None:
    """Remember (delivery id, event type) pairs: one round trip for any number."""
    received_at = datetime.now(UTC)  # a BSON date, not epoch ms: TTL indexes only expire dates
    try:
        await store.db.collection(db.WEBHOOK_DELIVERIES).insert_many(
            [{"_id": id_, "type": type_, "receivedAt": received_at} for id_, type_ in deliveries],
            ordered=False,
        )
    except BulkWriteError as exc:
        # An id remembered already (two deliveries of one message at once) is not a failure.
        if db.duplicate_key_errors(exc) is None:
            raise
