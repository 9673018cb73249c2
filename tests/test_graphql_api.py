"""Every query and mutation over real HTTP, with Clerk-style tokens from a real JWKS endpoint."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from pydantic import SecretStr
from pymongo import monitoring

from datadiver_graph.app import create_app
from datadiver_graph.config import Settings
from datadiver_graph.domain import payments, users
from datadiver_graph.storage.mongo import Database
from tests.clerk_fixtures import SERVICE_KEY
from tests.graphql_client import gql
from tests.jwks_server import JwksServer, TestKey, clerk_claims
from tests.servers import serve_app

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

SESSION_FIELDS = "sessionId userId active metadata createdAt lastActivity endedAt version"


@pytest.fixture
async def api(clerk_settings: Settings, database: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        serve_app(create_app(clerk_settings)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        yield client


async def add_user(database: Database, external_id: str, name: str = "Ada") -> None:
    user = users.User(
        id=f"id-{external_id}",
        external_id=external_id,
        name=name,
        email=f"{external_id}@example.com",
        created_at=1_700_000_000_000,
        updated_at=1_700_000_000_000,
    )
    await database.users.insert_one(user.to_doc())


async def add_payment(database: Database, user_id: str | None, payment_id: str, at: int) -> None:
    attempt = payments.new_attempt(
        payment_id=payment_id,
        user_id=user_id,
        status="paid",
        amount=1999,
        currency="usd",
        created_at=at,
        paid_at=at,
        totals={"grand_total": {"amount": 1999}},
    )
    await database.payment_attempts.insert_one(attempt.to_doc())


CREATE = f"""mutation($userId: String, $metadata: JSON, $sessionId: String) {{
  createSession(userId: $userId, metadata: $metadata, sessionId: $sessionId) {{ {SESSION_FIELDS} }}
}}"""


# --- getCurrentUser --------------------------------------------------------------------------


async def test_get_current_user_is_null_when_signed_out(api: httpx.AsyncClient) -> None:
    result = await gql(api, "{ getCurrentUser { externalId } }")
    assert result.status == 200
    assert result.data == {"getCurrentUser": None}
    assert result.errors == []


async def test_get_current_user_returns_the_caller(
    api: httpx.AsyncClient, database: Database, token_for: Callable[[str], str]
) -> None:
    await add_user(database, "user_ada")
    await add_user(database, "user_bob", name="Bob")
    result = await gql(
        api,
        "{ getCurrentUser { externalId name email preferences createdAt version } }",
        token=token_for("user_ada"),
    )
    user = result.data["getCurrentUser"]
    assert user["externalId"] == "user_ada" and user["name"] == "Ada"
    assert user["email"] == "user_ada@example.com"
    assert user["preferences"] == {}
    assert user["createdAt"] == "2023-11-14T22:13:20.000Z"
    assert user["version"] == 1


async def test_get_current_user_with_a_bad_token_is_unauthenticated(
    api: httpx.AsyncClient, clerk: JwksServer
) -> None:
    forged = TestKey.rsa("key-1").sign(clerk_claims(clerk.issuer, sub="user_ada"))
    result = await gql(api, "{ getCurrentUser { externalId } }", token=forged)
    assert result.codes == ["UNAUTHENTICATED"]
    assert result.data == {"getCurrentUser": None}


async def test_session_cookie_authenticates(
    api: httpx.AsyncClient, database: Database, token_for: Callable[[str], str]
) -> None:
    await add_user(database, "user_ada")
    response = await api.post(
        "/graphql",
        json={"query": "{ getCurrentUser { externalId } }"},
        headers={"cookie": f"__session={token_for('user_ada')}"},
    )
    assert response.json()["data"]["getCurrentUser"] == {"externalId": "user_ada"}


async def test_service_key_has_no_current_user(api: httpx.AsyncClient) -> None:
    result = await gql(api, "{ getCurrentUser { externalId } }", service_key=SERVICE_KEY)
    assert result.data == {"getCurrentUser": None} and result.errors == []


async def test_wrong_service_key_is_unauthenticated(api: httpx.AsyncClient) -> None:
    result = await gql(api, CREATE, {"userId": "user_ada"}, service_key="wrong-key-0123456789")
    assert result.codes == ["UNAUTHENTICATED"]


# --- sessions --------------------------------------------------------------------------------


async def test_session_lifecycle_for_its_owner(
    api: httpx.AsyncClient, database: Database, token_for: Callable[[str], str]
) -> None:
    token = token_for("user_ada")
    created = await gql(api, CREATE, {"metadata": {"doc": "a.pdf", "pages": 3}}, token=token)
    assert created.errors == []
    session = created.data["createSession"]
    assert session["userId"] == "user_ada" and session["active"] is True
    assert session["metadata"] == {"doc": "a.pdf", "pages": 3}
    assert ISO_MS.match(session["createdAt"]) and session["endedAt"] is None
    sid = session["sessionId"]

    got = await gql(
        api,
        "query($id: String!) { getSession(sessionId: $id) { sessionId metadata } }",
        {"id": sid},
        token=token,
    )
    assert got.data["getSession"] == {"sessionId": sid, "metadata": {"doc": "a.pdf", "pages": 3}}

    updated = await gql(
        api,
        "mutation($id: String!, $m: JSON) { updateSession(sessionId: $id, metadata: $m) "
        "{ metadata version } }",
        {"id": sid, "m": {"pages": None, "model": "gpt"}},
        token=token,
    )
    assert updated.data["updateSession"] == {
        "metadata": {"doc": "a.pdf", "model": "gpt"},
        "version": 2,
    }

    touched = await gql(
        api,
        "mutation($id: String!) { touchSession(sessionId: $id) { lastActivity version } }",
        {"id": sid},
        token=token,
    )
    assert touched.data["touchSession"]["version"] == 3

    ended = await gql(
        api,
        "mutation($id: String!) { endSession(sessionId: $id) { active endedAt } }",
        {"id": sid},
        token=token,
    )
    assert ended.data["endSession"]["active"] is False
    assert ISO_MS.match(ended.data["endSession"]["endedAt"])

    stored = await database.sessions.find_one({"sessionId": sid})
    assert stored is not None and stored["active"] is False and stored["version"] == 4


async def test_get_session_that_does_not_exist_is_null(
    api: httpx.AsyncClient, token_for: Callable[[str], str]
) -> None:
    result = await gql(
        api, '{ getSession(sessionId: "nope") { sessionId } }', token=token_for("user_ada")
    )
    assert result.data == {"getSession": None} and result.errors == []


@pytest.mark.parametrize(
    "mutation",
    [
        'mutation { updateSession(sessionId: "nope", active: false) { sessionId } }',
        'mutation { touchSession(sessionId: "nope") { sessionId } }',
        'mutation { endSession(sessionId: "nope") { sessionId } }',
    ],
)
async def test_changing_a_missing_session_is_not_found(
    api: httpx.AsyncClient, token_for: Callable[[str], str], mutation: str
) -> None:
    result = await gql(api, mutation, token=token_for("user_ada"))
    assert result.codes == ["NOT_FOUND"]


async def test_bad_metadata_is_bad_user_input_and_writes_nothing(
    api: httpx.AsyncClient, database: Database, token_for: Callable[[str], str]
) -> None:
    result = await gql(api, CREATE, {"metadata": {"$gt": 1}}, token=token_for("user_ada"))
    assert result.codes == ["BAD_USER_INPUT"]
    assert "$" in result.errors[0]["message"]
    not_object = await gql(api, CREATE, {"metadata": [1, 2]}, token=token_for("user_ada"))
    assert not_object.codes == ["BAD_USER_INPUT"]
    assert await database.sessions.count_documents({}) == 0


async def test_another_users_session_is_forbidden_for_every_field(
    api: httpx.AsyncClient, database: Database, token_for: Callable[[str], str]
) -> None:
    owner = await gql(api, CREATE, {"sessionId": "s-ada"}, token=token_for("user_ada"))
    assert owner.errors == []
    intruder = token_for("user_eve")
    operations = [
        '{ getSession(sessionId: "s-ada") { sessionId } }',
        'mutation { updateSession(sessionId: "s-ada", metadata: {x: 1}) { sessionId } }',
        'mutation { touchSession(sessionId: "s-ada") { sessionId } }',
        'mutation { endSession(sessionId: "s-ada") { sessionId } }',
        '{ getUserSessions(userId: "user_ada") { nodes { sessionId } } }',
        '{ getLatestPayment(userId: "user_ada") { paymentId } }',
        '{ getPaymentAttempts(userId: "user_ada") { nodes { paymentId } } }',
        'mutation { createSession(userId: "user_ada") { sessionId } }',
    ]
    for operation in operations:
        result = await gql(api, operation, token=intruder)
        assert result.codes == ["FORBIDDEN"], operation
    stored = await database.sessions.find_one({"sessionId": "s-ada"})
    assert stored is not None and stored["version"] == 1 and stored["active"] is True
    assert await database.sessions.count_documents({}) == 1


async def test_every_field_is_unauthenticated_for_no_one(api: httpx.AsyncClient) -> None:
    operations = [
        '{ getSession(sessionId: "s") { sessionId } }',
        'mutation { updateSession(sessionId: "s", active: false) { sessionId } }',
        'mutation { touchSession(sessionId: "s") { sessionId } }',
        'mutation { endSession(sessionId: "s") { sessionId } }',
        "{ getUserSessions { nodes { sessionId } } }",
        "{ getLatestPayment { paymentId } }",
        "{ getPaymentAttempts { nodes { paymentId } } }",
        "mutation { createSession { sessionId } }",
        'mutation { updateUser(name: "x") { name } }',
    ]
    for operation in operations:
        result = await gql(api, operation)
        assert result.codes == ["UNAUTHENTICATED"], operation


async def test_service_key_acts_for_a_named_user(
    api: httpx.AsyncClient, database: Database, token_for: Callable[[str], str]
) -> None:
    created = await gql(api, CREATE, {"userId": "user_ada"}, service_key=SERVICE_KEY)
    sid = created.data["createSession"]["sessionId"]
    assert created.data["createSession"]["userId"] == "user_ada"
    updated = await gql(
        api,
        'mutation($id: String!) { updateSession(sessionId: $id, metadata: {summary: "s"}) '
        "{ metadata } }",
        {"id": sid},
        service_key=SERVICE_KEY,
    )
    assert updated.data["updateSession"]["metadata"] == {"summary": "s"}
    listed = await gql(
        api,
        '{ getUserSessions(userId: "user_ada") { nodes { sessionId } } }',
        service_key=SERVICE_KEY,
    )
    assert listed.data["getUserSessions"]["nodes"] == [{"sessionId": sid}]
    # The owner sees what the service wrote.
    mine = await gql(api, "{ getUserSessions { nodes { metadata } } }", token=token_for("user_ada"))
    assert mine.data["getUserSessions"]["nodes"] == [{"metadata": {"summary": "s"}}]


async def test_service_key_must_name_the_user(api: httpx.AsyncClient) -> None:
    result = await gql(api, CREATE, {}, service_key=SERVICE_KEY)
    assert result.codes == ["BAD_USER_INPUT"]


async def test_get_user_sessions_paginates_and_caps_page_size(
    api: httpx.AsyncClient, clerk_settings: Settings, token_for: Callable[[str], str]
) -> None:
    token = token_for("user_ada")
    for i in range(3):
        await gql(api, CREATE, {"sessionId": f"s{i}"}, token=token)
    await gql(api, 'mutation { endSession(sessionId: "s1") { active } }', token=token)
    query = """query($first: Int, $after: String, $activeOnly: Boolean) {
      getUserSessions(first: $first, after: $after, activeOnly: $activeOnly) {
        edges { cursor node { sessionId } } pageInfo { hasNextPage endCursor } } }"""
    first = await gql(api, query, {"first": 2}, token=token)
    page = first.data["getUserSessions"]
    assert [e["node"]["sessionId"] for e in page["edges"]] == ["s2", "s1"]
    assert page["pageInfo"]["hasNextPage"] is True
    assert page["pageInfo"]["endCursor"] == page["edges"][-1]["cursor"]
    rest = await gql(api, query, {"first": 2, "after": page["pageInfo"]["endCursor"]}, token=token)
    assert [e["node"]["sessionId"] for e in rest.data["getUserSessions"]["edges"]] == ["s0"]
    active = await gql(api, query, {"activeOnly": True}, token=token)
    assert [e["node"]["sessionId"] for e in active.data["getUserSessions"]["edges"]] == [
        "s2",
        "s0",
    ]
    too_many = await gql(api, query, {"first": clerk_settings.max_query_size + 1}, token=token)
    assert too_many.codes == ["BAD_USER_INPUT"]
    forged = await gql(api, query, {"after": "garbage"}, token=token)
    assert forged.codes == ["BAD_USER_INPUT"]


# --- payments --------------------------------------------------------------------------------


async def test_payments_for_their_payer(
    api: httpx.AsyncClient, database: Database, token_for: Callable[[str], str]
) -> None:
    await add_payment(database, "user_ada", "pay_1", 1_700_000_000_000)
    await add_payment(database, "user_ada", "pay_2", 1_700_000_100_000)
    await add_payment(database, "user_bob", "pay_3", 1_700_000_200_000)
    await add_payment(database, None, "pay_org", 1_700_000_300_000)
    token = token_for("user_ada")
    latest = await gql(
        api,
        "{ getLatestPayment { paymentId status amount currency totals paidAt createdAt } }",
        token=token,
    )
    assert latest.data["getLatestPayment"] == {
        "paymentId": "pay_2",
        "status": "paid",
        "amount": 1999,
        "currency": "usd",
        "totals": {"grand_total": {"amount": 1999}},
        "paidAt": "2023-11-14T22:15:00.000Z",
        "createdAt": "2023-11-14T22:15:00.000Z",
    }
    listed = await gql(
        api,
        "{ getPaymentAttempts(first: 1) { nodes { paymentId } pageInfo { hasNextPage } } }",
        token=token,
    )
    assert listed.data["getPaymentAttempts"] == {
        "nodes": [{"paymentId": "pay_2"}],
        "pageInfo": {"hasNextPage": True},
    }
    none_yet = await gql(api, "{ getLatestPayment { paymentId } }", token=token_for("user_new"))
    assert none_yet.data == {"getLatestPayment": None}


# --- users -----------------------------------------------------------------------------------


async def test_update_user_changes_only_the_caller(
    api: httpx.AsyncClient, database: Database, token_for: Callable[[str], str]
) -> None:
    await add_user(database, "user_ada")
    await add_user(database, "user_bob", name="Bob")
    result = await gql(
        api,
        'mutation { updateUser(name: "  Ada L. ", preferences: {theme: "dark"}) '
        "{ externalId name preferences version } }",
        token=token_for("user_ada"),
    )
    assert result.data["updateUser"] == {
        "externalId": "user_ada",
        "name": "Ada L.",
        "preferences": {"theme": "dark"},
        "version": 2,
    }
    bob = await database.users.find_one({"externalId": "user_bob"})
    assert bob is not None and bob["name"] == "Bob" and bob["version"] == 1


async def test_update_user_by_service_is_forbidden(api: httpx.AsyncClient) -> None:
    result = await gql(api, 'mutation { updateUser(name: "x") { name } }', service_key=SERVICE_KEY)
    assert result.codes == ["FORBIDDEN"]


async def test_update_user_without_a_record_is_not_found(
    api: httpx.AsyncClient, token_for: Callable[[str], str]
) -> None:
    result = await gql(api, 'mutation { updateUser(name: "x") { name } }', token=token_for("u_x"))
    assert result.codes == ["NOT_FOUND"]


# --- HTTP ------------------------------------------------------------------------------------


async def test_get_runs_queries_but_never_mutations(
    api: httpx.AsyncClient, database: Database, token_for: Callable[[str], str]
) -> None:
    headers = {"authorization": f"Bearer {token_for('user_ada')}"}
    query = await api.get(
        "/graphql", params={"query": "{ getCurrentUser { name } }"}, headers=headers
    )
    assert query.status_code == 200 and query.json()["data"] == {"getCurrentUser": None}
    mutation = await api.get(
        "/graphql", params={"query": "mutation { createSession { sessionId } }"}, headers=headers
    )
    assert mutation.status_code in (400, 405)
    assert await database.sessions.count_documents({}) == 0


async def test_request_errors_are_400_under_graphql_response_json(api: httpx.AsyncClient) -> None:
    syntax = await gql(api, "{ getCurrentUser { ", accept="application/graphql-response+json")
    assert syntax.status == 400
    assert syntax.headers["content-type"].startswith("application/graphql-response+json")
    assert syntax.codes == ["GRAPHQL_PARSE_FAILED"]
    invalid = await gql(api, "{ noSuchField }", accept="application/graphql-response+json")
    assert invalid.status == 400 and invalid.codes == ["GRAPHQL_VALIDATION_FAILED"]
    legacy = await gql(api, "{ noSuchField }", accept="application/json")
    assert legacy.status == 200 and legacy.codes == ["GRAPHQL_VALIDATION_FAILED"]
    assert legacy.headers["content-type"].startswith("application/json")


async def test_graphiql_is_served_in_development(api: httpx.AsyncClient) -> None:
    page = await api.get("/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200 and "graphiql" in page.text.lower()


@pytest.mark.parametrize(("env", "masked"), [("production", True), ("development", False)])
async def test_internal_errors_are_masked_in_production(
    clerk_settings: Settings,
    database: Database,
    token_for: Callable[[str], str],
    env: str,
    masked: bool,
) -> None:
    # A record no code path writes (status missing) makes the read fail inside the server.
    await database.payment_attempts.insert_one(
        {"_id": "x", "payment_id": "broken", "userId": "user_ada", "createdAt": 1}
    )
    settings = clerk_settings.model_copy(
        update={"datadiver_env": env, "clerk_webhook_secret": SecretStr("whsec_" + "A" * 32)}
    )
    async with (
        serve_app(create_app(settings)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        result = await gql(
            client, "{ getLatestPayment { paymentId } }", token=token_for("user_ada")
        )
        if env == "production":
            page = await client.get("/graphql", headers={"accept": "text/html"})
            assert page.status_code == 404
    assert result.codes == ["INTERNAL"]
    message = result.errors[0]["message"]
    assert (message == "Internal server error") is masked
    assert ("status" in message) is not masked


class SessionReads(monitoring.CommandListener):
    """Counts `find` commands on the sessions collection (PyMongo's command monitoring)."""

    def __init__(self) -> None:
        self.counting = False
        self.count = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.counting and event.command.get("find") == "sessions":
            self.count += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


_session_reads = SessionReads()
monitoring.register(_session_reads)  # clients made from now on report to it


@pytest.mark.parametrize("caller", ["owner", "service", "missing"])
async def test_get_session_reads_the_session_once(
    api: httpx.AsyncClient, token_for: Callable[[str], str], caller: str
) -> None:
    """The ownership check's read is the one the resolver answers with."""
    created = await gql(api, CREATE, {"sessionId": "s-once"}, token=token_for("user_ada"))
    assert created.errors == []
    session_id = "s-nope" if caller == "missing" else "s-once"
    query = "query($id: String!) { getSession(sessionId: $id) { sessionId version } }"
    _session_reads.count, _session_reads.counting = 0, True
    try:
        if caller == "service":
            result = await gql(api, query, {"id": session_id}, service_key=SERVICE_KEY)
        else:
            result = await gql(api, query, {"id": session_id}, token=token_for("user_ada"))
    finally:
        _session_reads.counting = False
    assert result.errors == []
    expected = None if caller == "missing" else {"sessionId": "s-once", "version": 1}
    assert result.data == {"getSession": expected}
    assert _session_reads.count == 1


# --- cache identity (issue 14): `id` is the key Apollo and urql normalise on ------------------


async def test_session_id_is_the_stored_id_and_every_operation_returns_the_same_one(
    api: httpx.AsyncClient, database: Database, token_for: Callable[[str], str]
) -> None:
    token = token_for("user_ada")
    created = await gql(api, CREATE, {"sessionId": "sess_cache"}, token=token)
    assert created.errors == []
    stored = await database.sessions.find_one({"sessionId": "sess_cache"})
    assert stored is not None
    expected = {"id": stored["_id"], "sessionId": "sess_cache"}
    other = await gql(api, CREATE, {"sessionId": "sess_other"}, token=token)
    assert other.errors == []
    keys = "{ id sessionId }"
    by_sid = {"id": "sess_cache"}
    for document in [
        f"query($id: String!) {{ getSession(sessionId: $id) {keys} }}",
        f"mutation($id: String!) {{ updateSession(sessionId: $id, metadata: {{a: 1}}) {keys} }}",
        f"mutation($id: String!) {{ touchSession(sessionId: $id) {keys} }}",
        f"mutation($id: String!) {{ endSession(sessionId: $id) {keys} }}",
    ]:
        result = await gql(api, document, by_sid, token=token)
        assert result.errors == [] and next(iter(result.data.values())) == expected, document
    listed = await gql(api, f"{{ getUserSessions {{ nodes {keys} }} }}", token=token)
    ids = {node["sessionId"]: node["id"] for node in listed.data["getUserSessions"]["nodes"]}
    assert ids["sess_cache"] == stored["_id"] and ids["sess_other"] != stored["_id"]


async def test_user_and_payment_ids_are_their_stored_ids(
    api: httpx.AsyncClient, database: Database, token_for: Callable[[str], str]
) -> None:
    await add_user(database, "user_ada")
    await add_payment(database, "user_ada", "pay_1", 1_700_000_000_000)
    await add_payment(database, "user_ada", "pay_2", 1_700_000_100_000)
    token = token_for("user_ada")
    user = await gql(api, "{ getCurrentUser { id externalId } }", token=token)
    assert user.data["getCurrentUser"] == {"id": "id-user_ada", "externalId": "user_ada"}
    attempts = await gql(api, "{ getPaymentAttempts { nodes { id paymentId } } }", token=token)
    stored = {doc["payment_id"]: doc["_id"] async for doc in database.payment_attempts.find({})}
    nodes = attempts.data["getPaymentAttempts"]["nodes"]
    assert {node["paymentId"]: node["id"] for node in nodes} == stored
    assert len(set(stored.values())) == 2
    latest = await gql(api, "{ getLatestPayment { id } }", token=token)
    assert latest.data["getLatestPayment"] == {"id": stored["pay_2"]}
