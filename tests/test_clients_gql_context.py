"""The AI backend's side of issue 18, through Python `gql` 4.4.0 with a service key.

What the AI backend does before spending money on a long analysis: read the user it works
for (`getUser`: profile, preferences, plan and its features, `hasFeature`), and hold that
context live for a long chat (`user(userId)` subscription). Every change arrives the way
it would in production: a preference change made by the user with their own Clerk token,
plan changes and deletions as Svix-signed Clerk webhooks posted to the real server.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from gql import Client
from gql.transport.exceptions import TransportQueryError
from gql.transport.httpx import HTTPXAsyncTransport
from gql.transport.websockets import WebsocketsTransport

from datadiver_graph.app import create_app
from datadiver_graph.config import Settings
from datadiver_graph.domain import users
from datadiver_graph.storage.mongo import Database
from tests.billing_support import item, item_event, sub_event
from tests.servers import serve_app
from tests.test_clients_gql import (
    LEGACY_WS,
    TRANSPORT_WS,
    error_codes,
    http_client,
    next_result,
    request,
    subprotocols,
    ws_client,
)
from tests.webhook_support import T0, USER_ID, sign, user_deleted, user_event

OTHER_USER = "user_someone_else"
NOW = 1_800_000_000_000  # a Clerk updated_at later than every fixture's

FREE_FEATURES = [{"object": "feature", "id": "feat_chat", "slug": "chat", "name": "Chat"}]
PRO_FEATURES = [
    *FREE_FEATURES,
    {
        "object": "feature",
        "id": "feat_long",
        "slug": "long_documents",
        "name": "Long documents",
        "description": "Analyse documents over 100 pages",
    },
]

# What the AI backend asks before a long document analysis (README: "Calling from the AI
# backend").
GET_USER = """query UserContext($userId: String!) {
  getUser(userId: $userId) {
    id externalId name email preferences
    billingStatus
    plan { id slug name features { id slug name } }
    canAnalyseLongDocuments: hasFeature(slug: "long_documents")
  }
}"""
WATCH_USER = """subscription WatchUser($userId: String!) {
  user(userId: $userId) {
    id externalId preferences version
    billingStatus plan { slug }
    canAnalyseLongDocuments: hasFeature(slug: "long_documents")
  }
}"""
WATCH_USER_PROFILE = """subscription WatchProfile($userId: String!) {
  user(userId: $userId) { id preferences version }
}"""
UPDATE_PREFERENCES = """mutation($preferences: JSON) {
  updateUser(preferences: $preferences) { preferences version }
}"""


def with_features(payload: dict[str, Any], features: list[dict[str, Any]]) -> dict[str, Any]:
    """A billing event whose plan(s) carry `features`, as Clerk's plan object does."""
    data = payload["data"]
    for entry in data.get("items", [data]):
        entry["plan"]["features"] = features
    return payload


def on_free_plan() -> dict[str, Any]:
    return with_features(
        sub_event(
            "subscription.created",
            "active",
            T0 + 100,
            [item("csubi_free", "active", "free", T0 + 100)],
        ),
        FREE_FEATURES,
    )


def upgraded_to_pro() -> list[dict[str, Any]]:
    """What Clerk sends on an upgrade: the paid item turns active, the free one ends."""
    return [
        with_features(
            item_event("subscriptionItem.active", "csubi_pro", "active", "pro", T0 + 500),
            PRO_FEATURES,
        ),
        item_event("subscriptionItem.ended", "csubi_free", "ended", "free", T0 + 510),
    ]


@pytest.fixture
async def base(clerk_settings: Settings, database: Database) -> AsyncIterator[str]:
    async with serve_app(create_app(clerk_settings)) as url:
        yield url


@pytest.fixture
def url(base: str) -> str:
    return f"{base}/graphql"


@pytest.fixture
async def clerk_side(base: str) -> AsyncIterator[Callable[[dict[str, Any]], Any]]:
    """Post a Clerk webhook, signed by svix, to the running server."""
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:

        async def deliver(payload: dict[str, Any]) -> None:
            body, headers = sign(payload)
            response = await http.post("/webhooks/clerk", content=body, headers=headers)
            assert response.status_code == 200, response.text

        yield deliver


def user_client(url: str, token: str) -> Client:
    """The web app: the user's own Clerk session token."""
    return Client(
        transport=HTTPXAsyncTransport(url=url, headers={"Authorization": f"Bearer {token}"})
    )


