"""Failing dependencies: the real database process is killed and restarted under the app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from datadiver_graph.app import create_app
from datadiver_graph.config import Settings
from datadiver_graph.dev.keys import mint_dev_token
from datadiver_graph.storage.embedded import EmbeddedMongo
from tests.graphql_client import gql
from tests.servers import serve_app


@pytest.fixture
def own_mongo(tmp_path: Path) -> Iterator[EmbeddedMongo]:
    """A database this test may kill: not the session's shared one."""
    server = EmbeddedMongo(tmp_path / "mongo")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def client(own_mongo: EmbeddedMongo, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        MONGODB_URI=own_mongo.uri,
        MONGODB_DB="faults",
        DATA_DIR=str(tmp_path),
        MONGODB_TIMEOUT_MS=500,
    )
    async with (
        serve_app(create_app(settings)) as url,
        httpx.AsyncClient(base_url=url, timeout=15) as http,
    ):
        http.headers["authorization"] = f"Bearer {mint_dev_token(settings, 'user_a')}"
        yield http


CREATE = "mutation($id: String!) { createSession(sessionId: $id) { sessionId } }"


async def test_database_outage_fails_fast_and_recovers(
    own_mongo: EmbeddedMongo, client: httpx.AsyncClient
) -> None:
    before = await gql(client, CREATE, {"id": "before"})
    assert before.errors == []

    own_mongo.kill()
    down = await gql(client, CREATE, {"id": "during"})
    assert down.status == 503
    assert down.codes == ["SERVICE_UNAVAILABLE"]
    assert down.headers["retry-after"] == "1"
    ready = await client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["database"] is False

    await asyncio.to_thread(own_mongo.start)  # same data directory and port
    for _ in range(100):
        if (await client.get("/readyz")).status_code == 200:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the app did not become ready after the database came back")
    after = await gql(client, CREATE, {"id": "after"})
    assert after.errors == []
    listed = await gql(client, "{ getUserSessions { nodes { sessionId } } }")
    # The write acknowledged before the crash survived it; the refused one left nothing.
    assert {n["sessionId"] for n in listed.data["getUserSessions"]["nodes"]} == {"before", "after"}


async def test_redis_down_keeps_queries_and_mutations_working(
    mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    from datadiver_graph.storage.embedded import free_port

    dead_redis = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    settings = Settings(
        MONGODB_URI=mongo_uri, MONGODB_DB=db_name, DATA_DIR=str(tmp_path), BROADCAST_URL=dead_redis
    )
    async with (
        serve_app(create_app(settings)) as url,
        httpx.AsyncClient(base_url=url, timeout=15) as http,
    ):
        http.headers["authorization"] = f"Bearer {mint_dev_token(settings, 'user_a')}"
        created = await gql(http, CREATE, {"id": "s1"})
        assert created.errors == []
        read = await gql(http, '{ getSession(sessionId: "s1") { sessionId } }')
        assert read.data == {"getSession": {"sessionId": "s1"}}
        ready = await http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "degraded", "database": True, "fanout": False}
