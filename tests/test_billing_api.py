"""Billing over the API (issue 6): getSubscription, User.plan / User.billingStatus, and the
live `billingStatus` subscription over a real WebSocket, fed by svix-signed webhooks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from datadiver_graph.app import create_app
from datadiver_graph.config import Settings
from datadiver_graph.domain import billing
from datadiver_graph.storage.mongo import Database
from tests.billing_support import HISTORY, ORG_ID, at, for_org, item, sub_event
from tests.clerk_fixtures import SERVICE_KEY
from tests.graphql_client import gql
from tests.servers import serve_app
from tests.webhook_support import USER_ID, sign, user_event

OTHER_USER = "user_someone_else"

SUBSCRIPTION_FIELDS = """subscriptionId userId organizationId status billingStatus
  plan { id name slug amount currency period isDefault }
  items { id status planPeriod periodStart periodEnd updatedAt plan { slug } }
  updatedAt version"""
GET_SUBSCRIPTION = f"""query($userId: String) {{
  getSubscription(userId: $userId) {{ {SUBSCRIPTION_FIELDS} }}
}}"""
CURRENT_USER = "{ getCurrentUser { externalId billingStatus plan { slug name id } } }"


@pytest.fixture
async def app_url(clerk_settings: Settings, database: Database) -> AsyncIterator[str]:
    async with serve_app(create_app(clerk_settings)) as url:
        yield url


@pytest.fixture
async def api(app_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=app_url, timeout=10) as client:
        yield client


async def webhook(api: httpx.AsyncClient, payload: dict[str, Any]) -> None:
    body, headers = sign(payload)
    response = await api.post("/webhooks/clerk", content=body, headers=headers)
    assert response.status_code == 200, response.text


async def replay(api: httpx.AsyncClient, upto: int) -> None:
    """HISTORY's first `upto` events for USER_ID."""
    for _, payload, _, _ in HISTORY[:upto]:
        await webhook(api, payload)


# ---- getSubscription -------------------------------------------------------------------------


async def test_get_subscription_is_null_without_one(
    api: httpx.AsyncClient, token_for: Callable[[str], str]
) -> None:
    result = await gql(api, GET_SUBSCRIPTION, token=token_for(USER_ID))
    assert result.errors == [] and result.data == {"getSubscription": None}


async def test_get_subscription_returns_the_current_state(
    api: httpx.AsyncClient, token_for: Callable[[str], str]
) -> None:
    await replay(api, len(HISTORY))
    result = await gql(api, GET_SUBSCRIPTION, token=token_for(USER_ID))
    assert result.errors == []
    found = result.data["getSubscription"]
    assert found["subscriptionId"] == "csub_1" and found["status"] == "active"
    assert found["userId"] == USER_ID and found["organizationId"] is None
    assert found["billingStatus"] == "CANCELED"
    assert found["plan"] == {
        "id": "cplan_pro",
        "name": "Pro",
        "slug": "pro",
        "amount": 2000,
        "currency": "USD",
        "period": "month",
        "isDefault": False,
    }
    assert [(i["id"], i["status"], i["plan"]["slug"]) for i in found["items"]] == [
        ("csubi_free2", "upcoming", "free_user"),
        ("csubi_pro", "canceled", "pro"),
    ]
    assert found["items"][1]["updatedAt"].endswith("Z") and found["items"][1]["planPeriod"] == (
        "month"
    )
    assert found["version"] >= 1


async def test_a_service_key_reads_anyones_subscription(api: httpx.AsyncClient) -> None:
    await replay(api, 1)
    result = await gql(api, GET_SUBSCRIPTION, {"userId": USER_ID}, service_key=SERVICE_KEY)
    assert result.data["getSubscription"]["billingStatus"] == "ACTIVE"
    unnamed = await gql(api, GET_SUBSCRIPTION, service_key=SERVICE_KEY)
    assert unnamed.codes == ["BAD_USER_INPUT"]


async def test_another_users_subscription_is_forbidden(
    api: httpx.AsyncClient, token_for: Callable[[str], str]
) -> None:
    await replay(api, 1)
    result = await gql(api, GET_SUBSCRIPTION, {"userId": USER_ID}, token=token_for(OTHER_USER))
    assert result.codes == ["FORBIDDEN"]
    assert result.data is None or result.data == {"getSubscription": None}
    signed_out = await gql(api, GET_SUBSCRIPTION, {"userId": USER_ID})
    assert signed_out.codes == ["UNAUTHENTICATED"]


