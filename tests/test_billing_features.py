"""Plan features and `User.hasFeature` (issue 18): each billing state through the API, fed by
svix-signed Clerk webhooks, and the derivation rules on their own."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from datadiver_graph.app import create_app
from datadiver_graph.config import Settings
from datadiver_graph.domain import billing
from datadiver_graph.domain.clock import now_ms
from datadiver_graph.storage.mongo import Database
from tests.billing_support import DAY, HISTORY, item, item_event, sub_event
from tests.clerk_fixtures import SERVICE_KEY
from tests.graphql_client import gql
from tests.servers import serve_app
from tests.webhook_support import T0, USER_ID, sign, user_event

FREE = [{"object": "feature", "id": "feat_chat", "slug": "chat", "name": "Chat"}]
PRO = [*FREE, {"object": "feature", "id": "feat_long", "slug": "long_documents", "name": "Long"}]
CHECK = """query($userId: String!) {
  getUser(userId: $userId) {
    billingStatus plan { slug features { id slug name description } }
    chat: hasFeature(slug: "chat")
    long: hasFeature(slug: "long_documents")
  }
}"""


def featured(payload: dict[str, Any], features: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The event with `features` on its plan(s); None leaves them out, as HISTORY's do."""
    payload = copy.deepcopy(payload)
    data = payload["data"]
    for entry in data.get("items", [data]):
        if features is not None:
            entry["plan"]["features"] = features
    return payload


def free_active(at: int = T0 + 100) -> dict[str, Any]:
    return featured(
        sub_event("subscription.created", "active", at, [item("csubi_free", "active", "free", at)]),
        FREE,
    )


def pro(status: str, at: int, *, period_start: int = T0) -> dict[str, Any]:
    event = {"past_due": "pastDue"}.get(status, status)
    return featured(
        item_event(
            f"subscriptionItem.{event}", "csubi_pro", status, "pro", at, period_start=period_start
        ),
        PRO,
    )


def free_ended(at: int) -> dict[str, Any]:
    return item_event("subscriptionItem.ended", "csubi_free", "ended", "free", at)


