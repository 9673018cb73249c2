"""Payment attempts from Clerk Billing: stored as Clerk reports them, read by their payer."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from datadiver_graph.domain import events
from datadiver_graph.domain.clock import now_ms
from datadiver_graph.domain.ids import check_id
from datadiver_graph.domain.pagination import Page, newest_first
from datadiver_graph.domain.records import Metadata, Record, Timestamp, new_id
from datadiver_graph.domain.store import Store
from datadiver_graph.domain.versioned import ATTEMPTS

# Once Clerk has settled an attempt, a late "pending" delivery must not reopen it.
SETTLED = frozenset({"paid", "failed"})


class PaymentAttempt(Record):
    payment_id: str = Field(alias="payment_id", min_length=1, max_length=128)
    # None for an organization payer: stored, linked to no user.
    user_id: str | None = Field(default=None, max_length=128)
    status: str = Field(min_length=1, max_length=64)
    amount: int | None = None  # minor units (cents), from Clerk's totals
    currency: str | None = Field(default=None, max_length=16)
    metadata: Metadata = Field(default_factory=dict)
    created_at: Timestamp
    # Clerk Billing fields, kept with Clerk's names and shapes.
    payer: dict[str, Any] | None = Field(default=None, alias="payer")
    totals: dict[str, Any] | None = Field(default=None, alias="totals")
    subscription_items: list[Any] | None = Field(default=None, alias="subscription_items")
    payment_source: dict[str, Any] | None = Field(default=None, alias="payment_source")
    paid_at: Timestamp | None = Field(default=None, alias="paid_at")
    failed_at: Timestamp | None = Field(default=None, alias="failed_at")
    failed_reason: Any = Field(default=None, alias="failed_reason")
    charge_type: str | None = Field(default=None, alias="charge_type")
    billing_date: Timestamp | None = Field(default=None, alias="billing_date")
    updated_at: Timestamp | None = Field(default=None, alias="updated_at")


def channels(attempt: PaymentAttempt) -> tuple[str, ...]:
    return (events.payments_channel(attempt.user_id),) if attempt.user_id else ()


def _is_stale(stored: dict[str, Any], incoming: PaymentAttempt) -> bool:
    stored_at = stored.get("updated_at")
    if (
        stored_at is not None
        and incoming.updated_at is not None
        and incoming.updated_at < stored_at
    ):
        return True
    return stored.get("status") in SETTLED and incoming.status == "pending"


async def upsert_attempt(store: Store, attempt: PaymentAttempt) -> PaymentAttempt | None:
    """Insert or replace by payment_id, keeping the stored `_id` and `createdAt`.

    Returns None, writing and publishing nothing, when the delivery is older than what is
    stored (by Clerk's updated_at), would move a settled (paid/failed) attempt back to
    pending, or would change nothing (the same state delivered again).
    """
    collection = store.db.payment_attempts
    for _ in range(ATTEMPTS):
        stored = await collection.find_one({"payment_id": attempt.payment_id})
        if stored is None:
            doc = attempt.to_doc()
            result = await collection.update_one(
                {"payment_id": attempt.payment_id}, {"$setOnInsert": doc}, upsert=True
            )
            if result.upserted_id is None:
                continue  # another delivery inserted it first: compare against that one
            return await store.publish("payment.created", attempt, channels(attempt))
        if _is_stale(stored, attempt):
            return None
        version = stored.get("version", 1)
        same = attempt.model_copy(
            update={"id": stored["_id"], "version": version, "created_at": stored["createdAt"]}
        )
        if same.to_doc() == stored:
            return None
        replacement = same.model_copy(update={"version": version + 1})
        result = await collection.replace_one(
            {"payment_id": attempt.payment_id, "version": version}, replacement.to_doc()
        )
        if result.modified_count == 1:
            return await store.publish("payment.updated", replacement, channels(replacement))
    return None


def new_attempt(**fields: Any) -> PaymentAttempt:
    """Build an attempt with a fresh id and `createdAt` defaulting to now."""
    fields.setdefault("id", new_id())
    fields.setdefault("created_at", now_ms())
    return PaymentAttempt.model_validate(fields)


async def latest_for_user(store: Store, user_id: str) -> PaymentAttempt | None:
    doc = await store.db.payment_attempts.find_one(
        {"userId": check_id(user_id, "userId")}, sort=[("createdAt", -1), ("payment_id", -1)]
    )
    return PaymentAttempt.from_doc(doc) if doc else None


async def list_for_user(
    store: Store, user_id: str, *, first: int, after: str | None = None
) -> Page[PaymentAttempt]:
    query: dict[str, Any] = {"userId": check_id(user_id, "userId")}
    return await newest_first(
        store.db.payment_attempts,
        query,
        time_field="createdAt",
        key_field="payment_id",
        first=first,
        after=after,
        parse=PaymentAttempt.from_doc,
    )
