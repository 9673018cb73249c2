"""POST /webhooks/clerk over real HTTP: signed by the svix library, stored in the test database."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from svix.webhooks import Webhook

from datadiver_graph.api import webhooks
from datadiver_graph.api.webhooks import MAX_BODY_BYTES
from datadiver_graph.app import create_app
from datadiver_graph.config import Settings
from datadiver_graph.domain import clerk_events, events, sessions
from datadiver_graph.domain.store import Store
from datadiver_graph.storage import mongo as db
from tests.servers import serve_app
from tests.webhook_support import (
    SECRET,
    T0,
    USER_CREATED,
    USER_ID,
    envelope,
    payment_data,
    payment_event,
    sign,
    user_deleted,
    user_event,
)

PATHS = ("/webhooks/clerk", "/clerk-users-webhook")
COLLECTIONS = (
    db.USERS,
    db.SESSIONS,
    db.PAYMENT_ATTEMPTS,
    db.BILLING_EVENTS,
    db.WEBHOOK_DELIVERIES,
    "userTombstones",
)


@dataclass
class Server:
    app: Starlette
    client: httpx.AsyncClient

    @property
    def store(self) -> Store:
        """The app's own store: its EventBus is the one the app publishes on."""
        store: Store = self.app.state.store
        return store

    async def post(self, payload: Any, path: str = PATHS[0], **sign_options: Any) -> httpx.Response:
        body, headers = sign(payload, **sign_options)
        return await self.client.post(path, content=body, headers=headers)


@pytest.fixture
def webhook_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"clerk_webhook_secret": SecretStr(SECRET)})


@pytest.fixture
async def server(webhook_settings: Settings, database: db.Database) -> AsyncIterator[Server]:
    app = create_app(webhook_settings)
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=20) as client:
        yield Server(app, client)


async def snapshot(database: db.Database) -> dict[str, list[dict[str, Any]]]:
    return {name: await database.db[name].find({}).sort("_id", 1).to_list() for name in COLLECTIONS}


async def next_event(stream: AsyncIterator[events.Event]) -> events.Event:
    return await asyncio.wait_for(anext(stream), 2.0)


async def assert_no_event(stream: AsyncIterator[events.Event]) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(stream), 0.2)


# ---- users -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
async def test_user_created_is_stored_and_published(
    server: Server, database: db.Database, path: str
) -> None:
    async with server.store.events.subscribe(events.user_channel(USER_ID)) as stream:
        response = await server.post(USER_CREATED, path)
        assert response.status_code == 200
        assert response.json() == {"status": "applied"}
        event = await next_event(stream)
    user = await database.users.find_one({"externalId": USER_ID})
    assert user is not None
    assert user["name"] == "Example Example"
    assert user["email"] == "example@example.org"  # the primary one, not the first listed
    assert user["imageUrl"] == "https://img.clerk.com/xxxxxx"
    assert user["createdAt"] == T0
    assert user["clerkUpdatedAt"] == T0 + 321
    assert user["version"] == 1
    assert event.kind == "user.created"
    assert event.record == user


async def test_user_with_null_names_and_no_email(server: Server, database: db.Database) -> None:
    # The name and email rules in detail: test_webhooks_mapping.py.
    payload = user_event(first_name=None, last_name="", email_addresses=[])
    assert (await server.post(payload)).status_code == 200
    user = await database.users.find_one({"externalId": USER_ID})
    assert user is not None
    assert (user["name"], user["email"]) == (None, None)


async def test_minimal_user_payload_without_optional_fields(
    server: Server, database: db.Database
) -> None:
    response = await server.post(envelope("user.created", {"id": "user_min", "object": "user"}))
    assert response.status_code == 200
    user = await database.users.find_one({"externalId": "user_min"})
    assert user is not None
    assert (user["name"], user["email"], user["imageUrl"], user["clerkUpdatedAt"]) == (
        None,
        None,
        None,
        None,
    )


