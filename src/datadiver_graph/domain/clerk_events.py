"""Clerk webhook events, already verified, mapped onto the domain functions.

Shapes follow Clerk's webhook payloads (`UserJSON`, `UserDeletedJSON`,
`BillingPaymentAttemptWebhookEventJSON`, ...): `{"type": ..., "data": ..., ...}`. Every field
Clerk documents as optional may be absent or null, and fields this service does not know are
ignored, so Clerk can add fields without breaking delivery.

What each type does:

- `user.created`, `user.updated`: `users.upsert_many_from_clerk` (ignores stale and
  post-delete deliveries by Clerk's `updated_at` and the user's tombstone), group-committed
  with the deliveries that arrive meanwhile (`domain.batching`): three round trips per batch.
- `user.deleted`: `users.delete_from_clerk` (sessions and payment attempts are kept).
- `paymentAttempt.created`, `paymentAttempt.updated`: `payments.upsert_attempt` (never goes
  back from paid/failed to pending, ignores older deliveries).
- `subscription.*`, `subscriptionItem.*`: `billing_events.record`, stored as received; then
  `billing.apply_clerk_event` folds the ones it knows into the payer's current subscription
  (ignoring older deliveries by Clerk's `updated_at`) and publishes the new state.
- anything else: acknowledged and ignored.
"""

from __future__ import annotations

import enum
import logging
import unicodedata
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from datadiver_graph.domain import (
    billing,
    billing_events,
    events,
    payments,
    users,
    webhook_deliveries,
)
from datadiver_graph.domain.batching import Batcher
from datadiver_graph.domain.clerk_values import as_int, as_object, as_text, as_timestamp
from datadiver_graph.domain.errors import InvalidInput
from datadiver_graph.domain.store import Store

log = logging.getLogger(__name__)

USER_UPSERTS = frozenset({"user.created", "user.updated"})
USER_DELETED = "user.deleted"
PAYMENT_ATTEMPTS = frozenset({"paymentAttempt.created", "paymentAttempt.updated"})

_MAX_EMAIL = 320
_MAX_IMAGE_URL = 2048
# Clerk identifiers of a payment attempt that are not among its modelled fields.
_ATTEMPT_METADATA = {
    "id": "attempt_id",
    "statement_id": "statement_id",
    "gateway_external_id": "gateway_external_id",
    "instance_id": "instance_id",
}


class Outcome(enum.StrEnum):
    APPLIED = "applied"
    STALE = "stale"  # older than what is stored, after a delete, or changing nothing
    DUPLICATE = "duplicate"  # this Svix message was handled before
    IGNORED = "ignored"  # an event type this service does not use


@dataclass(frozen=True, slots=True)
class ClerkEvent:
    type: str
    data: Any
    timestamp: int | None = None  # the envelope's epoch ms: when Clerk emitted the event


def parse_event(payload: Any) -> ClerkEvent:
    """The envelope: a JSON object with a string `type` and a `data` member."""
    if not isinstance(payload, dict):
        raise InvalidInput("payload must be a JSON object")
    event_type = payload.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise InvalidInput("payload lacks a string `type`")
    if "data" not in payload:
        raise InvalidInput("payload lacks `data`")
    return ClerkEvent(
        type=event_type, data=payload["data"], timestamp=as_timestamp(payload.get("timestamp"))
    )


def is_handled(event_type: str) -> bool:
    return (
        event_type in USER_UPSERTS
        or event_type == USER_DELETED
        or event_type in PAYMENT_ATTEMPTS
        or billing_events.is_billing_event(event_type)
    )


def _data_object(event: ClerkEvent) -> dict[str, Any]:
    data = as_object(event.data)
    if data is None:
        raise InvalidInput(f"{event.type}: `data` must be a JSON object")
    return data


def _full_name(first: Any, last: Any) -> str | None:
    """First and last name; either may be null or empty (never the text "null").

    Whitespace runs and control characters become one space, as `users.update` would
    refuse a name containing them; the result fits `users.MAX_NAME_LENGTH`.
    """
    text = " ".join(part for part in (first, last) if isinstance(part, str))
    if not text.isprintable():  # rare: only then look for control characters, one by one
        text = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text)
    name = " ".join(text.split())[: users.MAX_NAME_LENGTH].strip()
    return name or None