async def ended(results: AsyncGenerator[dict[str, Any], None]) -> bool:
    try:
        await next_result(results)
    except StopAsyncIteration:
        return True
    return False


# --- reading the user context ---------------------------------------------------------------


async def test_service_reads_a_users_context_and_checks_a_feature_across_an_upgrade(
    url: str, clerk_side: Callable[[dict[str, Any]], Any], token_for: Callable[[str], str]
) -> None:
    await clerk_side(user_event(first_name="Ada", last_name="Lovelace"))
    async with user_client(url, token_for(USER_ID)) as web:
        await web.execute(request(UPDATE_PREFERENCES, preferences={"language": "fr"}))
    await clerk_side(on_free_plan())

    async with http_client(url) as api:
        context = (await api.execute(request(GET_USER, userId=USER_ID)))["getUser"]
        assert context["externalId"] == USER_ID
        assert context["name"] == "Ada Lovelace"
        assert context["email"] == "example@example.org"
        assert context["preferences"] == {"language": "fr"}
        assert context["billingStatus"] == "ACTIVE"
        assert context["plan"] == {
            "id": "cplan_free",
            "slug": "free_user",
            "name": "Free",
            "features": [{"id": "feat_chat", "slug": "chat", "name": "Chat"}],
        }
        assert context["canAnalyseLongDocuments"] is False

        # The user upgrades in Clerk's checkout; Clerk sends subscriptionItem.active.
        for payload in upgraded_to_pro():
            await clerk_side(payload)
        context = (await api.execute(request(GET_USER, userId=USER_ID)))["getUser"]
        assert context["plan"]["slug"] == "pro"
        assert [f["slug"] for f in context["plan"]["features"]] == ["chat", "long_documents"]
        assert context["canAnalyseLongDocuments"] is True

        # Past due: Clerk retries the charge and the plan stays in force (billingStatus tells).
        # The payload carries no features: those stored for the plan are kept.
        await clerk_side(
            item_event("subscriptionItem.pastDue", "csubi_pro", "past_due", "pro", T0 + 600)
        )
        context = (await api.execute(request(GET_USER, userId=USER_ID)))["getUser"]
        assert context["billingStatus"] == "PAST_DUE"
        assert context["canAnalyseLongDocuments"] is True

        # Ended: nothing is in force any more.
        await clerk_side(item_event("subscriptionItem.ended", "csubi_pro", "ended", "pro", NOW))
        context = (await api.execute(request(GET_USER, userId=USER_ID)))["getUser"]
        assert (context["billingStatus"], context["plan"]) == ("CANCELED", None)
        assert context["canAnalyseLongDocuments"] is False


async def test_unknown_and_deleted_users_are_null(
    url: str, clerk_side: Callable[[dict[str, Any]], Any]
) -> None:
    async with http_client(url) as api:
        assert await api.execute(request(GET_USER, userId="user_nobody")) == {"getUser": None}
        await clerk_side(user_event(first_name="Ada"))
        found = await api.execute(request(GET_USER, userId=USER_ID))
        assert found["getUser"]["externalId"] == USER_ID
        await clerk_side(user_deleted())
        assert await api.execute(request(GET_USER, userId=USER_ID)) == {"getUser": None}
        # A late user.updated from Clerk does not bring the user back.
        await clerk_side(user_event("user.updated", updated_at=NOW, first_name="Ghost"))
        assert await api.execute(request(GET_USER, userId=USER_ID)) == {"getUser": None}


async def test_a_tombstoned_user_is_null_even_while_its_document_lingers(
    url: str, clerk_side: Callable[[dict[str, Any]], Any], database: Database
) -> None:
    """The instant between a delete's tombstone and its document's removal (or a late Clerk
    upsert's insert and its undo): the tombstone alone decides."""
    await clerk_side(user_event(first_name="Ada"))
    await database.collection(users.TOMBSTONES).insert_one({"_id": USER_ID, "deletedAt": NOW})
    assert await database.users.count_documents({"externalId": USER_ID}) == 1
    async with http_client(url) as api:
        assert await api.execute(request(GET_USER, userId=USER_ID)) == {"getUser": None}