async def test_user_updated_applies_and_an_older_update_is_ignored(
    server: Server, database: db.Database
) -> None:
    assert (await server.post(user_event())).status_code == 200
    async with server.store.events.subscribe(events.user_channel(USER_ID)) as stream:
        newer = user_event("user.updated", updated_at=T0 + 2_000, first_name="Ada")
        assert (await server.post(newer)).json() == {"status": "applied"}
        event = await next_event(stream)
        assert event.kind == "user.updated"
        assert event.record["name"] == "Ada Example"
        before = await snapshot(database)
        for stale_at in (T0 + 1_000, T0 + 2_000):  # older, and the same instant again
            older = user_event("user.updated", updated_at=stale_at, first_name="Old")
            response = await server.post(older)
            assert response.status_code == 200
            assert response.json() == {"status": "stale"}
        await assert_no_event(stream)
    after = await snapshot(database)
    assert after[db.USERS] == before[db.USERS]
    user = after[db.USERS][0]
    assert user["name"] == "Ada Example"
    assert user["version"] == 2


async def test_user_deleted_keeps_sessions_and_payments_untouched(
    server: Server, database: db.Database
) -> None:
    await server.post(user_event())
    await server.post(payment_event(status="paid"))
    await sessions.create(server.store, USER_ID, {"doc": "report.pdf"}, session_id="s-1")
    before = await snapshot(database)
    async with server.store.events.subscribe(events.user_channel(USER_ID)) as stream:
        response = await server.post(user_deleted())
        assert response.json() == {"status": "applied"}
        event = await next_event(stream)
    assert event.kind == "user.deleted"
    after = await snapshot(database)
    assert after[db.USERS] == []
    # Kept exactly as they were: same userId, no mark, no version bump.
    assert after[db.SESSIONS] == before[db.SESSIONS]
    assert after[db.PAYMENT_ATTEMPTS] == before[db.PAYMENT_ATTEMPTS]
    assert [t["_id"] for t in after["userTombstones"]] == [USER_ID]


@pytest.mark.parametrize("event_type", ["user.created", "user.updated"])
async def test_no_user_comes_back_after_user_deleted(
    server: Server, database: db.Database, event_type: str
) -> None:
    await server.post(user_event())
    await server.post(user_deleted())
    late = user_event(event_type, updated_at=T0 + 99_000)  # newer than anything stored
    response = await server.post(late)
    assert response.json() == {"status": "stale"}
    assert await database.users.count_documents({}) == 0


async def test_deleted_before_created_arrives_keeps_the_user_away(
    server: Server, database: db.Database
) -> None:
    assert (await server.post(user_deleted("user_never"))).status_code == 200
    response = await server.post(user_event(user_id="user_never"))
    assert response.json() == {"status": "stale"}
    assert await database.users.count_documents({}) == 0


# ---- payment attempts --------------------------------------------------------------------


async def test_payment_attempt_is_stored_as_sent_and_published(
    server: Server, database: db.Database
) -> None:
    data = payment_data(status="pending")
    async with server.store.events.subscribe(events.payments_channel(USER_ID)) as stream:
        response = await server.post(envelope("paymentAttempt.created", data))
        assert response.json() == {"status": "applied"}
        event = await next_event(stream)
    stored = await database.payment_attempts.find_one({"payment_id": "pay_1"})
    assert stored is not None
    assert stored["userId"] == USER_ID
    assert (stored["status"], stored["amount"], stored["currency"]) == ("pending", 2500, "USD")
    assert stored["createdAt"] == T0
    for field in (
        "payer",
        "totals",
        "subscription_items",
        "payment_source",
        "paid_at",
        "failed_at",
        "failed_reason",
        "charge_type",
        "billing_date",
        "updated_at",
        "status",
    ):
        assert stored[field] == data[field], field
    assert stored["metadata"] == {
        "attempt_id": "pa_pay_1",
        "statement_id": "stmt_1",
        "gateway_external_id": "pi_1",
        "instance_id": "ins_123",
    }
    assert event.kind == "payment.created"
    assert event.record == stored


