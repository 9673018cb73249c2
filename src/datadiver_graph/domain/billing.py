"""Clerk Billing subscriptions: per payer, the subscription and its items as Clerk last reported.

One document per payer in `billingSubscriptions` (unique `payerKey`: `user:{user_id}`, or
`org:{organization_id}` when an organization pays; an organization payer is linked to no
user). It holds the subscription's id and status and each item's id, status, plan, period
and the Clerk `updated_at` it carried. `subscription.*` and `subscriptionItem.*` webhooks
feed it (`apply_clerk_event`); the raw events are kept apart by `billing_events`.

Order rules (deliveries arrive in any order, and a redelivery changes nothing):

- The subscription's id and status change only for a delivery whose `updated_at` is newer
  than the stored one.
- An item changes only for a snapshot newer than the stored item. A snapshot is an item
  event, or an item listed in a subscription event (as of the item's own `updated_at`,
  else the subscription's). An item event may arrive before its subscription event.
- `itemsAsOf` is the `updated_at` of the newest subscription event that listed items: that
  list is the item set as of then. Such a list drops stored items it does not name unless
  they are newer than it; an item it does not name comes back only with a snapshot newer
  than it. An older list updates the items it names only where it is newer, and adds or
  drops nothing.
- "Newer" compares Clerk's `updated_at` (falling back to the envelope's `timestamp`); an
  undated snapshot replaces only an undated one.

Derived status (`derive`), what the frontend reads as `billingStatus` and `plan`:

1. no stored subscription: NONE.
2. the subscription is `past_due`, or any item is: PAST_DUE.
3. any item is `active`: ACTIVE. The free default plan counts: a user on it is ACTIVE with
   that plan (`plan.isDefault` is true, `amount` 0), so a paid plan is told apart by plan.
4. any item is `canceled`, `ended` or `expired`: CANCELED.
5. no items known yet: from the subscription's own status (active -> ACTIVE; canceled,
   ended, expired -> CANCELED).
6. otherwise (only upcoming, incomplete or abandoned items): NONE.

`plan` is the plan in force now: of an `active` item (a paid plan before the free default,
then the latest period start), else of a `past_due` item, else of a `canceled` one (Clerk
keeps a canceled item's features until its period ends, then sends `ended`); else null.

Plan features (`Plan.features`, `has_feature`): Clerk's Backend API plan carries `features`
(`{id, name, slug, description, avatar_url}` each; `BillingPlanJSON` in @clerk/backend); the
webhook item's `plan` is typed without them, so they are read wherever a payload has them.
`features` is None when Clerk sent none (records stored before features were kept, too);
an item whose plan comes without them keeps the features already stored for that plan id,
so only a payload that lists them (an empty list included) changes them.

Each change is published, with the whole stored document, on `billing:{userId}` (user
payers only).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from datadiver_graph.domain import events
from datadiver_graph.domain.clerk_values import as_int, as_object, as_text, as_timestamp
from datadiver_graph.domain.clock import now_ms
from datadiver_graph.domain.errors import Conflict
from datadiver_graph.domain.ids import check_id
from datadiver_graph.domain.records import Record, Timestamp, new_id
from datadiver_graph.domain.store import Store
from datadiver_graph.domain.versioned import ATTEMPTS
from datadiver_graph.storage import mongo as db

log = logging.getLogger(__name__)

SUBSCRIPTION_EVENTS = frozenset(
    {"subscription.created", "subscription.updated", "subscription.active", "subscription.pastDue"}
)
ITEM_EVENTS = frozenset(
    {
        "subscriptionItem.created",
        "subscriptionItem.updated",
        "subscriptionItem.active",
        "subscriptionItem.canceled",
        "subscriptionItem.upcoming",
        "subscriptionItem.ended",
        "subscriptionItem.expired",
        "subscriptionItem.abandoned",
        "subscriptionItem.incomplete",
        "subscriptionItem.pastDue",
        "subscriptionItem.freeTrialEnding",
    }
)
# The status an event's name implies, used only when `data.status` is absent.
_STATUS_OF_EVENT = {
    "active": "active",
    "pastDue": "past_due",
    "canceled": "canceled",
    "upcoming": "upcoming",
    "ended": "ended",
    "expired": "expired",
    "abandoned": "abandoned",
    "incomplete": "incomplete",
}
_MAX_TEXT = 256
_MAX_DESCRIPTION = 2048
_MAX_FEATURES = 256


class BillingStatus(enum.StrEnum):
    ACTIVE = "ACTIVE"
    PAST_DUE = "PAST_DUE"
    CANCELED = "CANCELED"
    NONE = "NONE"


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )


class Feature(_Model):
    """One entitlement of a plan: what Clerk's `has({ feature })` checks, by `slug`."""

    id: str | None = None
    slug: str = Field(min_length=1, max_length=_MAX_TEXT)
    name: str | None = None
    description: str | None = None


