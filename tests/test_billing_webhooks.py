"""Clerk Billing subscription state from svix-signed webhooks over real HTTP (issue 6).

Each `subscription.*` / `subscriptionItem.*` event type, in order, shuffled (same final state),
repeated (nothing changes), and with organization payers; raw events are still kept.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette

from datadiver_graph.app import create_app
from datadiver_graph.config import Settings
from datadiver_graph.domain import billing, events
from datadiver_graph.domain.store import Store
from datadiver_graph.storage import mongo as db
from tests.billing_support import (
    FINAL_ITEMS,
    HISTORY,
    ORG_ID,
    SUB_ID,
    at,
    for_org,
    item,
    item_event,
    payer,
    sub_event,
)
from tests.servers import serve_app
from tests.webhook_support import SECRET, USER_ID, envelope, sign


@dataclass
class Server:
    app: Starlette
    client: httpx.AsyncClient

    @property
    def store(self) -> Store:
        store: Store = self.app.state.store
        return store

    async def post(self, payload: Any, msg_id: str | None = None) -> str:
        body, headers = sign(payload, msg_id=msg_id)
        response = await self.client.post("/webhooks/clerk", content=body, headers=headers)
        assert response.status_code == 200, response.text
        status: str = response.json()["status"]
        return status


@pytest.fixture
async def server(settings: Settings, database: db.Database) -> AsyncIterator[Server]:
    app = create_app(settings.model_copy(update={"clerk_webhook_secret": SecretStr(SECRET)}))
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=20) as client:
        yield Server(app, client)


async def stored(database: db.Database, payer_key: str = f"user:{USER_ID}") -> dict[str, Any]:
    doc = await database.db[db.BILLING_SUBSCRIPTIONS].find_one({"payerKey": payer_key})
    assert doc is not None, f"no subscription stored for {payer_key}"
    return doc


def state_of(doc: dict[str, Any]) -> dict[str, Any]:
    """What Clerk reported, without our own bookkeeping (ids, versions, our clock)."""
    return {k: v for k, v in doc.items() if k not in {"_id", "version", "createdAt", "updatedAt"}}


def derived(doc: dict[str, Any] | None) -> tuple[str, str | None]:
    record = billing.BillingSubscription.from_doc(doc) if doc else None
    status, plan = billing.derive(record)
    return status.value, plan.slug if plan else None


# ---- each event type, in order ------------------------------------------------------------


async def test_history_in_order_derives_each_step(server: Server, database: db.Database) -> None:
    for msg_id, payload, status, slug in HISTORY:
        assert await server.post(payload, msg_id) == "applied", payload["type"]
        assert derived(await stored(database)) == (status, slug), (msg_id, payload["type"])
    doc = await stored(database)
    assert doc["userId"] == USER_ID and doc["organizationId"] is None
    assert doc["subscriptionId"] == SUB_ID and doc["status"] == "active"
    assert doc["subscriptionUpdatedAt"] == at(1010) and doc["itemsAsOf"] == at(1010)
    assert [(i["id"], i["status"], i["plan"]["slug"]) for i in doc["items"]] == FINAL_ITEMS
    pro = doc["items"][1]
    assert pro["plan"] == {
        "id": "cplan_pro",
        "name": "Pro",
        "slug": "pro",
        "amount": 2000,
        "currency": "USD",
        "period": "month",
        "isDefault": False,
        "features": None,  # HISTORY's payloads carry none: unknown, not "no features"
    }
    assert pro["updatedAt"] == at(1000) and pro["canceledAt"] == at(1000)
    assert pro["periodEnd"] - pro["periodStart"] == 30 * 24 * 3600 * 1000
    # Raw events are still kept, one per delivery.
    raw = await database.db[db.BILLING_EVENTS].count_documents({})
    assert raw == len(HISTORY)


async def test_every_event_type_is_covered() -> None:
    types = {payload["type"] for _, payload, _, _ in HISTORY}
    assert types == {
        "subscription.created",
        "subscription.updated",
        "subscription.active",
        "subscription.pastDue",
        "subscriptionItem.updated",
        "subscriptionItem.active",
        "subscriptionItem.canceled",
        "subscriptionItem.upcoming",
        "subscriptionItem.ended",
        "subscriptionItem.abandoned",
        "subscriptionItem.incomplete",
        "subscriptionItem.pastDue",
        "subscriptionItem.freeTrialEnding",
    }


# ---- any order -----------------------------------------------------------------------------


async def _final_state_in_order(server: Server, database: db.Database, order: list[int]) -> Any:
    for index in order:
        msg_id, payload, _, _ = HISTORY[index]
        assert await server.post(payload, msg_id) == "applied"
    return state_of(await stored(database))


@pytest.mark.parametrize("seed", ["reversed", 1, 2, 3, 4, 5])
async def test_shuffled_deliveries_reach_the_same_state(
    server: Server, database: db.Database, seed: int | str
) -> None:
    order = list(range(len(HISTORY)))
    if seed == "reversed":
        order.reverse()
    else:
        random.Random(seed).shuffle(order)
    shuffled = await _final_state_in_order(server, database, order)
    await database.db[db.BILLING_SUBSCRIPTIONS].delete_many({})
    await database.db[db.WEBHOOK_DELIVERIES].delete_many({})
    in_order = await _final_state_in_order(server, database, list(range(len(HISTORY))))
    assert shuffled == in_order
    assert [(i["id"], i["status"], i["plan"]["slug"]) for i in shuffled["items"]] == FINAL_ITEMS


async def test_concurrent_deliveries_reach_the_same_state(
    server: Server, database: db.Database
) -> None:
    statuses = await asyncio.gather(
        *(server.post(payload, msg_id) for msg_id, payload, _, _ in HISTORY)
    )
    assert set(statuses) == {"applied"}
    concurrent = state_of(await stored(database))
    await database.db[db.BILLING_SUBSCRIPTIONS].delete_many({})
    await database.db[db.WEBHOOK_DELIVERIES].delete_many({})
    assert concurrent == await _final_state_in_order(server, database, list(range(len(HISTORY))))


async def test_an_item_event_before_its_subscription_keeps_the_newer_item(
    server: Server, database: db.Database
) -> None:
    active = item_event("subscriptionItem.active", "csubi_pro", "active", "pro", at(500))
    assert await server.post(active) == "applied"
    doc = await stored(database)
    assert doc["subscriptionId"] is None and derived(doc) == ("ACTIVE", "pro")
    # The (older) subscription.created lists the item as incomplete: only its own fields land.
    created = sub_event(
        "subscription.created", "active", at(400), [item("csubi_pro", "incomplete", "pro", at(400))]
    )
    assert await server.post(created) == "applied"
    doc = await stored(database)
    assert doc["subscriptionId"] == SUB_ID and doc["subscriptionUpdatedAt"] == at(400)
    assert [(i["id"], i["status"]) for i in doc["items"]] == [("csubi_pro", "active")]
    # An older subscription update changes nothing at all.
    older = sub_event("subscription.updated", "past_due", at(300), [])
    assert await server.post(older) == "applied"  # the raw event is kept
    assert state_of(await stored(database)) == state_of(doc)


async def test_an_older_item_event_never_overwrites_a_newer_one(
    server: Server, database: db.Database
) -> None:
    newer = item_event("subscriptionItem.canceled", "csubi_pro", "canceled", "pro", at(900))
    older = item_event("subscriptionItem.pastDue", "csubi_pro", "past_due", "pro", at(800))
    assert await server.post(newer) == "applied"
    before = await stored(database)
    assert await server.post(older) == "applied"  # the raw event is kept
    assert await stored(database) == before
    assert derived(before) == ("CANCELED", "pro")


# ---- repeated --------------------------------------------------------------------------------


async def test_repeated_deliveries_change_nothing(server: Server, database: db.Database) -> None:
    for msg_id, payload, _, _ in HISTORY:
        await server.post(payload, msg_id)
    before = await stored(database)
    raw_before = await database.db[db.BILLING_EVENTS].count_documents({})
    async with server.store.events.subscribe(events.billing_channel(USER_ID)) as stream:
        for msg_id, payload, _, _ in HISTORY:  # same svix ids: deduplicated
            assert await server.post(payload, msg_id) == "duplicate"
        for msg_id, payload, _, _ in HISTORY:  # replayed with new ids: kept raw, stale state
            assert await server.post(payload, f"{msg_id}_replay") == "applied"
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(stream), 0.3)
    assert await stored(database) == before  # version included
    assert await database.db[db.BILLING_EVENTS].count_documents({}) == raw_before + len(HISTORY)


async def test_each_change_is_published_with_the_new_state(
    server: Server, database: db.Database
) -> None:
    async with server.store.events.subscribe(events.billing_channel(USER_ID)) as stream:
        _, payload, _, _ = HISTORY[0]
        await server.post(payload)
        event = await asyncio.wait_for(anext(stream), 2.0)
    assert isinstance(event, events.Event) and event.kind == "billing.updated"
    assert event.record == await stored(database)


# ---- organization payers ----------------------------------------------------------------------


async def test_organization_payers_are_stored_linked_to_no_user(
    server: Server, database: db.Database
) -> None:
    _, user_created, _, _ = HISTORY[0]
    assert await server.post(user_created) == "applied"
    user_before = await stored(database)
    for _, payload, _, _ in HISTORY[:12]:
        assert await server.post(for_org(payload)) == "applied"
    org = await stored(database, f"org:{ORG_ID}")
    assert org["organizationId"] == ORG_ID and org["userId"] is None
    assert derived(org) == ("PAST_DUE", "pro")
    # The user's own subscription is untouched, and reading it does not see the org's.
    assert await stored(database) == user_before
    found = await billing.get_for_user(server.store, USER_ID)
    assert found is not None and found.organization_id is None
    assert derived(found.to_doc()) == ("ACTIVE", "free_user")


async def test_an_item_event_without_payer_finds_its_payer_by_item_id(
    server: Server, database: db.Database
) -> None:
    _, created, _, _ = HISTORY[0]
    await server.post(created)
    ended = item_event("subscriptionItem.ended", "csubi_free", "ended", "free", at(510))
    del ended["data"]["payer"]
    assert await server.post(ended) == "applied"
    assert derived(await stored(database)) == ("CANCELED", None)
    unknown = envelope("subscriptionItem.active", {"id": "csubi_nobody", "status": "active"})
    assert await server.post(unknown) == "applied"  # kept raw; placed nowhere
    assert await database.db[db.BILLING_SUBSCRIPTIONS].count_documents({}) == 1


async def test_payloads_without_a_usable_payer_are_kept_raw_only(
    server: Server, database: db.Database
) -> None:
    nobody = sub_event("subscription.created", "active", at(1), [], with_payer={"id": "x"})
    assert await server.post(nobody) == "applied"
    assert await server.post(envelope("subscription.updated", None)) == "applied"
    assert await database.db[db.BILLING_SUBSCRIPTIONS].count_documents({}) == 0
    assert await database.db[db.BILLING_EVENTS].count_documents({}) == 2


# ---- derivation rules (pure) --------------------------------------------------------------


def _record(status: str | None, *items: tuple[str, bool]) -> billing.BillingSubscription:
    return billing.BillingSubscription(
        id="x",
        payer_key=f"user:{USER_ID}",
        user_id=USER_ID,
        status=status,
        items=[
            billing.Item(
                id=f"i{n}",
                status=item_status,
                plan=billing.Plan(slug="free" if free else "pro", is_default=free),
            )
            for n, (item_status, free) in enumerate(items)
        ],
        created_at=0,
        updated_at=0,
    )


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (None, ("NONE", None)),
        (_record("active", ("active", True)), ("ACTIVE", "free")),
        (_record("active", ("active", True), ("active", False)), ("ACTIVE", "pro")),
        (_record("past_due", ("active", False)), ("PAST_DUE", "pro")),
        (_record("active", ("past_due", False), ("active", True)), ("PAST_DUE", "free")),
        (_record("active", ("canceled", False), ("upcoming", True)), ("CANCELED", "pro")),
        (_record("active", ("ended", False)), ("CANCELED", None)),
        (_record("active"), ("ACTIVE", None)),
        (_record("canceled"), ("CANCELED", None)),
        (_record(None, ("incomplete", False), ("abandoned", False)), ("NONE", None)),
    ],
)
def test_derivation_rules(
    record: billing.BillingSubscription | None, expected: tuple[str, str | None]
) -> None:
    status, plan = billing.derive(record)
    assert (status.value, plan.slug if plan else None) == expected


def test_payer_key_prefers_the_organization() -> None:
    mapped = billing.payer_from({"payer": payer(org_id=ORG_ID) | {"user_id": USER_ID}})
    assert mapped is not None and mapped.key == f"org:{ORG_ID}"