async def test_payment_attempt_updates_and_never_goes_back_to_pending(
    server: Server, database: db.Database
) -> None:
    await server.post(payment_event(status="pending", updated_at=T0))
    async with server.store.events.subscribe(events.payments_channel(USER_ID)) as stream:
        paid = payment_event("paymentAttempt.updated", status="paid", updated_at=T0 + 5_000)
        assert (await server.post(paid)).json() == {"status": "applied"}
        event = await next_event(stream)
        assert (event.kind, event.record["status"]) == ("payment.updated", "paid")
        before = await snapshot(database)
        for late in (
            payment_event("paymentAttempt.updated", status="pending", updated_at=T0 + 9_000),
            payment_event("paymentAttempt.updated", status="failed", updated_at=T0 + 1_000),
            payment_event("paymentAttempt.created", status="pending", updated_at=T0),
            paid,  # the same state again, under a new svix id
        ):
            response = await server.post(late)
            assert response.json() == {"status": "stale"}
        await assert_no_event(stream)
    after = await snapshot(database)
    assert after[db.PAYMENT_ATTEMPTS] == before[db.PAYMENT_ATTEMPTS]
    stored = after[db.PAYMENT_ATTEMPTS][0]
    assert (stored["status"], stored["paid_at"], stored["version"]) == ("paid", T0 + 5_000, 2)


async def test_failed_attempt_is_stored_with_its_reason(
    server: Server, database: db.Database
) -> None:
    await server.post(payment_event(status="pending"))
    failed = payment_event("paymentAttempt.updated", status="failed", updated_at=T0 + 10)
    assert (await server.post(failed)).status_code == 200
    stored = await database.payment_attempts.find_one({"payment_id": "pay_1"})
    assert stored is not None
    assert stored["status"] == "failed"
    assert stored["failed_reason"] == {"code": "card_declined", "decline_code": "generic_decline"}
    assert stored["failed_at"] == T0 + 10


async def test_organization_payer_is_stored_without_a_user(
    server: Server, database: db.Database
) -> None:
    data = payment_data("pay_org", user_id=None, status="paid")
    response = await server.post(envelope("paymentAttempt.created", data))
    assert response.json() == {"status": "applied"}
    stored = await database.payment_attempts.find_one({"payment_id": "pay_org"})
    assert stored is not None
    assert stored["userId"] is None
    assert stored["payer"] == data["payer"]
    assert stored["payer"]["organization_id"] == "org_1"


async def test_absent_and_null_optional_fields_land_as_sent(
    server: Server, database: db.Database
) -> None:
    data = payment_data("pay_sparse")
    del data["payer"]["first_name"]  # optional: absent
    data["payer"]["last_name"] = None
    del data["payment_source"]["card_type"]
    del data["payment_source"]["last4"]
    data["subscription_items"][0]["plan"] = None
    data["subscription_items"][0]["plan_id"] = None
    del data["paid_at"], data["failed_at"], data["failed_reason"]
    data["unknown_future_field"] = {"anything": [1, 2, 3]}
    response = await server.post(envelope("paymentAttempt.created", data))
    assert response.status_code == 200
    stored = await database.payment_attempts.find_one({"payment_id": "pay_sparse"})
    assert stored is not None
    assert stored["payer"] == data["payer"]
    assert "first_name" not in stored["payer"]
    assert stored["payer"]["last_name"] is None
    assert stored["payment_source"] == data["payment_source"]
    assert stored["subscription_items"] == data["subscription_items"]
    assert stored["paid_at"] is None and stored["failed_reason"] is None


async def test_payment_attempt_without_totals_or_payer(
    server: Server, database: db.Database
) -> None:
    data = {"id": "pa_bare", "status": "pending", "totals": None, "payer": None}
    response = await server.post(envelope("paymentAttempt.created", data))
    assert response.json() == {"status": "applied"}
    stored = await database.payment_attempts.find_one({"payment_id": "pa_bare"})
    assert stored is not None
    assert (stored["userId"], stored["amount"], stored["currency"]) == (None, None, None)


# ---- billing events and other types ------------------------------------------------------


BILLING_EVENTS = (
    (
        "subscription.active",
        {
            "id": "csub_1",
            "object": "commerce_subscription",
            "status": "active",
            "updated_at": T0 + 7,
            "payer": {"user_id": USER_ID, "first_name": None},
            "items": [{"id": "csubi_1", "plan": None, "status": "active"}],
        },
    ),
    ("subscriptionItem.canceled", {"id": "csubi_1", "status": "canceled", "plan": None}),
    ("subscription.updated", None),
    ("subscriptionItem.pastDue", ["not", "an", "object"]),
    ("subscription.created", "a string"),
    ("subscriptionItem.ended", {"updated_at": "not a number", "payer": "nobody"}),
)