class Plan(_Model):
    id: str | None = None
    name: str | None = None
    slug: str | None = None
    amount: int | None = None  # minor units (cents) per period
    currency: str | None = None
    period: str | None = None  # "month" | "annual"
    is_default: bool | None = None  # Clerk's free default plan
    # None: Clerk has not told us (see the module docstring); [] : a plan with no features.
    features: list[Feature] | None = None


class Item(_Model):
    id: str = Field(min_length=1, max_length=_MAX_TEXT)
    status: str | None = None
    plan: Plan | None = None
    plan_period: str | None = None
    period_start: Timestamp | None = None
    period_end: Timestamp | None = None
    canceled_at: Timestamp | None = None
    past_due_at: Timestamp | None = None
    # Clerk's updated_at for this item (or the subscription's, when listed without one).
    updated_at: Timestamp | None = None


class BillingSubscription(Record):
    payer_key: str = Field(min_length=1)
    user_id: str | None = None
    organization_id: str | None = None
    subscription_id: str | None = None
    status: str | None = None
    # Clerk's updated_at of the subscription fields above.
    subscription_updated_at: Timestamp | None = None
    items_as_of: Timestamp | None = None
    items: list[Item] = Field(default_factory=list)
    created_at: Timestamp
    updated_at: Timestamp


@dataclass(frozen=True, slots=True)
class Payer:
    user_id: str | None
    organization_id: str | None

    @property
    def key(self) -> str:
        if self.organization_id is not None:
            return f"org:{self.organization_id}"
        return f"user:{self.user_id}"


@dataclass(frozen=True, slots=True)
class SubscriptionSnapshot:
    payer: Payer
    subscription_id: str | None
    status: str | None
    updated_at: int | None
    items: tuple[Item, ...] | None  # None: the event did not list items


@dataclass(frozen=True, slots=True)
class ItemSnapshot:
    payer: Payer | None
    item: Item


class Change(enum.Enum):
    CHANGED = "changed"
    UNCHANGED = "unchanged"  # stale or the same state again
    NOT_APPLICABLE = "not_applicable"  # nothing to place: no payer, unknown shape


# ---- state derivation --------------------------------------------------------------------

_CANCELED = frozenset({"canceled", "ended", "expired"})


def current_item(items: list[Item]) -> Item | None:
    """The item whose plan is in force now (see `plan` in the module docstring)."""
    for status in ("active", "past_due", "canceled"):
        found = [item for item in items if item.status == status]
        if found:
            found.sort(
                key=lambda i: (
                    not (i.plan is not None and i.plan.is_default),
                    i.period_start or 0,
                    i.id,
                ),
                reverse=True,
            )
            return found[0]
    return None


def derive(subscription: BillingSubscription | None) -> tuple[BillingStatus, Plan | None]:
    """The billing status and the plan in force now (rules in the module docstring)."""
    if subscription is None:
        return BillingStatus.NONE, None
    items = subscription.items
    statuses = {item.status for item in items}
    current = current_item(items)
    plan = current.plan if current is not None else None
    if subscription.status == "past_due" or "past_due" in statuses:
        return BillingStatus.PAST_DUE, plan
    if "active" in statuses:
        return BillingStatus.ACTIVE, plan
    if statuses & _CANCELED:
        return BillingStatus.CANCELED, plan
    if not items and subscription.status == "active":
        return BillingStatus.ACTIVE, plan
    if not items and subscription.status in _CANCELED:
        return BillingStatus.CANCELED, plan
    return BillingStatus.NONE, plan


_ORG_SCOPES = frozenset({"o", "org", "organization"})
_USER_SCOPES = frozenset({"u", "user"})