def _primary_email(data: dict[str, Any]) -> str | None:
    """The address whose `id` is `primary_email_address_id`: not simply the first one."""
    primary = as_text(data.get("primary_email_address_id"))
    addresses = data.get("email_addresses")
    if primary is None or not isinstance(addresses, list):
        return None
    for entry in addresses:
        if isinstance(entry, dict) and entry.get("id") == primary:
            email = as_text(entry.get("email_address"))
            return email if email is not None and len(email) <= _MAX_EMAIL else None
    return None


def profile_from_user(data: dict[str, Any]) -> users.ClerkProfile:
    """A Clerk `UserJSON` reduced to what `users` keeps."""
    external_id = as_text(data.get("id"))
    if external_id is None:
        raise InvalidInput("user event: `data.id` must be a non-empty string")
    image_url = as_text(data.get("image_url"))
    return users.ClerkProfile(
        external_id=external_id,
        name=_full_name(data.get("first_name"), data.get("last_name")),
        email=_primary_email(data),
        image_url=image_url if image_url is not None and len(image_url) <= _MAX_IMAGE_URL else None,
        created_at=as_timestamp(data.get("created_at")),
        updated_at=as_timestamp(data.get("updated_at")),
    )


def attempt_from_payment(data: dict[str, Any]) -> payments.PaymentAttempt:
    """A Clerk `BillingPaymentAttemptWebhookEventJSON` as a stored attempt.

    Keyed by Clerk's `payment_id`, or the attempt's `id` when a payload has no `payment_id`.
    Linked to `payer.user_id`: an organization payer has none and is stored unlinked.
    Clerk's own fields are kept as sent; the attempt's `id`, `statement_id`,
    `gateway_external_id` and `instance_id` go into `metadata`.
    """
    payment_id = as_text(data.get("payment_id")) or as_text(data.get("id"))
    if payment_id is None:
        raise InvalidInput("paymentAttempt event: `data` has neither `payment_id` nor `id`")
    status = as_text(data.get("status"))
    if status is None:
        raise InvalidInput("paymentAttempt event: `data.status` must be a non-empty string")
    payer = as_object(data.get("payer"))
    totals = as_object(data.get("totals"))
    grand_total = as_object(totals.get("grand_total")) if totals else None
    items = data.get("subscription_items")
    fields: dict[str, Any] = {
        "payment_id": payment_id,
        "user_id": as_text(payer.get("user_id")) if payer else None,
        "status": status,
        "amount": as_int(grand_total.get("amount")) if grand_total else None,
        "currency": as_text(grand_total.get("currency")) if grand_total else None,
        "metadata": {
            name: data[key] for key, name in _ATTEMPT_METADATA.items() if as_text(data.get(key))
        },
        "payer": payer,
        "totals": totals,
        "subscription_items": items if isinstance(items, list) else None,
        "payment_source": as_object(data.get("payment_source")),
        "paid_at": as_timestamp(data.get("paid_at")),
        "failed_at": as_timestamp(data.get("failed_at")),
        "failed_reason": data.get("failed_reason"),
        "charge_type": as_text(data.get("charge_type")),
        "billing_date": as_timestamp(data.get("billing_date")),
        "updated_at": as_timestamp(data.get("updated_at")),
    }
    created_at = as_timestamp(data.get("created_at"))
    if created_at is not None:
        fields["created_at"] = created_at
    try:
        return payments.new_attempt(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "data"
        raise InvalidInput(f"paymentAttempt event: {where}: {first['msg']}") from None


def billing_event_from(event: ClerkEvent, delivery_id: str) -> billing_events.BillingEvent:
    """Any `subscription.*` / `subscriptionItem.*` payload, whatever its shape."""
    data = as_object(event.data) or {}
    payer = as_object(data.get("payer"))
    return billing_events.new_event(
        type=event.type,
        data=event.data,
        svix_id=delivery_id,
        clerk_updated_at=as_timestamp(data.get("updated_at")),
        object_id=as_text(data.get("id")),
        user_id=as_text(payer.get("user_id")) if payer else None,
    )


async def apply(store: Store, event: ClerkEvent, delivery_id: str) -> Outcome:
    """Store one event through its domain function (which publishes the change)."""
    if event.type in USER_UPSERTS:
        profile = profile_from_user(_data_object(event))
        stored = await users.upsert_from_clerk(store, profile)
        return Outcome.APPLIED if stored is not None else Outcome.STALE
    if event.type == USER_DELETED:
        external_id = as_text(_data_object(event).get("id"))
        if external_id is None:
            raise InvalidInput("user.deleted: `data.id` must be a non-empty string")
        await users.delete_from_clerk(store, external_id)  # the tombstone is written always
        return Outcome.APPLIED
    if event.type in PAYMENT_ATTEMPTS:
        attempt = attempt_from_payment(_data_object(event))
        stored_attempt = await payments.upsert_attempt(store, attempt)
        return Outcome.APPLIED if stored_attempt is not None else Outcome.STALE
    if billing_events.is_billing_event(event.type):
        recorded = await billing_events.record(store, billing_event_from(event, delivery_id))
        # Also when the raw event was stored before: a retry after a failure part way. Storing
        # the raw event is itself "applied", even when the derived state was newer already.
        change = await billing.apply_clerk_event(store, event.type, event.data, event.timestamp)
        applied = recorded is not None or change is billing.Change.CHANGED
        return Outcome.APPLIED if applied else Outcome.DUPLICATE
    log.info("clerk webhook: ignoring event type %r", event.type[:100])
    return Outcome.IGNORED


async def handle_delivery(store: Store, delivery_id: str, payload: Any) -> Outcome:
    """One verified delivery: apply it unless its Svix id was handled, then remember the id.

    The id is remembered only after the event was stored, so a delivery that fails part way
    is retried by Svix and applied then; applying twice is harmless (every path above is
    idempotent), skipping would not be. Unknown types touch no database.
    """
    event = parse_event(payload)
    if not is_handled(event.type):
        return await apply(store, event, delivery_id)
    if event.type in USER_UPSERTS:
        # The bulk of Clerk's traffic: group-committed with concurrent deliveries.
        profile = profile_from_user(_data_object(event))
        batch = store.batcher("clerk-user-upserts", _user_upserts)
        return await batch.submit(_UserDelivery(delivery_id, event.type, profile))
    if await webhook_deliveries.seen(store, delivery_id):
        return Outcome.DUPLICATE
    outcome = await apply(store, event, delivery_id)
    await webhook_deliveries.remember(store, delivery_id, event.type)
    return outcome


@dataclass(frozen=True, slots=True)
class _UserDelivery:
    delivery_id: str
    event_type: str
    profile: users.ClerkProfile


def _user_upserts(store: Store) -> Batcher[_UserDelivery, Outcome]:
    """`handle_delivery` for many `user.created`/`user.updated` deliveries at once.

    The same steps in the same order, three round trips for the whole batch: one read (which
    ids were handled, each user and its tombstone), the upserts (`users.upsert_many_from_clerk`,
    which publishes), then remember the ids. Concurrent deliveries for one user go in
    successive batches.
    """

    async def deliver(batch: list[_UserDelivery]) -> list[Outcome]:
        events.change_source.set("webhook")  # the batch's own context: its changes' source
        # One read for the batch: which ids were handled, each user and its tombstone.
        rows = await store.db.look_up(
            [{"deliveryId": d.delivery_id, "externalId": d.profile.external_id} for d in batch],
            webhook_deliveries.handled_lookup("deliveryId"),
            *users.stored_lookups("externalId"),
        )
        outcomes = [Outcome.DUPLICATE] * len(batch)
        handled: set[str] = set()  # a second copy of an id in this batch is a duplicate too
        fresh: dict[int, tuple[_UserDelivery, dict[str, Any]]] = {}
        for i, (delivery, row) in enumerate(zip(batch, rows, strict=True)):
            if not row["handled"] and delivery.delivery_id not in handled:
                handled.add(delivery.delivery_id)
                fresh[i] = (delivery, row)
        if not fresh:
            return outcomes
        written = await users.upsert_many_from_clerk(
            store, [d.profile for d, _ in fresh.values()], [row for _, row in fresh.values()]
        )
        await webhook_deliveries.remember_all(
            store, [(d.delivery_id, d.event_type) for d, _ in fresh.values()]
        )
        for i, user in zip(fresh, written, strict=True):
            outcomes[i] = Outcome.STALE if user is None else Outcome.APPLIED
        return outcomes

    return Batcher(deliver, key=lambda delivery: delivery.profile.external_id)