async def test_billing_events_are_stored_whatever_their_shape(
    server: Server, database: db.Database
) -> None:
    for number, (event_type, data) in enumerate(BILLING_EVENTS):
        response = await server.post(envelope(event_type, data), msg_id=f"msg_{number}")
        assert response.json() == {"status": "applied"}, event_type
    stored = await database.db[db.BILLING_EVENTS].find({}).sort("svixId", 1).to_list()
    assert [(e["svixId"], e["type"], e["data"]) for e in stored] == [
        (f"msg_{number}", event_type, data)
        for number, (event_type, data) in enumerate(BILLING_EVENTS)
    ]
    assert all(e["receivedAt"] > T0 for e in stored)
    assert [(e["clerkUpdatedAt"], e["objectId"], e["userId"]) for e in stored[:2]] == [
        (T0 + 7, "csub_1", USER_ID),
        (None, "csubi_1", None),
    ]
    assert all(e["objectId"] is None and e["clerkUpdatedAt"] is None for e in stored[2:])


async def test_other_event_types_are_acknowledged_and_ignored(
    server: Server, database: db.Database, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="datadiver_graph"):
        response = await server.post(envelope("session.created", {"id": "sess_1"}))
    assert response.status_code == 200
    assert response.json() == {"status": "ignored"}
    assert "session.created" in caplog.text
    assert all(docs == [] for docs in (await snapshot(database)).values())


# ---- idempotency ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        user_event(),
        user_deleted(),
        payment_event(status="pending"),
        envelope("subscription.updated", {"id": "csub_1"}),
    ],
    ids=["user", "deleted", "payment", "billing"],
)
async def test_a_repeated_svix_id_is_acknowledged_and_changes_nothing(
    server: Server, database: db.Database, payload: dict[str, Any]
) -> None:
    first = await server.post(payload, msg_id="msg_twice")
    assert first.json() == {"status": "applied"}
    before = await snapshot(database)
    assert [d["_id"] for d in before[db.WEBHOOK_DELIVERIES]] == ["msg_twice"]
    assert isinstance(before[db.WEBHOOK_DELIVERIES][0]["receivedAt"], datetime)
    # Also with a different (newer) body: the id alone decides.
    changed = user_event("user.updated", updated_at=T0 + 50_000, first_name="Changed")
    for again in (payload, changed):
        response = await server.post(again, msg_id="msg_twice")
        assert response.status_code == 200
        assert response.json() == {"status": "duplicate"}
    assert await snapshot(database) == before


async def test_concurrent_deliveries_are_stored_together_each_with_its_own_outcome(
    server: Server, database: db.Database
) -> None:
    # Sent at once, user deliveries are group-committed: one read, one write and one
    # remember for many. Each still gets its own answer, and each change its own event.
    await server.post(user_event(user_id="user_old", updated_at=T0 + 500))
    await server.post(user_deleted("user_gone"))
    fresh = [f"user_{i}" for i in range(8)]
    sent = [(user_event(user_id=user_id), f"msg_{user_id}") for user_id in fresh] + [
        (user_event("user.updated", user_id="user_old", updated_at=T0 + 100), "msg_old"),
        (user_event("user.updated", user_id="user_gone", updated_at=T0 + 900), "msg_gone"),
        (user_event(user_id="user_dup"), "msg_dup"),
        (user_event(user_id="user_dup"), "msg_dup"),  # one message delivered twice at once
    ]
    channels = [events.user_channel(user_id) for user_id in [*fresh, "user_dup", "user_gone"]]
    async with server.store.events.subscribe(*channels) as stream:
        responses = await asyncio.gather(
            *(server.post(payload, msg_id=msg_id) for payload, msg_id in sent)
        )
        published = [await next_event(stream) for _ in range(len(fresh) + 1)]
        await assert_no_event(stream)
    outcomes = [response.json()["status"] for response in responses]
    assert outcomes[: len(fresh)] == ["applied"] * len(fresh)
    assert outcomes[len(fresh) : len(fresh) + 2] == ["stale", "stale"]  # older; deleted
    assert sorted(outcomes[-2:]) == ["applied", "duplicate"]
    after = await snapshot(database)
    assert sorted(user["externalId"] for user in after[db.USERS]) == sorted(
        [*fresh, "user_dup", "user_old"]
    )
    remembered = {delivery["_id"] for delivery in after[db.WEBHOOK_DELIVERIES]}
    assert {msg_id for _, msg_id in sent} <= remembered
    stored = {user["externalId"]: user for user in after[db.USERS]}
    assert sorted(event.record["externalId"] for event in published) == sorted([*fresh, "user_dup"])
    for event in published:
        assert event.kind == "user.created"
        assert event.record == stored[event.record["externalId"]]


