"""The direct path (fastpaths/direct.py) answers exactly as strawberry's own path does.

A request with a non-empty `extensions` member is not taken by the direct path, so the same
operation sent with and without it compares the two paths over real HTTP: status,
content type and body must be the same, for data, every kind of error, and production's
masking.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from datadiver_graph.app import create_app
from datadiver_graph.config import Settings
from datadiver_graph.domain import sessions, users
from datadiver_graph.domain.store import Store
from datadiver_graph.storage.mongo import Database
from tests.clerk_fixtures import SERVICE_KEY
from tests.servers import serve_app

# Tests a fast path's own internals: skipped under FAST_PATHS=false (conftest.py).
pytestmark = pytest.mark.fast_paths

BOTH_MEDIA_TYPES = "application/graphql-response+json, application/json"
USER_FIELDS = "id externalId name email imageUrl preferences createdAt updatedAt version"


@pytest.fixture
async def api(clerk_settings: Settings, database: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        serve_app(create_app(clerk_settings)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        yield client


async def both_paths(
    client: httpx.AsyncClient,
    runs: list[str],
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    operation_name: str | None = None,
    headers: dict[str, str] | None = None,
    direct_path: bool = True,
) -> tuple[httpx.Response, httpx.Response]:
    body: dict[str, Any] = {"query": query, "variables": variables}
    if operation_name is not None:
        body["operationName"] = operation_name
    before = len(runs)
    direct = await client.post("/graphql", json=body, headers=headers or {})
    slow = await client.post(
        "/graphql", json={**body, "extensions": {"path": "strawberry"}}, headers=headers or {}
    )
    # The first took the direct path (when it is valid) and the second strawberry's.
    assert len(runs) - before == (1 if direct_path else 0)
    return direct, slow


def assert_same(direct: httpx.Response, slow: httpx.Response) -> dict[str, Any]:
    assert direct.status_code == slow.status_code
    assert direct.headers["content-type"] == slow.headers["content-type"]
    assert direct.headers.get("retry-after") == slow.headers.get("retry-after")
    assert direct.json() == slow.json()
    answer: dict[str, Any] = direct.json()
    return answer


async def add_user(database: Database, external_id: str) -> None:
    user = users.User(
        id=f"id-{external_id}",
        external_id=external_id,
        name="Ada",
        email=f"{external_id}@example.com",
        created_at=1_700_000_000_000,
        updated_at=1_700_000_000_001,
    )
    await database.users.insert_one(user.to_doc())


async def test_data_is_the_same(
    api: httpx.AsyncClient,
    database: Database,
    token_for: Callable[[str], str],
    direct_runs: list[str],
) -> None:
    await add_user(database, "user_ada")
    auth = {"authorization": f"Bearer {token_for('user_ada')}"}
    answer = assert_same(
        *await both_paths(
            api, direct_runs, f"{{ getCurrentUser {{ {USER_FIELDS} }} }}", headers=auth
        )
    )
    assert answer["data"]["getCurrentUser"]["externalId"] == "user_ada"
    assert answer["data"]["getCurrentUser"]["createdAt"] == "2023-11-14T22:13:20.000Z"
    assert "errors" not in answer


async def test_nested_fields_aliases_fragments_and_directives_are_the_same(
    api: httpx.AsyncClient, database: Database, store: Store, direct_runs: list[str]
) -> None:
    for index in range(3):
        await sessions.create(store, "user_ada", session_id=f"s{index}", metadata={"n": index})
    query = """
      query Page($first: Int, $withMeta: Boolean!) {
        page: getUserSessions(userId: "user_ada", first: $first) {
          edges { cursor node { ...S meta: metadata @include(if: $withMeta) } }
          pageInfo { hasNextPage endCursor }
        }
      }
      fragment S on Session { sessionId active createdAt endedAt version }
    """
    service = {"x-service-key": SERVICE_KEY}
    for variables in ({"first": 2, "withMeta": True}, {"first": 5, "withMeta": False}):
        answer = assert_same(*await both_paths(api, direct_runs, query, variables, headers=service))
        edges = answer["data"]["page"]["edges"]
        assert len(edges) == min(variables["first"], 3)
        assert ("meta" in edges[0]["node"]) is variables["withMeta"]


async def test_planned_connections_are_the_same(
    api: httpx.AsyncClient, store: Store, direct_runs: list[str]
) -> None:
    """A connection query qualifies for a plan (fastpaths/query_plans.py): lists, nested
    objects, fragments and aliases answered by it match strawberry's path."""
    for index in range(3):
        await sessions.create(store, "user_ada", session_id=f"p{index}", metadata={"n": index})
    query = """
      query Page($first: Int, $after: String) {
        page: getUserSessions(userId: "user_ada", first: $first, after: $after) {
          edges { cursor node { ...S __typename } }
          ids: nodes { sessionId }
          pageInfo { hasNextPage endCursor }
        }
      }
      fragment S on Session { sessionId active metadata createdAt endedAt version }
    """
    service = {"x-service-key": SERVICE_KEY}
    first = assert_same(*await both_paths(api, direct_runs, query, {"first": 2}, headers=service))
    page = first["data"]["page"]
    assert [node["sessionId"] for node in page["ids"]] == ["p2", "p1"]
    assert page["pageInfo"]["hasNextPage"] is True
    after = {"first": 2, "after": page["pageInfo"]["endCursor"]}
    rest = assert_same(*await both_paths(api, direct_runs, query, after, headers=service))
    assert [edge["node"]["sessionId"] for edge in rest["data"]["page"]["edges"]] == ["p0"]
    bad = assert_same(*await both_paths(api, direct_runs, query, {"after": "x"}, headers=service))
    assert bad["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_errors_are_the_same(
    api: httpx.AsyncClient,
    database: Database,
    store: Store,
    token_for: Callable[[str], str],
    direct_runs: list[str],
) -> None:
    await sessions.create(store, "user_bob", session_id="bobs")
    ada = {"authorization": f"Bearer {token_for('user_ada')}", "accept": BOTH_MEDIA_TYPES}
    cases: list[tuple[str, dict[str, Any] | None, dict[str, str], str]] = [
        ('{ getSession(sessionId: "bobs") { sessionId } }', None, ada, "FORBIDDEN"),
        ('mutation { endSession(sessionId: "nope") { sessionId } }', None, ada, "NOT_FOUND"),
        ('mutation { updateUser(name: "x") { id } }', None, {}, "UNAUTHENTICATED"),
        (
            "query($id: String!) { getSession(sessionId: $id) { sessionId } }",
            {"id": 12},
            ada,
            "BAD_USER_INPUT",
        ),
        (
            "query($id: String!) { getSession(sessionId: $id) { sessionId } }",
            {},
            ada,
            "BAD_USER_INPUT",
        ),
        (
            "{ getCurrentUser { id } }",
            None,
            {"authorization": "Bearer not-a-jwt"},
            "UNAUTHENTICATED",
        ),
    ]
    for query, variables, headers, code in cases:
        answer = assert_same(*await both_paths(api, direct_runs, query, variables, headers=headers))
        codes = [error["extensions"]["code"] for error in answer.get("errors", [])]
        assert codes == [code], (query, answer)