def has_feature(subscription: BillingSubscription | None, feature: str, *, now: int) -> bool:
    """Whether the user's plan in force grants `feature`, as Clerk's `has({ feature })` answers.

    - The plan is `derive`'s: an active item's, else a past-due one's (access is kept while
      Clerk retries the charge, as `plan` shows), else a canceled one's while its paid
      period lasts (`period_end` still ahead of `now`; Clerk then sends `ended`, but a late
      delivery must not extend access). No subscription, only ended/expired/upcoming items,
      or a plan whose features Clerk has not sent: False (Clerk fails closed on missing data).
    - `feature` is a slug, optionally scoped as `has()` takes it: `user:`/`u:` is this plan;
      `org:`/`o:`/`organization:` is an organization's plan, which a user record never holds
      (False); any other scope is invalid (False, where `has()` fails too).
    """
    # Split as has() does: "a:b:c" is scope "a", slug "b"; "user:" asks for slug "user".
    parts = feature.split(":")
    slug = (parts[1] or parts[0]) if len(parts) > 1 else feature
    if len(parts) > 1 and parts[0] not in _USER_SCOPES:
        return False
    item = current_item(subscription.items) if subscription is not None else None
    if item is None or item.plan is None or not item.plan.features:
        return False
    if item.status == "canceled" and item.period_end is not None and item.period_end <= now:
        return False
    return any(known.slug == slug for known in item.plan.features)


# ---- merging (pure) ----------------------------------------------------------------------


def _newer(incoming: int | None, stored: int | None) -> bool:
    if incoming is None:
        return stored is None
    return stored is None or incoming > stored


def _sorted(items: dict[str, Item]) -> list[Item]:
    return [items[key] for key in sorted(items)]


def _put_item(
    items: dict[str, Item], item: Item, items_as_of: int | None, *, from_newest_list: bool
) -> None:
    """Store `item` if newer than the stored one; a new item joins if the newest list names
    it, or if it is newer than that list (`items_as_of`)."""
    stored = items.get(item.id)
    if stored is not None:
        if _newer(item.updated_at, stored.updated_at):
            items[item.id] = item
        return
    if (
        from_newest_list
        or items_as_of is None
        or (item.updated_at is not None and item.updated_at > items_as_of)
    ):
        items[item.id] = item


def _known_features(items: list[Item]) -> dict[str, list[Feature]]:
    return {
        item.plan.id: item.plan.features
        for item in items
        if item.plan is not None and item.plan.id is not None and item.plan.features is not None
    }


def _keeping_features(item: Item, known: dict[str, list[Feature]]) -> Item:
    """`item`, its plan given the features stored for the same plan when it came without."""
    plan = item.plan
    if plan is None or plan.features is not None or plan.id not in known:
        return item
    return item.model_copy(update={"plan": plan.model_copy(update={"features": known[plan.id]})})


def merge_subscription(
    current: BillingSubscription, snapshot: SubscriptionSnapshot
) -> BillingSubscription:
    fields: dict[str, Any] = {}
    if _newer(snapshot.updated_at, current.subscription_updated_at):
        fields |= {
            "subscription_id": snapshot.subscription_id,
            "status": snapshot.status,
            "subscription_updated_at": snapshot.updated_at,
        }
    if snapshot.items is not None:
        items = {item.id: item for item in current.items}
        as_of = snapshot.updated_at
        newest_list = as_of is not None and (
            current.items_as_of is None or as_of >= current.items_as_of
        )
        if newest_list:
            assert as_of is not None
            listed = {item.id for item in snapshot.items}
            for item_id in [i for i in items if i not in listed]:
                kept = items[item_id].updated_at
                if kept is None or kept <= as_of:
                    del items[item_id]
        known = _known_features(current.items)
        for item in snapshot.items:
            dated = _keeping_features(
                item
                if item.updated_at is not None
                else item.model_copy(update={"updated_at": as_of}),
                known,
            )
            _put_item(items, dated, current.items_as_of, from_newest_list=newest_list)
        fields["items"] = _sorted(items)
        if newest_list:
            fields["items_as_of"] = as_of
    return current.model_copy(update=fields)


def merge_item(current: BillingSubscription, snapshot: ItemSnapshot) -> BillingSubscription:
    items = {item.id: item for item in current.items}
    incoming = _keeping_features(snapshot.item, _known_features(current.items))
    _put_item(items, incoming, current.items_as_of, from_newest_list=False)
    return current.model_copy(update={"items": _sorted(items)})