async def test_deliveries_expire_after_a_week(database: db.Database) -> None:
    indexes = await database.db[db.WEBHOOK_DELIVERIES].index_information()
    ttl = indexes["ttl_received_at"]
    assert ttl["key"] == [("receivedAt", 1)]
    assert ttl["expireAfterSeconds"] >= 3 * 24 * 3600


# ---- signatures --------------------------------------------------------------------------


def _tamper(kind: str) -> tuple[bytes, dict[str, str]]:
    body, headers = sign(USER_CREATED)
    now = datetime.now(UTC)
    if kind.startswith("missing-"):
        del headers[kind.removeprefix("missing-")]
    elif kind == "expired":
        body, headers = sign(USER_CREATED, at=now - timedelta(minutes=6))
    elif kind == "future":
        body, headers = sign(USER_CREATED, at=now + timedelta(minutes=6))
    elif kind == "bad-timestamp":
        headers["svix-timestamp"] = "yesterday"
    elif kind == "other-body":
        other, _ = sign(user_event(first_name="Mallory"))
        body = other
    elif kind == "wrong-secret":
        other_secret = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="
        body, headers = sign(USER_CREATED, secret=other_secret)
    elif kind == "other-id":
        headers["svix-id"] = "msg_other"
    elif kind.startswith("garbage:"):
        headers["svix-signature"] = kind.removeprefix("garbage:")
    else:
        raise AssertionError(kind)
    return body, headers


TAMPERED = (
    "missing-svix-id",
    "missing-svix-timestamp",
    "missing-svix-signature",
    "expired",
    "future",
    "bad-timestamp",
    "other-body",
    "wrong-secret",
    "other-id",
    "garbage:nonsense",
    "garbage:v1,!!!not-base64!!!",
    "garbage:v1,",
    "garbage:v2,abc v1",
    "garbage:",
)


async def test_bad_signatures_are_refused_and_nothing_is_written(
    server: Server, database: db.Database, caplog: pytest.LogCaptureFixture
) -> None:
    # One server for every case keeps this fast; each assertion names its case.
    for kind in TAMPERED:
        body, headers = _tamper(kind)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="datadiver_graph"):
            response = await server.client.post(PATHS[0], content=body, headers=headers)
        assert response.status_code == 400, kind
        assert response.json() == {"error": "invalid signature"}, kind
        assert "invalid signature" in caplog.text, kind
        assert "example@example.org" not in caplog.text, kind  # the body is never logged
    assert all(docs == [] for docs in (await snapshot(database)).values())


async def test_unbranded_webhook_headers_are_accepted(
    server: Server, database: db.Database
) -> None:
    response = await server.post(USER_CREATED, prefix="webhook")
    assert response.json() == {"status": "applied"}
    assert await database.users.count_documents({}) == 1


async def test_svix_published_test_vector() -> None:
    # From Svix's docs and library tests: this secret, id and timestamp sign this payload so.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    payload = '{"test": 2432232314}'
    at = datetime.fromtimestamp(1614265330, UTC)
    signature = Webhook(secret).sign("msg_p5jXN8AQM9LWM0D4loKWxJek", at, payload)
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


