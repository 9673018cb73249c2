"""Clerk Billing `subscription.*` and `subscriptionItem.*` events, kept exactly as received.

One document per delivery in `billingEvents`: the event type, Clerk's `data` untouched, the
Svix message id, when it arrived, and the few keys a reader needs to find and order events
(Clerk's `updated_at`, the object's `id`, the payer's user id). Subscription status is
derived from these later; nothing here interprets them, so no shape Clerk sends can fail.

No event is published: no channel carries raw billing events (ARCHITECTURE.md lists the
channels), and no subscriber could use one. `billing` derives each payer's subscription
state from the same deliveries and publishes that.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from bson.errors import InvalidDocument
from pydantic import Field

from datadiver_graph.domain.clock import now_ms
from datadiver_graph.domain.records import Record, Timestamp, new_id
from datadiver_graph.domain.store import Store
from datadiver_graph.storage import mongo as db

log = logging.getLogger(__name__)

PREFIXES = ("subscription.", "subscriptionItem.")


class BillingEvent(Record):
    type: str = Field(min_length=1, max_length=128)
    # Clerk's `data` as sent; `None` with `data_json` set when BSON cannot hold it as is
    # (a key with NUL, say): then the exact JSON text is kept instead.
    data: Any = None
    data_json: str | None = None
    svix_id: str = Field(min_length=1, max_length=256)
    received_at: Timestamp
    clerk_updated_at: Timestamp | None = None
    object_id: str | None = None
    user_id: str | None = None


def is_billing_event(event_type: str) -> bool:
    return event_type.startswith(PREFIXES)


def new_event(**fields: Any) -> BillingEvent:
    """Build an event with a fresh id and `receivedAt` defaulting to now."""
    fields.setdefault("id", new_id())
    fields.setdefault("received_at", now_ms())
    return BillingEvent.model_validate(fields)


async def record(store: Store, event: BillingEvent) -> BillingEvent | None:
    """Store one delivery. Returns None when this Svix message was stored before."""
    collection = store.db.collection(db.BILLING_EVENTS)
    try:
        result = await collection.update_one(
            {"svixId": event.svix_id}, {"$setOnInsert": event.to_doc()}, upsert=True
        )
    except InvalidDocument:
        log.warning("billing event %s: data is not storable as BSON; keeping its JSON", event.type)
        as_text = orjson.dumps(event.data).decode()
        event = event.model_copy(update={"data": None, "data_json": as_text})
        result = await collection.update_one(
            {"svixId": event.svix_id}, {"$setOnInsert": event.to_doc()}, upsert=True
        )
    return event if result.upserted_id is not None else None
