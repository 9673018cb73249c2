"""Clerk Billing `subscription.*` / `subscriptionItem.*` payloads for tests.

Shapes follow `BillingSubscriptionWebhookEventJSON` and `BillingSubscriptionItemWebhookEventJSON`
in @clerk/backend: a subscription lists its items under `items`; an item event's `data` is the
item itself (with `payer`, and no back-reference to its subscription).
"""

from __future__ import annotations

import copy
from typing import Any

from tests.webhook_support import T0, USER_ID, envelope, money

SUB_ID = "csub_1"
ORG_ID = "org_2abc"
DAY = 24 * 3600 * 1000


def payer(user_id: str | None = USER_ID, org_id: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "object": "commerce_payer",
        "id": "cpayer_1",
        "instance_id": "ins_123",
        "email": "example@example.org",
        "image_url": "https://img.clerk.com/xxxxxx",
        "created_at": T0,
        "updated_at": T0,
    }
    if org_id is not None:
        data |= {"organization_id": org_id, "organization_name": "Acme"}
    elif user_id is not None:
        data |= {"user_id": user_id, "first_name": "Example", "last_name": "Example"}
    return data


PLANS: dict[str, dict[str, Any]] = {
    "free": {"id": "cplan_free", "name": "Free", "slug": "free_user", "amount": 0},
    "pro": {"id": "cplan_pro", "name": "Pro", "slug": "pro", "amount": 2000},
}


def plan(name: str) -> dict[str, Any]:
    base = PLANS[name]
    return {
        **base,
        "instance_id": "ins_123",
        "product_id": "cprod_1",
        "description": None,
        "is_default": base["amount"] == 0,
        "is_recurring": True,
        "period": "month",
        "interval": 1,
        "has_base_fee": base["amount"] > 0,
        "currency": "USD",
        "annual_monthly_amount": base["amount"],
        "publicly_visible": True,
    }


def item(
    item_id: str,
    status: str,
    plan_name: str,
    updated_at: int,
    *,
    period_start: int = T0,
    with_payer: dict[str, Any] | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "object": "commerce_subscription_item",
        "id": item_id,
        "status": status,
        "plan_id": PLANS[plan_name]["id"],
        "plan": plan(plan_name),
        "plan_period": "month",
        "period_start": period_start,
        "period_end": period_start + 30 * DAY,
        "canceled_at": updated_at if status == "canceled" else None,
        "past_due_at": updated_at if status == "past_due" else None,
        "amount": money(PLANS[plan_name]["amount"]),
        "lifetime_paid": 0,
        "next_payment_amount": PLANS[plan_name]["amount"],
        "next_payment_date": period_start + 30 * DAY,
        "created_at": T0,
        "updated_at": updated_at,
    }
    if with_payer is not None:
        data["payer"] = with_payer
    return data


def subscription(
    status: str,
    updated_at: int,
    items: list[dict[str, Any]],
    *,
    sub_id: str = SUB_ID,
    with_payer: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "object": "commerce_subscription",
        "id": sub_id,
        "status": status,
        "active_at": T0,
        "past_due_at": updated_at if status == "past_due" else None,
        "created_at": T0,
        "updated_at": updated_at,
        "latest_payment_id": "cpay_1",
        "payer_id": "cpayer_1",
        "payer": with_payer if with_payer is not None else payer(),
        "payment_source_id": "cps_1",
        "items": items,
    }