async def test_svix_test_vector_is_refused_as_expired(
    webhook_settings: Settings, database: db.Database
) -> None:
    settings = webhook_settings.model_copy(
        update={"clerk_webhook_secret": SecretStr("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")}
    )
    headers = {
        "svix-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "svix-timestamp": "1614265330",
        "svix-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    async with (
        serve_app(create_app(settings)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        response = await client.post(PATHS[0], content=b'{"test": 2432232314}', headers=headers)
    assert response.status_code == 400  # correctly signed, but from 2021


# ---- bodies and payload shapes -----------------------------------------------------------


INVALID_PAYLOADS = (
    (b"not json at all", "body is not valid JSON"),
    (b"", "body is not valid JSON"),
    (b"[1, 2, 3]", "payload must be a JSON object"),
    (b'"user.created"', "payload must be a JSON object"),
    (b'{"data": {"id": "user_1"}}', "payload lacks a string `type`"),
    (b'{"type": 7, "data": {}}', "payload lacks a string `type`"),
    (b'{"type": "user.created"}', "payload lacks `data`"),
    (b'{"type": "user.created", "data": null}', "user.created: `data` must be a JSON object"),
    (b'{"type": "user.created", "data": {"id": ""}}', "user event: `data.id`"),
    (b'{"type": "user.updated", "data": {"id": "bad id!"}}', "userId must be"),
    (b'{"type": "user.deleted", "data": {"deleted": true}}', "user.deleted: `data.id`"),
    (b'{"type": "paymentAttempt.created", "data": {"status": "paid"}}', "neither"),
    (b'{"type": "paymentAttempt.updated", "data": {"id": "pa_1"}}', "data.status"),
    (b'{"type": "paymentAttempt.updated", "data": {"id": "pa_1", "status": 3}}', "data.status"),
)


async def test_verified_but_invalid_payloads_are_400(server: Server, database: db.Database) -> None:
    for body, error in INVALID_PAYLOADS:
        response = await server.post(body)
        assert response.status_code == 400, body
        assert error in response.json()["error"], body
    assert all(docs == [] for docs in (await snapshot(database)).values())


async def test_a_body_over_one_mebibyte_is_refused(server: Server, database: db.Database) -> None:
    padding = "x" * MAX_BODY_BYTES
    body, headers = sign(user_event(padding=padding))
    response = await server.client.post(PATHS[0], content=body, headers=headers)
    assert response.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the stream is capped
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    response = await server.client.post(PATHS[0], content=chunks(), headers=headers)
    assert response.status_code == 413
    assert await database.users.count_documents({}) == 0


async def test_a_body_just_under_the_limit_is_accepted(
    server: Server, database: db.Database
) -> None:
    payload = user_event()
    size = len(orjson.dumps(payload))
    payload["data"]["unsafe_metadata"] = {"pad": "x" * (MAX_BODY_BYTES - size - 40)}
    body, headers = sign(payload)
    assert MAX_BODY_BYTES - 64 < len(body) <= MAX_BODY_BYTES
    response = await server.client.post(PATHS[0], content=body, headers=headers)
    assert response.json() == {"status": "applied"}


# ---- the signing secret --------------------------------------------------------------------


@pytest.mark.parametrize("secret", ["whsec_", "whsec_abcde"])
async def test_an_unusable_secret_is_503_and_logged(
    settings: Settings, database: db.Database, caplog: pytest.LogCaptureFixture, secret: str
) -> None:
    broken = settings.model_copy(update={"clerk_webhook_secret": SecretStr(secret)})
    async with (
        serve_app(create_app(broken)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        body, headers = sign(USER_CREATED)
        with caplog.at_level(logging.ERROR, logger="datadiver_graph"):
            response = await client.post(PATHS[0], content=body, headers=headers)
    assert response.status_code == 503
    assert response.json() == {"error": "webhook signing secret is not configured"}
    assert "CLERK_WEBHOOK_SECRET" in caplog.text
    assert await database.users.count_documents({}) == 0


# ---- failures ------------------------------------------------------------------------------


async def test_a_database_that_does_not_answer_is_503_within_the_bound(
    server: Server, database: db.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def hangs(*args: Any) -> None:
        await asyncio.sleep(30)

    monkeypatch.setattr(webhooks, "PROCESSING_TIMEOUT_S", 0.2)
    monkeypatch.setattr(clerk_events, "handle_delivery", hangs)
    response = await server.post(USER_CREATED)
    assert response.status_code == 503
    assert response.json() == {"error": "storage unavailable; retry later"}
