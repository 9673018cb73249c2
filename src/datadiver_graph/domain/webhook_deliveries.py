"""Webhook delivery ids already handled, so a redelivered message changes nothing.

Svix gives every message one id (`svix-id`) and keeps it across retries. An id is
remembered only after its event was stored: a delivery that failed half-way is retried
and applied, never skipped. The TTL index in `db.INDEXES` forgets ids after a week, well
past Svix's retry window of about 27 hours.

Also the delivery log (`log_delivery`): every delivery with its outcome and error, which
the console shows so an operator sees when Clerk stops delivering or deliveries fail.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pymongo import InsertOne, UpdateOne
from pymongo.errors import BulkWriteError

from datadiver_graph.domain.batching import Batcher
from datadiver_graph.domain.records import new_id
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


# -- the delivery log operators read (the console's webhook page) ---------------------------

# Outcomes of a delivery whose signature was not verified: anyone can cause them, so they are
# counted per minute and outcome (one row each) instead of one row per request.
UNVERIFIED_WINDOW_S = 60


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery as the webhook endpoint answered it; `error` is the reason it gave."""

    outcome: str
    status: int
    verified: bool
    svix_id: str | None = None
    event_type: str | None = None
    error: str | None = None


def _log_write(delivery: Delivery, now: datetime) -> InsertOne[Document] | UpdateOne:
    fields: Document = {
        "outcome": delivery.outcome,
        "status": delivery.status,
        "refused": delivery.status != 200,
        "error": delivery.error,
    }
    if delivery.verified:
        row_id = new_id()
        row = {"_id": row_id, "at": row_id, "svixId": delivery.svix_id}
        return InsertOne(
            {**row, "type": delivery.event_type, **fields, "receivedAt": now, "count": 1}
        )
    # One row per (minute, outcome).
    minute = int(now.timestamp()) // UNVERIFIED_WINDOW_S * UNVERIFIED_WINDOW_S
    row_id = f"{minute:08x}{hashlib.sha256(delivery.outcome.encode()).hexdigest()[:16]}"
    return UpdateOne(
        {"_id": row_id},
        {
            "$setOnInsert": {**fields, "svixId": None, "type": None, "receivedAt": now},
            # A fresh `at` each time: the row moves up to where its latest refusal belongs.
            "$set": {"at": new_id(), "lastAt": now, "lastSvixId": delivery.svix_id},
            "$inc": {"count": 1},
        },
        upsert=True,
    )


def _log_batcher(store: Store) -> Batcher[Delivery, None]:
    async def write(batch: list[Delivery]) -> list[None]:
        now = datetime.now(UTC)
        await store.db.collection(db.WEBHOOK_LOG).bulk_write(
            [_log_write(delivery, now) for delivery in batch], ordered=False
        )
        return [None] * len(batch)

    return Batcher(write)


async def log_delivery(store: Store, delivery: Delivery) -> None:
    """Add a delivery to the log (group-committed with concurrent ones). Call it after the
    answer went out: the log is for operators, Svix must not wait for it."""
    await store.batcher("webhook-log", _log_batcher).submit(delivery)