def sub_event(event_type: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return envelope(event_type, subscription(*args, **kwargs))


def item_event(
    event_type: str,
    *args: Any,
    with_payer: dict[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    return envelope(event_type, item(*args, with_payer=with_payer or payer(), **kwargs))


def at(step: int) -> int:
    return T0 + step


# A user's whole history, every event type once or more: start on the free default plan,
# abandon a checkout, upgrade to Pro (trial), fall past due, pay, cancel.
HISTORY: list[tuple[str, dict[str, Any], str, str | None]] = [
    # (svix id, payload, billingStatus after it, plan slug after it)
    (
        "msg_01",
        sub_event(
            "subscription.created",
            "active",
            at(100),
            [item("csubi_free", "active", "free", at(100))],
        ),
        "ACTIVE",
        "free_user",
    ),
    (
        "msg_02",
        item_event("subscriptionItem.incomplete", "csubi_pro_a", "incomplete", "pro", at(200)),
        "ACTIVE",
        "free_user",
    ),
    (
        "msg_03",
        item_event("subscriptionItem.abandoned", "csubi_pro_a", "abandoned", "pro", at(300)),
        "ACTIVE",
        "free_user",
    ),
    (
        "msg_04",
        item_event("subscriptionItem.incomplete", "csubi_pro", "incomplete", "pro", at(400)),
        "ACTIVE",
        "free_user",
    ),
    (
        "msg_05",
        item_event("subscriptionItem.active", "csubi_pro", "active", "pro", at(500)),
        "ACTIVE",
        "pro",
    ),
    (
        "msg_06",
        item_event("subscriptionItem.ended", "csubi_free", "ended", "free", at(510)),
        "ACTIVE",
        "pro",
    ),
    (
        "msg_07",
        sub_event(
            "subscription.updated",
            "active",
            at(520),
            [
                item("csubi_pro", "active", "pro", at(500)),
                item("csubi_free", "ended", "free", at(510)),
            ],
        ),
        "ACTIVE",
        "pro",
    ),
    (
        "msg_08",
        item_event("subscriptionItem.freeTrialEnding", "csubi_pro", "active", "pro", at(600)),
        "ACTIVE",
        "pro",
    ),
    (
        "msg_09",
        item_event(
            "subscriptionItem.updated",
            "csubi_pro",
            "active",
            "pro",
            at(700),
            period_start=T0 + 30 * DAY,
        ),
        "ACTIVE",
        "pro",
    ),
    (
        "msg_10",
        item_event("subscriptionItem.pastDue", "csubi_pro", "past_due", "pro", at(800)),
        "PAST_DUE",
        "pro",
    ),
    (
        "msg_11",
        sub_event(
            "subscription.pastDue",
            "past_due",
            at(800),
            [item("csubi_pro", "past_due", "pro", at(800))],
        ),
        "PAST_DUE",
        "pro",
    ),
    # The item is paid again, but the subscription still says past_due until its own event.
    (
        "msg_12",
        item_event("subscriptionItem.active", "csubi_pro", "active", "pro", at(900)),
        "PAST_DUE",
        "pro",
    ),
    (
        "msg_13",
        sub_event(
            "subscription.active", "active", at(900), [item("csubi_pro", "active", "pro", at(900))]
        ),
        "ACTIVE",
        "pro",
    ),
    (
        "msg_14",
        item_event("subscriptionItem.canceled", "csubi_pro", "canceled", "pro", at(1000)),
        "CANCELED",
        "pro",
    ),
    (
        "msg_15",
        item_event("subscriptionItem.upcoming", "csubi_free2", "upcoming", "free", at(1000)),
        "CANCELED",
        "pro",
    ),
    (
        "msg_16",
        sub_event(
            "subscription.updated",
            "active",
            at(1010),
            [
                item("csubi_pro", "canceled", "pro", at(1000)),
                item("csubi_free2", "upcoming", "free", at(1000)),
            ],
        ),
        "CANCELED",
        "pro",
    ),
]

FINAL_ITEMS = [("csubi_free2", "upcoming", "free_user"), ("csubi_pro", "canceled", "pro")]


def for_org(payload: dict[str, Any], org_id: str = ORG_ID) -> dict[str, Any]:
    """The same event with an organization as the payer."""
    changed = copy.deepcopy(payload)
    changed["data"]["payer"] = payer(org_id=org_id)
    return changed