async def test_a_user_token_reads_only_its_own_user(
    url: str, clerk_side: Callable[[dict[str, Any]], Any], token_for: Callable[[str], str]
) -> None:
    await clerk_side(user_event(first_name="Ada"))
    await clerk_side(user_event(user_id=OTHER_USER, first_name="Bob"))
    async with user_client(url, token_for(USER_ID)) as web:
        own = await web.execute(request(GET_USER, userId=USER_ID))
        assert own["getUser"]["name"] == "Ada Example"
        with pytest.raises(TransportQueryError) as refused:
            await web.execute(request(GET_USER, userId=OTHER_USER))
    assert error_codes(refused.value) == ["FORBIDDEN"]
    assert refused.value.data == {"getUser": None}


@subprotocols
async def test_a_user_token_may_not_subscribe_to_another_user(
    url: str,
    subprotocol: str,
    clerk_side: Callable[[dict[str, Any]], Any],
    token_for: Callable[[str], str],
) -> None:
    await clerk_side(user_event(user_id=OTHER_USER, first_name="Bob"))
    transport = WebsocketsTransport(
        url=url.replace("http://", "ws://", 1),
        init_payload={"authToken": token_for(USER_ID)},
        subprotocols=[subprotocol],
    )
    async with Client(transport=transport) as live:
        results = live.subscribe(request(WATCH_USER, userId=OTHER_USER))
        with pytest.raises(TransportQueryError) as refused:
            await next_result(results)
    assert error_codes(refused.value) == ["FORBIDDEN"]


# --- holding the context live -----------------------------------------------------------------


@subprotocols
async def test_subscription_follows_preferences_plan_and_deletion(
    url: str,
    subprotocol: str,
    clerk_side: Callable[[dict[str, Any]], Any],
    token_for: Callable[[str], str],
) -> None:
    await clerk_side(user_event(first_name="Ada"))
    await clerk_side(on_free_plan())
    async with ws_client(url, subprotocol) as live, user_client(url, token_for(USER_ID)) as web:
        results = live.subscribe(request(WATCH_USER, userId=USER_ID))
        try:
            first = (await next_result(results))["user"]
            assert first["preferences"] == {} and first["version"] == 1
            assert (first["plan"], first["canAnalyseLongDocuments"]) == (
                {"slug": "free_user"},
                False,
            )

            # The user switches the answer language in the web app.
            await web.execute(request(UPDATE_PREFERENCES, preferences={"language": "de"}))
            changed = (await next_result(results))["user"]
            assert changed["preferences"] == {"language": "de"} and changed["version"] == 2

            # Clerk reports the upgrade: the plan and the feature change on the same stream.
            activated, free_ended = upgraded_to_pro()
            await clerk_side(activated)
            upgraded = (await next_result(results))["user"]
            assert upgraded["plan"] == {"slug": "pro"}
            assert upgraded["canAnalyseLongDocuments"] is True
            assert upgraded["version"] == 2  # the user record itself did not change
            await clerk_side(free_ended)  # a billing write, the same answer: sent again
            assert (await next_result(results))["user"] == upgraded

            # The user is deleted in Clerk: the subscription completes.
            await clerk_side(user_deleted())
            assert await ended(results), "the subscription outlived its user"
        finally:
            await results.aclose()


async def test_subscription_without_billing_fields_is_not_woken_by_billing(
    url: str, clerk_side: Callable[[dict[str, Any]], Any], token_for: Callable[[str], str]
) -> None:
    await clerk_side(user_event(first_name="Ada"))
    async with ws_client(url, TRANSPORT_WS) as live, user_client(url, token_for(USER_ID)) as web:
        results = live.subscribe(request(WATCH_USER_PROFILE, userId=USER_ID))
        try:
            assert (await next_result(results))["user"]["version"] == 1
            await clerk_side(on_free_plan())
            await web.execute(request(UPDATE_PREFERENCES, preferences={"tone": "brief"}))
            # The next result is the preference change, not a copy sent for the billing write.
            following = (await next_result(results))["user"]
            assert following == {
                "id": following["id"],
                "preferences": {"tone": "brief"},
                "version": 2,
            }
        finally:
            await results.aclose()


async def test_subscription_to_an_unknown_user_sends_null_then_the_user(
    url: str, clerk_side: Callable[[dict[str, Any]], Any]
) -> None:
    async with ws_client(url, LEGACY_WS) as live:
        results = live.subscribe(request(WATCH_USER, userId=USER_ID))
        try:
            assert await next_result(results) == {"user": None}
            await clerk_side(user_event(first_name="Ada"))
            created = (await next_result(results))["user"]
            assert created["externalId"] == USER_ID and created["billingStatus"] == "NONE"
        finally:
            await results.aclose()