async def test_organization_payers_do_not_affect_a_users_subscription(
    api: httpx.AsyncClient, database: Database, token_for: Callable[[str], str]
) -> None:
    for _, payload, _, _ in HISTORY:
        await webhook(api, for_org(payload))
    assert await database.db["billingSubscriptions"].count_documents({}) == 1
    result = await gql(api, GET_SUBSCRIPTION, token=token_for(USER_ID))
    assert result.data == {"getSubscription": None}
    # The org's subscription is not reachable as a user id by a user either.
    other = await gql(api, GET_SUBSCRIPTION, {"userId": ORG_ID}, token=token_for(USER_ID))
    assert other.codes == ["FORBIDDEN"]


# ---- User.plan and User.billingStatus ----------------------------------------------------------


@pytest.mark.parametrize(
    ("upto", "status", "slug"),
    [(0, "NONE", None), *[(n + 1, status, slug) for n, (_, _, status, slug) in enumerate(HISTORY)]],
)
async def test_current_user_plan_and_billing_status(
    api: httpx.AsyncClient,
    token_for: Callable[[str], str],
    upto: int,
    status: str,
    slug: str | None,
) -> None:
    await webhook(api, user_event(user_id=USER_ID))
    await replay(api, upto)
    result = await gql(api, CURRENT_USER, token=token_for(USER_ID))
    assert result.errors == []
    user = result.data["getCurrentUser"]
    assert user["billingStatus"] == status
    assert (user["plan"] or {}).get("slug") == slug


async def test_current_user_reads_billing_once_and_only_when_asked(
    api: httpx.AsyncClient, token_for: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    await webhook(api, user_event(user_id=USER_ID))
    await replay(api, 5)
    reads: list[str] = []
    real = billing.get_for_user

    async def counted(store: Any, user_id: str) -> billing.BillingSubscription | None:
        reads.append(user_id)
        return await real(store, user_id)

    monkeypatch.setattr(billing, "get_for_user", counted)
    result = await gql(api, CURRENT_USER, token=token_for(USER_ID))
    assert result.data["getCurrentUser"]["plan"] == {
        "slug": "pro",
        "name": "Pro",
        "id": "cplan_pro",
    }
    assert reads == [USER_ID]  # plan and billingStatus share one read
    await gql(api, "{ getCurrentUser { externalId name } }", token=token_for(USER_ID))
    assert reads == [USER_ID]  # not asked: not read


# ---- live billingStatus over a real WebSocket ---------------------------------------------------


async def _receive(ws: ClientConnection, wait: float = 5.0) -> dict[str, Any]:
    while True:
        message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), wait))
        if message["type"] == "ping":
            await ws.send(json.dumps({"type": "pong"}))
            continue
        return message


async def _open(app_url: str, token: str) -> ClientConnection:
    ws = await connect(
        app_url.replace("http://", "ws://") + "/graphql",
        subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
    )
    await ws.send(
        json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
    )
    assert (await _receive(ws))["type"] == "connection_ack"
    return ws


LIVE = "subscription { billingStatus { userId billingStatus plan { slug } version } }"


async def test_live_billing_status_sees_past_due_arrive(
    api: httpx.AsyncClient, app_url: str, token_for: Callable[[str], str]
) -> None:
    await replay(api, 9)  # ACTIVE on Pro
    ws = await _open(app_url, token_for(USER_ID))
    try:
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": LIVE}}))
        first = await _receive(ws)
        assert first["type"] == "next", first
        snapshot = first["payload"]["data"]["billingStatus"]
        assert snapshot["userId"] == USER_ID
        assert snapshot["billingStatus"] == "ACTIVE" and snapshot["plan"] == {"slug": "pro"}

        past_due = sub_event(
            "subscription.pastDue",
            "past_due",
            at(800),
            [item("csubi_pro", "past_due", "pro", at(800))],
        )
        await webhook(api, past_due)
        update = await _receive(ws)
        assert update["type"] == "next", update
        changed = update["payload"]["data"]["billingStatus"]
        assert changed["billingStatus"] == "PAST_DUE" and changed["plan"] == {"slug": "pro"}
        assert changed["version"] > snapshot["version"]

        # A stale redelivery (older updated_at) sends nothing.
        _, older, _, _ = HISTORY[6]
        await webhook(api, older)
        with pytest.raises(TimeoutError):
            await _receive(ws, wait=0.3)
    finally:
        await ws.close()