@pytest.fixture
async def api(clerk_settings: Settings, database: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        serve_app(create_app(clerk_settings)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        yield client


async def deliver(api: httpx.AsyncClient, *payloads: dict[str, Any]) -> None:
    for payload in payloads:
        body, headers = sign(payload)
        response = await api.post("/webhooks/clerk", content=body, headers=headers)
        assert response.status_code == 200, response.text


async def check(api: httpx.AsyncClient) -> dict[str, Any]:
    result = await gql(api, CHECK, {"userId": USER_ID}, service_key=SERVICE_KEY)
    assert result.errors == [], result.errors
    found: dict[str, Any] = result.data["getUser"]
    return found


def slugs(found: dict[str, Any]) -> list[str] | None:
    plan = found["plan"]
    if plan is None or plan["features"] is None:
        return None
    return [feature["slug"] for feature in plan["features"]]


# ---- each state, through the API -------------------------------------------------------------

RECENT = now_ms() - DAY  # a period that started yesterday is still running


@pytest.mark.parametrize(
    ("name", "events", "expected"),
    [
        ("no subscription", [], ("NONE", None, False, False)),
        ("free default plan", [free_active()], ("ACTIVE", "free_user", True, False)),
        (
            "pro active",
            [free_active(), pro("active", T0 + 500), free_ended(T0 + 510)],
            ("ACTIVE", "pro", True, True),
        ),
        (
            "pro past due: kept while Clerk retries",
            [
                free_active(),
                pro("active", T0 + 500),
                free_ended(T0 + 510),
                pro("past_due", T0 + 600),
            ],
            ("PAST_DUE", "pro", True, True),
        ),
        (
            "pro canceled, period remaining",
            [
                free_active(),
                pro("active", T0 + 500, period_start=RECENT),
                free_ended(T0 + 510),
                pro("canceled", T0 + 600, period_start=RECENT),
            ],
            ("CANCELED", "pro", True, True),
        ),
        (
            "pro canceled, period over, ended not yet delivered",
            [
                free_active(),
                pro("active", T0 + 500),
                free_ended(T0 + 510),
                pro("canceled", T0 + 600),
            ],
            ("CANCELED", "pro", False, False),
        ),
        (
            "pro ended",
            [free_active(), pro("active", T0 + 500), free_ended(T0 + 510), pro("ended", T0 + 700)],
            ("CANCELED", None, False, False),
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
async def test_has_feature_in_each_billing_state(
    api: httpx.AsyncClient,
    name: str,
    events: list[dict[str, Any]],
    expected: tuple[str, str | None, bool, bool],
) -> None:
    await deliver(api, user_event(), *events)
    found = await check(api)
    plan_slug = found["plan"]["slug"] if found["plan"] else None
    assert (found["billingStatus"], plan_slug, found["chat"], found["long"]) == expected, name


async def test_features_are_kept_with_their_ids_and_descriptions(api: httpx.AsyncClient) -> None:
    described = [{**PRO[1], "description": "Over 100 pages", "avatar_url": None}, {"name": "x"}]
    await deliver(api, user_event(), featured(pro("active", T0 + 500), described))
    found = await check(api)
    # A feature without a slug cannot be checked by has(): it is dropped.
    assert found["plan"]["features"] == [
        {
            "id": "feat_long",
            "slug": "long_documents",
            "name": "Long",
            "description": "Over 100 pages",
        }
    ]
    assert (found["chat"], found["long"]) == (False, True)


async def test_a_payload_without_features_keeps_the_plans_stored_ones(
    api: httpx.AsyncClient,
) -> None:
    await deliver(api, user_event(), pro("active", T0 + 500))
    renewed = featured(
        item_event(
            "subscriptionItem.updated",
            "csubi_pro",
            "active",
            "pro",
            T0 + 600,
            period_start=T0 + 30 * DAY,
        ),
        None,
    )
    await deliver(api, renewed)
    found = await check(api)
    assert slugs(found) == ["chat", "long_documents"] and found["long"] is True
    # An explicit empty list is news: the plan now has no features.
    await deliver(api, featured(pro("active", T0 + 700), []))
    found = await check(api)
    assert (slugs(found), found["chat"], found["long"]) == ([], False, False)


async def test_records_stored_without_features_read_null_until_a_webhook_carries_them(
    api: httpx.AsyncClient,
) -> None:
    """HISTORY's payloads carry no features, like every record stored before they were kept."""
    await deliver(api, user_event(), *(payload for _, payload, _, _ in HISTORY[:9]))
    found = await check(api)
    assert (found["plan"]["slug"], slugs(found), found["chat"]) == ("pro", None, False)
    await deliver(api, pro("active", T0 + 2000))
    found = await check(api)
    assert slugs(found) == ["chat", "long_documents"] and found["chat"] is True


# ---- the rules on their own ------------------------------------------------------------------


def record(*items: billing.Item, status: str = "active") -> billing.BillingSubscription:
    return billing.BillingSubscription(
        id="b1",
        payer_key=f"user:{USER_ID}",
        user_id=USER_ID,
        status=status,
        items=list(items),
        created_at=T0,
        updated_at=T0,
    )


def plan_item(
    status: str, features: list[str] | None, *, period_end: int | None = None, default: bool = False
) -> billing.Item:
    known = None if features is None else [billing.Feature(slug=slug) for slug in features]
    plan = billing.Plan(id=f"cplan_{status}", slug=status, is_default=default, features=known)
    return billing.Item(id=f"csubi_{status}", status=status, plan=plan, period_end=period_end)


NOW = T0 + 100 * DAY


@pytest.mark.parametrize(
    ("subscription", "feature", "expected"),
    [
        (None, "chat", False),
        (record(), "chat", False),
        (record(plan_item("active", ["chat"], default=True)), "chat", True),
        (record(plan_item("active", ["chat"], default=True)), "long", False),
        (record(plan_item("active", None)), "chat", False),
        (record(plan_item("past_due", ["chat"]), status="past_due"), "chat", True),
        (record(plan_item("canceled", ["chat"], period_end=NOW + 1)), "chat", True),
        (record(plan_item("canceled", ["chat"], period_end=NOW)), "chat", False),
        (record(plan_item("canceled", ["chat"])), "chat", True),  # no period end known
        (record(plan_item("ended", ["chat"])), "chat", False),
        (record(plan_item("upcoming", ["chat"])), "chat", False),
        # has({ feature }) scopes: user-level ones name this plan; an organization's never.
        (record(plan_item("active", ["chat"])), "user:chat", True),
        (record(plan_item("active", ["chat"])), "u:chat", True),
        (record(plan_item("active", ["chat"])), "org:chat", False),
        (record(plan_item("active", ["chat"])), "o:chat", False),
        (record(plan_item("active", ["chat"])), "team:chat", False),
        (record(plan_item("active", ["chat"])), "", False),
    ],
)
def test_has_feature_rules(
    subscription: billing.BillingSubscription | None, feature: str, expected: bool
) -> None:
    assert billing.has_feature(subscription, feature, now=NOW) is expected


def test_features_from_reads_only_lists() -> None:
    assert billing.features_from(None) is None
    assert billing.features_from({"slug": "x"}) is None
    assert billing.features_from([]) == []
    assert billing.features_from([{"slug": "x", "id": 3}, "x", {"slug": ""}]) == [
        billing.Feature(slug="x")
    ]
