"""API limits and production defaults, each refused with its own code, over real HTTP."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from redis import asyncio as aioredis
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from datadiver_graph.app import create_app
from datadiver_graph.config import Settings
from datadiver_graph.dev.keys import mint_dev_token
from datadiver_graph.storage.mongo import Database
from tests.graphql_client import gql
from tests.servers import serve_app


@asynccontextmanager
async def api(settings: Settings, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        serve_app(create_app(settings.model_copy(update=overrides))) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        yield client


@pytest.fixture
def token(settings: Settings) -> Callable[[str], str]:
    return lambda user: mint_dev_token(settings, user)


def production(settings: Settings) -> dict[str, Any]:
    return {
        "datadiver_env": "production",
        "clerk_issuer": ["https://clerk.example.com"],
        "clerk_webhook_secret": SecretStr("whsec_" + "A" * 32),
    }


async def test_query_depth_is_limited(settings: Settings, database: Database) -> None:
    async with api(settings, max_query_depth=2) as client:
        ok = await gql(client, "{ getUserSessions { pageInfo { hasNextPage } } }")
        assert ok.codes == ["UNAUTHENTICATED"]  # depth 2 passes validation
        deep = await gql(client, "{ getUserSessions { edges { node { sessionId } } } }")
    assert deep.status == 400 and deep.codes == ["QUERY_TOO_DEEP"]


async def test_aliases_are_limited_counting_fragments(
    settings: Settings, database: Database
) -> None:
    query = """
      query { a1: getCurrentUser { id } ...F }
      fragment F on Query { a2: getCurrentUser { id } a3: getCurrentUser { id } }
    """
    async with api(settings, max_aliases=2) as client:
        result = await gql(client, query)
        fine = await gql(client, "{ a1: getCurrentUser { id } a2: getCurrentUser { id } }")
    assert result.status == 400 and result.codes == ["TOO_MANY_ALIASES"]
    assert fine.status == 200 and fine.errors == []


async def test_tokens_are_limited(settings: Settings, database: Database) -> None:
    async with api(settings, max_tokens=50) as client:
        result = await gql(client, "{ " + "getCurrentUser { id } " * 20 + "}")
    assert result.status == 400 and result.codes == ["TOO_MANY_TOKENS"]


async def test_directives_per_field_are_limited(settings: Settings, database: Database) -> None:
    many = " ".join(["@include(if: true)"] * 5)
    async with api(settings, max_directives_per_field=4) as client:
        result = await gql(client, "{ getCurrentUser " + many + " { id } }")
    assert result.status == 400
    assert "TOO_MANY_DIRECTIVES" in result.codes


async def test_batched_operations_are_limited(settings: Settings, database: Database) -> None:
    async with api(settings, max_batch_operations=2) as client:
        two = await client.post("/graphql", json=[{"query": "{ getCurrentUser { id } }"}] * 2)
        three = await client.post("/graphql", json=[{"query": "{ getCurrentUser { id } }"}] * 3)
    assert two.status_code == 200 and two.json() == [{"data": {"getCurrentUser": None}}] * 2
    assert three.status_code == 400
    assert three.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


async def test_request_body_size_is_limited(settings: Settings, database: Database) -> None:
    padding = "x" * 5_000
    body = '{"query": "{ getCurrentUser { id } }", "pad": "' + padding + '"}'
    async with api(settings, max_body_bytes=4_096) as client:
        declared = await client.post(
            "/graphql", content=body, headers={"content-type": "application/json"}
        )

        async def chunks() -> AsyncIterator[bytes]:
            # No Content-Length: the limit must hold while the body streams in.
            for start in range(0, len(body), 1_000):
                yield body[start : start + 1_000].encode()

        streamed = await client.post(
            "/graphql", content=chunks(), headers={"content-type": "application/json"}
        )
    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json()["errors"][0]["extensions"]["code"] == "REQUEST_TOO_LARGE"


async def test_variables_size_is_limited(
    settings: Settings, database: Database, token: Callable[[str], str]
) -> None:
    async with api(settings, max_variables_bytes=1_024) as client:
        result = await gql(
            client,
            "mutation($m: JSON) { createSession(metadata: $m) { sessionId } }",
            {"m": {"blob": "y" * 2_000}},
            token=token("user_a"),
        )
    assert result.status == 413 and result.codes == ["VARIABLES_TOO_LARGE"]
    assert await database.sessions.count_documents({}) == 0


async def test_page_size_is_capped(
    settings: Settings, database: Database, token: Callable[[str], str]
) -> None:
    async with api(settings, max_query_size=5) as client:
        result = await gql(
            client, "{ getUserSessions(first: 6) { nodes { sessionId } } }", token=token("u")
        )
    assert result.codes == ["BAD_USER_INPUT"] and "at most 5" in result.errors[0]["message"]


async def test_rate_limit_in_memory_per_identity(
    settings: Settings, database: Database, token: Callable[[str], str]
) -> None:
    async with api(settings, rate_limit_per_minute=3) as client:
        ada = [await gql(client, "{ getCurrentUser { id } }", token=token("ada")) for _ in range(4)]
        bob = await gql(client, "{ getCurrentUser { id } }", token=token("bob"))
    assert [r.status for r in ada] == [200, 200, 200, 429]
    assert ada[-1].codes == ["RATE_LIMITED"]
    assert 1 <= int(ada[-1].headers["retry-after"]) <= 60
    assert bob.status == 200  # another identity has its own budget


async def test_rate_limit_is_shared_through_redis(
    settings: Settings, database: Database, token: Callable[[str], str]
) -> None:
    redis = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        await redis.ping()
    except Exception:
        pytest.skip("no Redis on 127.0.0.1:6379")
    finally:
        await redis.aclose()
    user = f"user_{uuid.uuid4().hex[:8]}"
    shared = {"rate_limit_per_minute": 3, "broadcast_url": "redis://127.0.0.1:6379/0"}
    async with api(settings, **shared) as one, api(settings, **shared) as two:
        statuses = []
        for client in (one, two, one, two):
            result = await gql(client, "{ getCurrentUser { id } }", token=token(user))
            statuses.append(result.status)
    assert statuses == [200, 200, 200, 429]


async def test_operations_time_out(
    settings: Settings, database: Database, token: Callable[[str], str]
) -> None:
    async with api(settings, request_timeout=0.000_001) as client:
        result = await gql(client, "{ getUserSessions { nodes { sessionId } } }", token=token("u"))
    assert result.codes == ["TIMEOUT"]


async def test_production_hides_introspection_suggestions_and_graphiql(
    settings: Settings, database: Database
) -> None:
    async with api(settings, **production(settings)) as client:
        introspection = await gql(client, "{ __schema { types { name } } }")
        typo = await gql(client, "{ getCurrentUsr { id } }")
        page = await client.get("/graphql", headers={"accept": "text/html"})
    assert introspection.status == 400
    assert set(introspection.codes) == {"INTROSPECTION_DISABLED"}
    assert "Did you mean" not in typo.errors[0]["message"]
    assert typo.codes == ["GRAPHQL_VALIDATION_FAILED"]
    assert page.status_code == 404


async def test_development_keeps_introspection_and_suggestions(
    settings: Settings, database: Database
) -> None:
    async with api(settings) as client:
        introspection = await gql(client, "{ __schema { queryType { name } } }")
        typo = await gql(client, "{ getCurrentUsr { id } }")
    assert introspection.data == {"__schema": {"queryType": {"name": "Query"}}}
    assert "Did you mean" in typo.errors[0]["message"]


async def test_get_never_runs_a_mutation(
    settings: Settings, database: Database, token: Callable[[str], str]
) -> None:
    async with api(settings) as client:
        response = await client.get(
            "/graphql",
            params={"query": "mutation { createSession { sessionId } }"},
            headers={"authorization": f"Bearer {token('u')}"},
        )
    assert response.status_code in (400, 405)
    assert response.json()["errors"][0]["extensions"]["code"] in (
        "BAD_REQUEST",
        "METHOD_NOT_ALLOWED",
    )
    assert await database.sessions.count_documents({}) == 0


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", '{"query": "mutation { createSession { sessionId } }"}'),
        ("application/x-www-form-urlencoded", "query=mutation%20%7B%20createSession%20%7D"),
        ("multipart/form-data; boundary=x", "--x--"),
    ],
)
async def test_non_json_posts_are_refused(
    settings: Settings,
    database: Database,
    token: Callable[[str], str],
    content_type: str,
    body: str,
) -> None:
    async with api(settings) as client:
        response = await client.post(
            "/graphql",
            content=body,
            headers={"content-type": content_type, "cookie": f"__session={token('u')}"},
        )
    assert response.status_code == 415
    assert response.json()["errors"][0]["extensions"]["code"] == "UNSUPPORTED_MEDIA_TYPE"
    assert await database.sessions.count_documents({}) == 0


async def test_cors_only_from_configured_origins(settings: Settings, database: Database) -> None:
    preflight = {
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
    }
    async with api(settings, cors_allowed_origins=["https://app.example.com"]) as client:
        allowed = await client.options(
            "/graphql", headers={"origin": "https://app.example.com", **preflight}
        )
        denied = await client.options(
            "/graphql", headers={"origin": "https://evil.example.com", **preflight}
        )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "access-control-allow-origin" not in denied.headers
    async with api(settings) as client:
        unconfigured = await client.post(
            "/graphql",
            json={"query": "{ getCurrentUser { id } }"},
            headers={"origin": "https://app.example.com"},
        )
    assert "access-control-allow-origin" not in unconfigured.headers


async def test_websocket_handshake_only_from_configured_origins(
    settings: Settings, database: Database
) -> None:
    """A browser page may subscribe from the origins allowed to call over HTTP, no other;
    clients that send no Origin (servers, gql, Node) are not browsers and pass."""
    configured = settings.model_copy(update={"cors_allowed_origins": ["https://app.example.com"]})
    async with serve_app(create_app(configured)) as url:
        target = url.replace("http://", "ws://") + "/graphql"

        async def handshake(origin: str | None) -> int:
            try:
                async with connect(target, subprotocols=["graphql-transport-ws"], origin=origin):  # type: ignore[arg-type,list-item]
                    return 101
            except InvalidStatus as exc:
                return exc.response.status_code

        assert await handshake("https://app.example.com") == 101
        assert await handshake(None) == 101
        assert await handshake("https://evil.example.com") == 403