async def test_live_billing_status_starts_with_none(
    app_url: str, api: httpx.AsyncClient, token_for: Callable[[str], str]
) -> None:
    ws = await _open(app_url, token_for(USER_ID))
    try:
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": LIVE}}))
        first = await _receive(ws)
        assert first["payload"]["data"]["billingStatus"] == {
            "userId": USER_ID,
            "billingStatus": "NONE",
            "plan": None,
            "version": 0,
        }
        await replay(api, 1)
        update = await _receive(ws)
        assert update["payload"]["data"]["billingStatus"]["billingStatus"] == "ACTIVE"
    finally:
        await ws.close()


async def test_live_billing_status_of_another_user_is_forbidden(
    app_url: str, token_for: Callable[[str], str]
) -> None:
    ws = await _open(app_url, token_for(OTHER_USER))
    try:
        query = f'subscription {{ billingStatus(userId: "{USER_ID}") {{ billingStatus }} }}'
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
        message = await _receive(ws)
        errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
        assert [e["extensions"]["code"] for e in errors] == ["FORBIDDEN"]
    finally:
        await ws.close()


# ---- cache identity (issue 14): every cached type has an `id` -------------------------------


async def test_billing_subscription_id_is_the_payers_record_and_stays_put(
    api: httpx.AsyncClient, database: Database, token_for: Callable[[str], str]
) -> None:
    query = "{ getSubscription { id subscriptionId items { id } } }"
    # An item event before any subscription event: the record exists, Clerk's id does not.
    _, first_item, _, _ = HISTORY[1]
    await webhook(api, first_item)
    early = (await gql(api, query, token=token_for(USER_ID))).data["getSubscription"]
    stored = await database.db["billingSubscriptions"].find_one({"payerKey": f"user:{USER_ID}"})
    assert stored is not None
    assert early["id"] == stored["_id"] and early["subscriptionId"] is None
    await replay(api, len(HISTORY))
    later = (await gql(api, query, token=token_for(USER_ID))).data["getSubscription"]
    assert later["subscriptionId"] == "csub_1"
    assert later["id"] == early["id"]
    assert "csubi_pro" in {i["id"] for i in later["items"]}


async def test_billing_subscription_ids_differ_between_payers(
    api: httpx.AsyncClient, token_for: Callable[[str], str]
) -> None:
    await replay(api, 1)
    mine = await gql(api, "{ getSubscription { id } }", token=token_for(USER_ID))
    _, payload, _, _ = HISTORY[0]
    theirs_payload = json.loads(json.dumps(payload).replace(USER_ID, OTHER_USER))
    theirs_payload["data"]["id"] = "csub_other"
    await webhook(api, theirs_payload)
    theirs = await gql(api, "{ getSubscription { id } }", token=token_for(OTHER_USER))
    assert mine.data["getSubscription"]["id"] and theirs.data["getSubscription"]["id"]
    assert mine.data["getSubscription"]["id"] != theirs.data["getSubscription"]["id"]


async def test_live_billing_state_id_is_the_user_and_its_subscription_keeps_its_id(
    api: httpx.AsyncClient, app_url: str, token_for: Callable[[str], str]
) -> None:
    live = "subscription { billingStatus { id userId billingStatus subscription { id } } }"
    ws = await _open(app_url, token_for(USER_ID))
    try:
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": live}}))
        first = (await _receive(ws))["payload"]["data"]["billingStatus"]
        # No subscription yet: the state still has the user's id.
        assert first == {
            "id": USER_ID,
            "userId": USER_ID,
            "billingStatus": "NONE",
            "subscription": None,
        }
        await replay(api, 1)
        update = (await _receive(ws))["payload"]["data"]["billingStatus"]
        assert update["id"] == USER_ID and update["billingStatus"] == "ACTIVE"
        fetched = await gql(api, "{ getSubscription { id } }", token=token_for(USER_ID))
        assert update["subscription"] == {"id": fetched.data["getSubscription"]["id"]}
    finally:
        await ws.close()
