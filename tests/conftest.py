"""Fixtures start real servers: one SecantusDB per test session, a clean database per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from graphql import get_operation_ast, parse
from pymongo import MongoClient
from pymongo.database import Database as SyncDatabase

from datadiver_graph.api.schema.schema import Schema
from datadiver_graph.app import create_app
from datadiver_graph.config import Settings
from datadiver_graph.domain.store import Store
from datadiver_graph.fanout import EventHub
from datadiver_graph.storage import mongo as db
from datadiver_graph.storage.embedded import EmbeddedMongo
from tests.servers import serve_app

pytest_plugins = ["tests.clerk_fixtures"]

# `FAST_PATHS=false pytest` runs every server in stock mode (Settings reads the variable):
# the tests of the fast paths' own internals (marked `fast_paths`) are skipped then.
STOCK = not Settings().fast_paths


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "fast_paths: tests a fast path's internals; skipped under FAST_PATHS=false"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="FAST_PATHS=false: tests a fast path's internals")
    for item in items:
        if STOCK and item.get_closest_marker("fast_paths") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedMongo]:
    server = EmbeddedMongo(tmp_path_factory.mktemp("secantus") / "mongo")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mongo_uri(mongo_server: EmbeddedMongo) -> str:
    return mongo_server.uri


@pytest.fixture
def db_name() -> str:
    return "test_" + uuid.uuid4().hex[:12]


@pytest.fixture
async def database(mongo_uri: str, db_name: str) -> AsyncIterator[db.Database]:
    database = db.connect(mongo_uri, db_name)
    await db.ensure_indexes(database)
    yield database
    await database.client.drop_database(db_name)
    await database.close()


@pytest.fixture
async def store(database: db.Database) -> AsyncIterator[Store]:
    bus = EventHub("memory://")
    await bus.connect()
    yield Store(db=database, events=bus)
    await bus.disconnect()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def settings(mongo_uri: str, db_name: str, data_dir: Path) -> Settings:
    """Settings for an app on the test database; tests override fields with model_copy."""
    return Settings(
        MONGODB_URI=mongo_uri,
        MONGODB_DB=db_name,
        DATA_DIR=str(data_dir),
        DATADIVER_ENV="development",
    )


@pytest.fixture
async def app_url(settings: Settings, database: db.Database) -> AsyncIterator[str]:
    """The full app served over real HTTP on the per-test database."""
    async with serve_app(create_app(settings)) as url:
        yield url


@pytest.fixture
async def http(app_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=app_url, timeout=10) as client:
        yield client


@pytest.fixture
def direct_runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The kinds of operation run to an answer over HTTP (for servers in this process): by
    fastpaths/direct.py, or under FAST_PATHS=false by strawberry's Schema.execute."""
    ran: list[str] = []
    if STOCK:
        real_execute = Schema.execute

        async def executing(schema: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            result = await real_execute(schema, query, *args, **kwargs)
            if result.data is not None:
                name = kwargs.get("operation_name")
                operation = get_operation_ast(parse(query), name)
                ran.append(operation.operation.value if operation else "?")
            return result

        monkeypatch.setattr(Schema, "execute", executing)
        return ran

    from datadiver_graph.fastpaths import view

    real = view.execute_prepared

    async def counting(schema: Any, prepared: Any, *args: Any) -> Any:
        ran.append(prepared.kind)
        return await real(schema, prepared, *args)

    monkeypatch.setattr(view, "execute_prepared", counting)
    return ran


@pytest.fixture
def mongo(mongo_uri: str, db_name: str) -> Iterator[SyncDatabase[dict[str, Any]]]:
    """The per-test database through a synchronous client (for tests of CLI processes)."""
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
    yield client[db_name]
    client.drop_database(db_name)
    client.close()