def _empty(payer: Payer, now: int) -> BillingSubscription:
    return BillingSubscription(
        id=new_id(),
        version=1,
        payer_key=payer.key,
        user_id=payer.user_id if payer.organization_id is None else None,
        organization_id=payer.organization_id,
        created_at=now,
        updated_at=now,
    )


def _same_state(a: BillingSubscription, b: BillingSubscription) -> bool:
    ignore = {"version", "updated_at"}
    return a.model_dump(exclude=ignore) == b.model_dump(exclude=ignore)


# ---- reading and writing -----------------------------------------------------------------


def channels(subscription: BillingSubscription) -> tuple[str, ...]:
    return (events.billing_channel(subscription.user_id),) if subscription.user_id else ()


def _collection(store: Store) -> AsyncCollection[db.Document]:
    return store.db.collection(db.BILLING_SUBSCRIPTIONS)


async def get_for_user(store: Store, user_id: str) -> BillingSubscription | None:
    """The user's own subscription (not an organization's they belong to)."""
    check_id(user_id, "userId")
    doc = await _collection(store).find_one({"payerKey": Payer(user_id, None).key})
    return BillingSubscription.from_doc(doc) if doc else None


async def _write(
    store: Store,
    where: dict[str, Any],
    payer: Payer | None,
    merge: Callable[[BillingSubscription], BillingSubscription],
) -> tuple[Change, BillingSubscription | None]:
    """Read, merge, write back on the read `version`; retry when another writer won."""
    collection = _collection(store)
    for _ in range(ATTEMPTS):
        doc = await collection.find_one(where)
        now = now_ms()
        if doc is None:
            if payer is None:
                return Change.NOT_APPLICABLE, None
            current = _empty(payer, now)
        else:
            current = BillingSubscription.from_doc(doc)
        merged = merge(current)
        if doc is not None and _same_state(merged, current):
            return Change.UNCHANGED, current
        if doc is None:
            if _same_state(merged, current):
                return Change.UNCHANGED, None
            try:
                await collection.insert_one(merged.to_doc())
            except DuplicateKeyError:
                continue  # another delivery created it first: merge into that one
            stored = merged
        else:
            stored = merged.model_copy(update={"version": current.version + 1, "updated_at": now})
            result = await collection.replace_one(
                {"_id": current.id, "version": current.version}, stored.to_doc()
            )
            if result.modified_count != 1:
                continue
        await store.publish("billing.updated", stored, channels(stored))
        return Change.CHANGED, stored
    raise Conflict("billing subscription is being changed by others; try again")


async def apply_subscription(
    store: Store, snapshot: SubscriptionSnapshot
) -> tuple[Change, BillingSubscription | None]:
    return await _write(
        store,
        {"payerKey": snapshot.payer.key},
        snapshot.payer,
        lambda current: merge_subscription(current, snapshot),
    )


async def apply_item(
    store: Store, snapshot: ItemSnapshot
) -> tuple[Change, BillingSubscription | None]:
    """An item event. Without a payer it goes to whichever payer already lists the item."""
    where = (
        {"payerKey": snapshot.payer.key}
        if snapshot.payer is not None
        else {"items.id": snapshot.item.id}
    )
    return await _write(store, where, snapshot.payer, lambda current: merge_item(current, snapshot))


# ---- Clerk payloads ----------------------------------------------------------------------


def _text(value: Any) -> str | None:
    return as_text(value, _MAX_TEXT)


def payer_from(data: dict[str, Any]) -> Payer | None:
    payer = as_object(data.get("payer"))
    if payer is None:
        return None
    user_id = _text(payer.get("user_id"))
    organization_id = _text(payer.get("organization_id"))
    if user_id is None and organization_id is None:
        return None
    return Payer(user_id=user_id, organization_id=organization_id)


def _feature_from(data: Any) -> Feature | None:
    feature = as_object(data)
    slug = _text(feature.get("slug")) if feature is not None else None
    if feature is None or slug is None:
        return None
    return Feature(
        id=_text(feature.get("id")),
        slug=slug,
        name=_text(feature.get("name")),
        description=as_text(feature.get("description"), _MAX_DESCRIPTION),
    )