async def test_variable_errors_are_a_400_under_the_graphql_media_type(
    api: httpx.AsyncClient, direct_runs: list[str]
) -> None:
    query = "query($id: String!) { getSession(sessionId: $id) { sessionId } }"
    headers = {"accept": BOTH_MEDIA_TYPES}
    direct, slow = await both_paths(api, direct_runs, query, {"id": [1]}, headers=headers)
    assert_same(direct, slow)
    assert direct.status_code == 400
    assert direct.headers["content-type"] == "application/graphql-response+json"


async def test_operation_name_picks_the_operation(
    api: httpx.AsyncClient,
    database: Database,
    token_for: Callable[[str], str],
    direct_runs: list[str],
) -> None:
    await add_user(database, "user_ada")
    auth = {"authorization": f"Bearer {token_for('user_ada')}"}
    query = "query A { getCurrentUser { name } } query B { getCurrentUser { email } }"
    answer = assert_same(
        *await both_paths(api, direct_runs, query, operation_name="B", headers=auth)
    )
    assert answer["data"] == {"getCurrentUser": {"email": "user_ada@example.com"}}
    unknown = assert_same(
        *await both_paths(
            api, direct_runs, query, operation_name="C", headers=auth, direct_path=False
        )
    )
    assert unknown.get("data") is None and unknown["errors"]


async def test_production_masks_the_same(
    settings: Settings, database: Database, direct_runs: list[str]
) -> None:
    production = settings.model_copy(
        update={
            "datadiver_env": "production",
            "clerk_issuer": ["https://clerk.example.com"],
            "service_api_keys": [SERVICE_KEY],
            "clerk_webhook_secret": SecretStr("whsec_" + "A" * 32),
        }
    )
    async with (
        serve_app(create_app(production)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        for query, variables in (
            ("{ getCurrentUser { id } }", None),
            (
                "query($n: Int) { getUserSessions(first: $n) { pageInfo { hasNextPage } } }",
                {"n": "x"},
            ),
            ("query($id: String!) { getSession(sessionId: $id) { sessionId } }", {"id": 1}),
        ):
            assert_same(
                *await both_paths(
                    client, direct_runs, query, variables, headers={"x-service-key": SERVICE_KEY}
                )
            )
