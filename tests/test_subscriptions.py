"""GraphQL subscriptions over real WebSockets, both protocols, against the served app.

Changes come from where they come from in production: GraphQL mutations over HTTP, the
domain functions the Clerk webhook calls (on the app's own store, so the app's own EventHub
carries the event), and a real Svix-signed POST to /webhooks/clerk.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from svix.webhooks import Webhook

from datadiver_graph.api.http import GraphQLView
from datadiver_graph.app import create_app
from datadiver_graph.config import Settings
from datadiver_graph.domain import payments, users
from datadiver_graph.domain.store import Store
from datadiver_graph.storage.mongo import Database
from tests.clerk_fixtures import SERVICE_KEY
from tests.graphql_client import gql
from tests.jwks_server import JwksServer, TestKey, clerk_claims
from tests.servers import serve_app
from tests.webhook_support import SECRET
from tests.ws_client import LEGACY_WS, PROTOCOLS, TRANSPORT_WS, open_ws

T0 = 1_754_000_000_000

SESSION_FIELDS = "sessionId userId active metadata version"
USER_FIELDS = "externalId name email preferences version"
PAYMENT_FIELDS = "paymentId userId status amount version"

CURRENT_USER = f"subscription {{ currentUser {{ {USER_FIELDS} }} }}"
SESSION = f"subscription($id: String!) {{ session(sessionId: $id) {{ {SESSION_FIELDS} }} }}"
USER_SESSIONS = f"""subscription($userId: String, $activeOnly: Boolean!) {{
  userSessions(userId: $userId, activeOnly: $activeOnly) {{ {SESSION_FIELDS} }}
}}"""
LATEST_PAYMENT = f"""subscription($userId: String) {{
  latestPayment(userId: $userId) {{ {PAYMENT_FIELDS} }}
}}"""

CREATE_SESSION = f"""mutation($userId: String, $metadata: JSON, $sessionId: String) {{
  createSession(userId: $userId, metadata: $metadata, sessionId: $sessionId) {{ {SESSION_FIELDS} }}
}}"""
UPDATE_SESSION = f"""mutation($id: String!, $metadata: JSON, $active: Boolean) {{
  updateSession(sessionId: $id, metadata: $metadata, active: $active) {{ {SESSION_FIELDS} }}
}}"""
TOUCH_SESSION = "mutation($id: String!) { touchSession(sessionId: $id) { version } }"
END_SESSION = "mutation($id: String!) { endSession(sessionId: $id) { version } }"
UPDATE_USER = (
    "mutation($name: String, $p: JSON) { updateUser(name: $name, preferences: $p) { version } }"
)

protocols = pytest.mark.parametrize("protocol", PROTOCOLS)


# --- fixtures --------------------------------------------------------------------------------


@dataclass
class Served:
    app: Starlette
    url: str
    http: httpx.AsyncClient

    @property
    def store(self) -> Store:
        store: Store = self.app.state.store
        return store

    @property
    def view(self) -> GraphQLView:
        for route in self.app.routes:
            endpoint = getattr(route, "app", None)
            if isinstance(endpoint, GraphQLView):
                return endpoint
        raise AssertionError("no GraphQLView among the app's routes")


@pytest.fixture
async def served(clerk_settings: Settings, database: Database) -> AsyncIterator[Served]:
    app = create_app(clerk_settings)
    async with (
        serve_app(app) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as http,
    ):
        yield Served(app, url, http)


def bearer(token: str) -> dict[str, Any]:
    return {"Authorization": f"Bearer {token}"}


async def make_user(store: Store, external_id: str, name: str = "Ada") -> users.User:
    user = await users.upsert_from_clerk(
        store,
        users.ClerkProfile(
            external_id=external_id,
            name=name,
            email=f"{external_id}@example.com",
            image_url=None,
            created_at=T0,
            updated_at=T0,
        ),
    )
    assert user is not None
    return user


async def create_session(
    served: Served, token: str, session_id: str, metadata: dict[str, Any] | None = None
) -> dict[str, Any]:
    result = await gql(
        served.http, CREATE_SESSION, {"sessionId": session_id, "metadata": metadata}, token=token
    )
    assert result.errors == [], result.body
    session: dict[str, Any] = result.data["createSession"]
    return session


async def eventually(check: Callable[[], bool], what: str, within: float = 5.0) -> None:
    """Poll `check` in this task (no helper task, so task counts stay exact)."""
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.02)


def task_count() -> int:
    return len(asyncio.all_tasks())


def signed_webhook(payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    body = orjson.dumps(payload)
    msg_id = f"msg_{uuid.uuid4().hex}"
    at = datetime.now(UTC)
    return body, {
        "content-type": "application/json",
        "svix-id": msg_id,
        "svix-timestamp": str(int(at.timestamp())),
        "svix-signature": Webhook(SECRET).sign(msg_id, at, body.decode()),
    }


def clerk_user_updated(external_id: str, first: str, last: str, updated_at: int) -> dict[str, Any]:
    return {
        "object": "event",
        "type": "user.updated",
        "timestamp": updated_at,
        "data": {
            "object": "user",
            "id": external_id,
            "first_name": first,
            "last_name": last,
            "email_addresses": [{"id": "idn_1", "email_address": f"{external_id}@example.org"}],
            "primary_email_address_id": "idn_1",
            "image_url": None,
            "created_at": T0,
            "updated_at": updated_at,
        },
    }


def clerk_payment(payment_id: str, user_id: str, status: str, at: int) -> dict[str, Any]:
    money = {"amount": 4200, "currency": "USD"}
    return {
        "object": "event",
        "type": "paymentAttempt.updated",
        "timestamp": at,
        "data": {
            "id": f"pa_{payment_id}",
            "payment_id": payment_id,
            "status": status,
            "payer": {"id": "cpayer_1", "user_id": user_id},
            "totals": {"grand_total": money},
            "created_at": at,
            "updated_at": at,
            "paid_at": at if status == "paid" else None,
        },
    }


def webhooks_available(app: Starlette) -> bool:
    return any(getattr(route, "path", None) == "/webhooks/clerk" for route in app.routes)


# --- snapshot, then changes --------------------------------------------------------------------


@protocols
async def test_current_user_snapshot_then_mutation_domain_and_webhook_changes(
    served: Served, token_for: Callable[[str], str], protocol: str
) -> None:
    await make_user(served.store, "user_ada", "Ada")
    token = token_for("user_ada")
    async with open_ws(served.url, protocol, bearer(token)) as ws:
        op = await ws.subscribe(CURRENT_USER)
        snapshot = (await ws.data(op))["currentUser"]
        assert snapshot["externalId"] == "user_ada"
        assert snapshot["name"] == "Ada" and snapshot["version"] == 1

        # A GraphQL mutation over HTTP.
        result = await gql(
            served.http, UPDATE_USER, {"name": "Ada L", "p": {"theme": "dark"}}, token=token
        )
        assert result.errors == []
        changed = (await ws.data(op))["currentUser"]
        assert changed["name"] == "Ada L" and changed["preferences"] == {"theme": "dark"}
        assert changed["version"] == 2

        # The domain function the Clerk webhook calls, on the app's own store.
        await users.upsert_from_clerk(
            served.store,
            users.ClerkProfile(
                external_id="user_ada",
                name="Ada Lovelace",
                email="ada@example.org",
                image_url=None,
                created_at=T0,
                updated_at=T0 + 10,
            ),
        )
        changed = (await ws.data(op))["currentUser"]
        assert changed["name"] == "Ada Lovelace" and changed["email"] == "ada@example.org"
        assert changed["version"] == 3

        if not webhooks_available(served.app):
            return
        # A real Svix-signed delivery through /webhooks/clerk.
        body, headers = signed_webhook(clerk_user_updated("user_ada", "Augusta", "King", T0 + 20))
        response = await served.http.post("/webhooks/clerk", content=body, headers=headers)
        assert response.status_code == 200, response.text
        changed = (await ws.data(op))["currentUser"]
        assert changed["name"] == "Augusta King" and changed["version"] == 4
        assert ws.pending(op) == []


@protocols
async def test_session_snapshot_then_changes(
    served: Served, token_for: Callable[[str], str], protocol: str
) -> None:
    token = token_for("user_ada")
    await create_session(served, token, "sess-1", {"topic": "fish"})
    async with open_ws(served.url, protocol, {"authToken": token}) as ws:
        op = await ws.subscribe(SESSION, {"id": "sess-1"})
        snapshot = (await ws.data(op))["session"]
        assert snapshot == {
            "sessionId": "sess-1",
            "userId": "user_ada",
            "active": True,
            "metadata": {"topic": "fish"},
            "version": 1,
        }
        result = await gql(
            served.http, UPDATE_SESSION, {"id": "sess-1", "metadata": {"step": 2}}, token=token
        )
        assert result.errors == []
        changed = (await ws.data(op))["session"]
        assert changed["metadata"] == {"topic": "fish", "step": 2} and changed["version"] == 2

        assert (await gql(served.http, TOUCH_SESSION, {"id": "sess-1"}, token=token)).errors == []
        assert (await ws.data(op))["session"]["version"] == 3

        assert (await gql(served.http, END_SESSION, {"id": "sess-1"}, token=token)).errors == []
        ended = (await ws.data(op))["session"]
        assert ended["active"] is False and ended["version"] == 4


@protocols
async def test_session_that_does_not_exist_yet_is_null_then_appears(
    served: Served, token_for: Callable[[str], str], protocol: str
) -> None:
    token = token_for("user_ada")
    async with open_ws(served.url, protocol, bearer(token)) as ws:
        op = await ws.subscribe(SESSION, {"id": "sess-later"})
        assert (await ws.data(op)) == {"session": None}
        await create_session(served, token, "sess-later")
        appeared = (await ws.data(op))["session"]
        assert appeared["sessionId"] == "sess-later" and appeared["version"] == 1


@protocols
async def test_user_sessions_snapshot_then_changes(
    served: Served, token_for: Callable[[str], str], protocol: str
) -> None:
    token = token_for("user_ada")
    await create_session(served, token, "s-a")
    await create_session(served, token, "s-b")
    await create_session(served, token_for("user_bob"), "s-bob")
    async with open_ws(served.url, protocol, {"authorization": f"Bearer {token}"}) as ws:
        op = await ws.subscribe(USER_SESSIONS, {"userId": "user_ada", "activeOnly": True})
        snapshot = (await ws.data(op))["userSessions"]
        assert {s["sessionId"] for s in snapshot} == {"s-a", "s-b"}

        await create_session(served, token, "s-c")
        listed = (await ws.data(op))["userSessions"]
        assert listed[0]["sessionId"] == "s-c"
        assert {s["sessionId"] for s in listed} == {"s-a", "s-b", "s-c"}

        assert (await gql(served.http, END_SESSION, {"id": "s-a"}, token=token)).errors == []
        listed = (await ws.data(op))["userSessions"]
        assert {s["sessionId"] for s in listed} == {"s-b", "s-c"}

        # Another user's session never shows up in this list.
        await create_session(served, token_for("user_bob"), "s-bob-2")
        assert (await gql(served.http, TOUCH_SESSION, {"id": "s-b"}, token=token)).errors == []
        listed = (await ws.data(op))["userSessions"]
        assert [s["sessionId"] for s in listed] == ["s-b", "s-c"]
        assert ws.pending(op) == []


@protocols
async def test_latest_payment_snapshot_then_domain_and_webhook_changes(
    served: Served, token_for: Callable[[str], str], protocol: str
) -> None:
    token = token_for("user_ada")
    async with open_ws(served.url, protocol, bearer(token)) as ws:
        op = await ws.subscribe(LATEST_PAYMENT)
        assert (await ws.data(op)) == {"latestPayment": None}

        first = payments.new_attempt(
            payment_id="pay_1", user_id="user_ada", status="pending", amount=1999, created_at=T0
        )
        await payments.upsert_attempt(served.store, first)
        latest = (await ws.data(op))["latestPayment"]
        assert latest == {
            "paymentId": "pay_1",
            "userId": "user_ada",
            "status": "pending",
            "amount": 1999,
            "version": 1,
        }
        # Someone else's payment is not this user's latest.
        other = payments.new_attempt(
            payment_id="pay_bob", user_id="user_bob", status="paid", created_at=T0 + 5
        )
        await payments.upsert_attempt(served.store, other)
        settled = first.model_copy(update={"status": "paid", "paid_at": T0 + 1})
        await payments.upsert_attempt(served.store, settled)
        latest = (await ws.data(op))["latestPayment"]
        assert latest["paymentId"] == "pay_1" and latest["status"] == "paid"
        assert latest["version"] == 2

        if not webhooks_available(served.app):
            return
        body, headers = signed_webhook(clerk_payment("pay_2", "user_ada", "paid", T0 + 100))
        response = await served.http.post("/webhooks/clerk", content=body, headers=headers)
        assert response.status_code == 200, response.text
        latest = (await ws.data(op))["latestPayment"]
        assert latest["paymentId"] == "pay_2" and latest["amount"] == 4200
        assert ws.pending(op) == []


# --- who may subscribe -------------------------------------------------------------------------


@protocols
async def test_another_users_data_is_refused(
    served: Served, token_for: Callable[[str], str], protocol: str
) -> None:
    await create_session(served, token_for("user_ada"), "sess-ada")
    async with open_ws(served.url, protocol, bearer(token_for("user_bob"))) as ws:
        refused = [
            await ws.subscribe(SESSION, {"id": "sess-ada"}),
            await ws.subscribe(USER_SESSIONS, {"userId": "user_ada", "activeOnly": False}),
            await ws.subscribe(LATEST_PAYMENT, {"userId": "user_ada"}),
        ]
        expected = [
            "this session belongs to another user",
            "you may only access your own data",
            "you may only access your own data",
        ]
        for op, text in zip(refused, expected, strict=True):
            message = await ws.message(op)
            assert message.kind == "error", message  # refused before any data
            assert message.error_messages == [text]
            assert message.error_codes == ["FORBIDDEN"]
        # Nothing of Ada's arrives afterwards, and the connection still works for Bob's own data.
        await gql(served.http, TOUCH_SESSION, {"id": "sess-ada"}, token=token_for("user_ada"))
        own = await ws.subscribe(USER_SESSIONS, {"userId": "user_bob", "activeOnly": False})
        assert (await ws.data(own)) == {"userSessions": []}
        assert served.store.events.stats()["subscriptions"] == 1  # only Bob's own
        for op in refused:
            assert ws.pending(op) == []  # an error ends the operation: no data after it


async def test_unauthenticated_connection_init_is_closed_with_4403(
    served: Served, clerk: JwksServer
) -> None:
    forged = TestKey.rsa("key-1").sign(clerk_claims(clerk.issuer, sub="user_ada"))
    for params in (None, {}, bearer(forged), {"serviceKey": "wrong-key-0123456789"}):
        async with open_ws(served.url, TRANSPORT_WS, init=False) as ws:
            await ws.send({"type": "connection_init", "payload": params or {}})
            assert await ws.closed() == (4403, "Forbidden")


async def test_unauthenticated_connection_init_is_refused_on_legacy_graphql_ws(
    served: Served,
) -> None:
    """graphql-ws has no 4403: the server answers connection_error and closes (as Apollo's)."""
    async with open_ws(served.url, LEGACY_WS, init=False) as ws:
        reply = await ws.init({})
        assert reply["type"] == "connection_error"
        assert reply["payload"]["extensions"] == {"code": "UNAUTHENTICATED"}
        assert reply["payload"]["message"].startswith("unauthenticated: ")
        code, _ = await ws.closed()
        assert code == 1011


async def test_subscribe_before_connection_ack_is_unauthorized(served: Served) -> None:
    async with open_ws(served.url, TRANSPORT_WS, init=False) as ws:
        await ws.subscribe(CURRENT_USER)
        assert await ws.closed() == (4401, "Unauthorized")


@protocols
async def test_service_key_may_subscribe_to_any_users_data(
    served: Served, token_for: Callable[[str], str], protocol: str
) -> None:
    await create_session(served, token_for("user_ada"), "sess-ada")
    async with open_ws(served.url, protocol, {"serviceKey": SERVICE_KEY}) as ws:
        session_op = await ws.subscribe(SESSION, {"id": "sess-ada"})
        list_op = await ws.subscribe(USER_SESSIONS, {"userId": "user_ada", "activeOnly": False})
        pay_op = await ws.subscribe(LATEST_PAYMENT, {"userId": "user_ada"})
        assert (await ws.data(session_op))["session"]["userId"] == "user_ada"
        assert [s["sessionId"] for s in (await ws.data(list_op))["userSessions"]] == ["sess-ada"]
        assert (await ws.data(pay_op)) == {"latestPayment": None}

        await gql(served.http, TOUCH_SESSION, {"id": "sess-ada"}, token=token_for("user_ada"))
        assert (await ws.data(session_op))["session"]["version"] == 2
        assert (await ws.data(list_op))["userSessions"][0]["version"] == 2
        await payments.upsert_attempt(
            served.store,
            payments.new_attempt(payment_id="p1", user_id="user_ada", status="paid"),
        )
        assert (await ws.data(pay_op))["latestPayment"]["paymentId"] == "p1"

        # A service key has no user of its own.
        me = await ws.subscribe(CURRENT_USER)
        refused = await ws.message(me)
        assert refused.kind == "error" and refused.error_codes == ["FORBIDDEN"], refused


# --- ending ------------------------------------------------------------------------------------


@protocols
async def test_subscriptions_complete_when_their_user_is_deleted(
    served: Served, token_for: Callable[[str], str], protocol: str
) -> None:
    await make_user(served.store, "user_ada")
    token = token_for("user_ada")
    await create_session(served, token, "sess-ada")
    async with (
        open_ws(served.url, protocol, bearer(token)) as ws,
        open_ws(served.url, protocol, {"serviceKey": SERVICE_KEY}) as service,
    ):
        ops = [
            await ws.subscribe(CURRENT_USER),
            await ws.subscribe(SESSION, {"id": "sess-ada"}),
            await ws.subscribe(USER_SESSIONS, {"activeOnly": False}),
            await ws.subscribe(LATEST_PAYMENT),
        ]
        for op in ops:
            await ws.data(op)
        watched = await service.subscribe(SESSION, {"id": "sess-ada"})
        await service.data(watched)

        deleted = await users.delete_from_clerk(served.store, "user_ada")
        assert deleted is not None
        for op in ops:
            message = await ws.message(op)
            assert message.kind == "complete", message

        # The service's view of the (kept) session is not tied to the deleted user.
        await gql(served.http, TOUCH_SESSION, {"id": "sess-ada"}, service_key=SERVICE_KEY)
        assert (await service.data(watched))["session"]["version"] == 2
    await eventually(
        lambda: served.store.events.stats()["subscriptions"] == 0, "every subscription released"
    )


@protocols
async def test_unsubscribe_and_disconnect_leave_nothing_behind(
    served: Served, token_for: Callable[[str], str], protocol: str
) -> None:
    hub = served.store.events
    token = token_for("user_ada")
    await make_user(served.store, "user_ada")
    await create_session(served, token, "sess-ada")
    await asyncio.sleep(0.1)
    tasks_before = task_count()
    assert hub.stats()["subscriptions"] == 0 and hub.stats()["channels"] == 0

    async with open_ws(served.url, protocol, bearer(token)) as ws:
        user_op = await ws.subscribe(CURRENT_USER)
        session_op = await ws.subscribe(SESSION, {"id": "sess-ada"})
        list_op = await ws.subscribe(USER_SESSIONS, {"activeOnly": False})
        for op in (user_op, session_op, list_op):
            await ws.data(op)
        assert hub.stats()["subscriptions"] == 3
        # user:, session:, user-sessions: (each view also watches its user for deletion)
        assert hub.stats()["channels"] == 3

        await ws.unsubscribe(session_op)
        await eventually(lambda: hub.stats()["subscriptions"] == 2, "unsubscribed view released")
        assert hub.stats()["channels"] == 2  # session:sess-ada is no longer listened to

        # The stopped operation gets nothing more; the others still get their changes.
        await gql(served.http, TOUCH_SESSION, {"id": "sess-ada"}, token=token)
        assert (await ws.data(list_op))["userSessions"][0]["version"] == 2
        assert [m.kind for m in ws.pending(session_op)] in ([], ["complete"])

        if protocol == LEGACY_WS:
            await ws.terminate()
            await ws.closed()
        # else: leaving the block closes the socket without unsubscribing first

    await eventually(
        lambda: hub.stats()["subscriptions"] == 0 and hub.stats()["channels"] == 0,
        "disconnect releases every subscription and channel",
    )
    await eventually(lambda: task_count() <= tasks_before, f"tasks back to {tasks_before}")


@protocols
async def test_abrupt_disconnect_releases_subscriptions(
    served: Served, token_for: Callable[[str], str], protocol: str
) -> None:
    hub = served.store.events
    token = token_for("user_ada")
    await create_session(served, token, "sess-ada")
    await asyncio.sleep(0.1)
    tasks_before = task_count()
    async with open_ws(served.url, protocol, bearer(token)) as ws:
        op = await ws.subscribe(SESSION, {"id": "sess-ada"})
        await ws.data(op)
        assert hub.stats()["subscriptions"] == 1
        ws.ws.transport.abort()  # no close frame, like a client that lost its network
    await eventually(
        lambda: hub.stats()["subscriptions"] == 0 and hub.stats()["channels"] == 0,
        "an aborted connection releases its subscription",
    )
    await eventually(lambda: task_count() <= tasks_before, "tasks back to baseline")


# --- limits and keep-alive ---------------------------------------------------------------------


@protocols
async def test_subscriptions_per_connection_are_capped_at_50(
    served: Served, token_for: Callable[[str], str], protocol: str
) -> None:
    assert served.view.max_subscriptions_per_connection == 50
    token = token_for("user_ada")
    async with open_ws(served.url, protocol, bearer(token)) as ws:
        ops = [await ws.subscribe(SESSION, {"id": f"s-{n}"}) for n in range(50)]
        for op in ops:
            assert (await ws.data(op)) == {"session": None}
        over = await ws.subscribe(SESSION, {"id": "s-50"})
        refused = await ws.message(over)
        assert refused.kind == "error" and refused.error_messages == ["Subscription limit reached"]
        assert served.store.events.stats()["subscriptions"] == 50

        # Freeing one makes room for one more.
        await ws.unsubscribe(ops[0])
        await eventually(
            lambda: served.store.events.stats()["subscriptions"] == 49, "one subscription freed"
        )
        again = await ws.subscribe(SESSION, {"id": "s-51"})
        assert (await ws.data(again)) == {"session": None}


async def test_connection_init_wait_is_bounded(served: Served) -> None:
    view = served.view
    assert view.connection_init_wait_timeout == timedelta(seconds=10)
    view.connection_init_wait_timeout = timedelta(seconds=0.3)  # the same code path, sooner
    async with open_ws(served.url, TRANSPORT_WS, init=False) as ws:
        assert await ws.closed() == (4408, "Connection initialisation timeout")


async def test_keep_alive_messages_on_legacy_graphql_ws(
    served: Served, token_for: Callable[[str], str]
) -> None:
    view = served.view
    assert view.keep_alive is True and view.keep_alive_interval == 15
    view.keep_alive_interval = 0.2  # the same task, more often, so the test need not wait 15 s
    async with open_ws(served.url, LEGACY_WS, bearer(token_for("user_ada"))) as ws:
        for _ in range(3):
            await ws.wait_keep_alive()
        assert ws.keep_alives >= 3


async def test_ping_pong_on_graphql_transport_ws(
    served: Served, token_for: Callable[[str], str]
) -> None:
    async with open_ws(served.url, TRANSPORT_WS, bearer(token_for("user_ada"))) as ws:
        await ws.ping()
        reply = await ws.recv_json()
        assert reply == {"type": "pong"}


@protocols
async def test_a_subscribe_that_does_not_parse_is_refused_with_the_reason(
    served: Served, token_for: Callable[[str], str], protocol: str
) -> None:
    # graphql-transport-ws closes the socket (4400, as strawberry does for a document that
    # does not parse); legacy graphql-ws answers an error and the socket lives on.
    async with open_ws(served.url, protocol, bearer(token_for("user_ada"))) as ws:
        if protocol == TRANSPORT_WS:
            await ws.subscribe("subscription { session(sessionId: ")
            assert await ws.closed() == (4400, "Syntax Error: Unexpected <EOF>.")
            return
        broken = await ws.subscribe("subscription { session(sessionId: ")
        assert (await ws.message(broken)).error_codes == ["GRAPHQL_PARSE_FAILED"]
        assert "currentUser" in await ws.data(await ws.subscribe(CURRENT_USER))


@protocols
async def test_a_subscribe_over_the_token_limit_is_refused(
    served: Served, token_for: Callable[[str], str], protocol: str
) -> None:
    too_long = "subscription { " + "currentUser { id } " * 2000 + "}"
    async with open_ws(served.url, protocol, bearer(token_for("user_ada"))) as ws:
        op = await ws.subscribe(too_long)
        if protocol == TRANSPORT_WS:
            code, reason = await ws.closed()
            assert code == 4400 and "more than 2000 tokens" in reason
        else:
            assert (await ws.message(op)).error_codes == ["TOO_MANY_TOKENS"]


@protocols
async def test_queries_and_mutations_run_over_the_socket_then_complete(
    served: Served, protocol: str, token_for: Callable[[str], str]
) -> None:
    """Apollo's legacy WebSocketLink and `gql` send every operation over the socket."""
    await make_user(served.store, "user_ops")
    async with open_ws(served.url, protocol, bearer(token_for("user_ops"))) as ws:
        query = await ws.subscribe("{ getCurrentUser { externalId } }")
        assert await ws.data(query) == {"getCurrentUser": {"externalId": "user_ops"}}
        assert (await ws.message(query)).kind == "complete"
        mutation = await ws.subscribe(CREATE_SESSION, {"sessionId": "sess_ws_op"})
        created = await ws.data(mutation)
        assert created["createSession"]["sessionId"] == "sess_ws_op"
        assert (await ws.message(mutation)).kind == "complete"
    stored = await served.store.db.sessions.find_one({"sessionId": "sess_ws_op"})
    assert stored is not None and stored["userId"] == "user_ops"