def features_from(value: Any) -> list[Feature] | None:
    """A plan's `features` list; None when absent or not a list (unknown, not "none")."""
    if not isinstance(value, list):
        return None
    found = (_feature_from(entry) for entry in value[:_MAX_FEATURES])
    return [feature for feature in found if feature is not None]


def plan_from(data: dict[str, Any]) -> Plan | None:
    """The item's `plan` (webhook shape: `amount`; API shape: `fee.amount`)."""
    plan = as_object(data.get("plan"))
    if plan is None:
        plan_id = _text(data.get("plan_id"))
        return Plan(id=plan_id, period=_text(data.get("plan_period"))) if plan_id else None
    fee = as_object(plan.get("fee")) or {}
    amount = as_int(plan.get("amount"))
    is_default = plan.get("is_default")
    return Plan(
        id=_text(plan.get("id")) or _text(data.get("plan_id")),
        name=_text(plan.get("name")),
        slug=_text(plan.get("slug")),
        amount=amount if amount is not None else as_int(fee.get("amount")),
        currency=_text(plan.get("currency")) or _text(fee.get("currency")),
        period=_text(data.get("plan_period")) or _text(plan.get("period")),
        is_default=is_default if isinstance(is_default, bool) else None,
        features=features_from(plan.get("features")),
    )


def item_from(
    data: dict[str, Any], *, event_type: str | None = None, fallback_at: int | None = None
) -> Item | None:
    item_id = _text(data.get("id"))
    if item_id is None:
        return None
    status = _text(data.get("status"))
    if status is None and event_type is not None:
        status = _STATUS_OF_EVENT.get(event_type.partition(".")[2])
    updated_at = as_timestamp(data.get("updated_at"))
    return Item(
        id=item_id,
        status=status,
        plan=plan_from(data),
        plan_period=_text(data.get("plan_period")),
        period_start=as_timestamp(data.get("period_start")),
        period_end=as_timestamp(data.get("period_end")),
        canceled_at=as_timestamp(data.get("canceled_at")),
        past_due_at=as_timestamp(data.get("past_due_at")),
        updated_at=updated_at if updated_at is not None else fallback_at,
    )


def subscription_from(
    event_type: str, data: dict[str, Any], event_timestamp: int | None
) -> SubscriptionSnapshot | None:
    payer = payer_from(data)
    if payer is None:
        return None
    status = _text(data.get("status")) or _STATUS_OF_EVENT.get(event_type.partition(".")[2])
    updated_at = as_timestamp(data.get("updated_at"))
    if updated_at is None:
        updated_at = event_timestamp
    listed = data.get("items")
    if listed is None:
        listed = data.get("subscription_items")
    items: tuple[Item, ...] | None = None
    if isinstance(listed, list):
        found = [item_from(entry) for entry in listed if isinstance(entry, dict)]
        items = tuple(item for item in found if item is not None)
    return SubscriptionSnapshot(
        payer=payer,
        subscription_id=_text(data.get("id")),
        status=status,
        updated_at=updated_at,
        items=items,
    )


def is_projected(event_type: str) -> bool:
    return event_type in SUBSCRIPTION_EVENTS or event_type in ITEM_EVENTS


async def apply_clerk_event(
    store: Store, event_type: str, data: Any, event_timestamp: int | None = None
) -> Change:
    """Fold one `subscription.*` / `subscriptionItem.*` payload into the payer's state.

    Shapes this cannot place (no payer and no known item, no id, not an object) are
    NOT_APPLICABLE: the raw event is still kept by `billing_events`.
    """
    body = as_object(data)
    if body is None or not is_projected(event_type):
        return Change.NOT_APPLICABLE
    if event_type in SUBSCRIPTION_EVENTS:
        snapshot = subscription_from(event_type, body, event_timestamp)
        if snapshot is None:
            log.info("billing %s: no payer; kept as a raw event only", event_type)
            return Change.NOT_APPLICABLE
        change, _ = await apply_subscription(store, snapshot)
        return change
    item = item_from(body, event_type=event_type, fallback_at=event_timestamp)
    if item is None:
        return Change.NOT_APPLICABLE
    change, _ = await apply_item(store, ItemSnapshot(payer=payer_from(body), item=item))
    if change is Change.NOT_APPLICABLE:
        log.info("billing %s: no payer and unknown item; kept as a raw event only", event_type)
    return change
