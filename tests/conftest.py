"""Fixtures start real servers: one SecantusDB per test session, a clean database per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from datadiver_graph.api import http as http_view
from datadiver_graph.app import create_app
from datadiver_graph.config import Settings
from datadiver_graph.domain.store import Store
from datadiver_graph.fanout import EventHub
from datadiver_graph.storage import mongo as db
from datadiver_graph.storage.embedded import EmbeddedMongo
from tests.servers import serve_app

pytest_plugins = ["tests.clerk_fixtures"]


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
    """The kinds of operation fastpaths/direct.py ran (for servers in this process)."""
    ran: list[str] = []
    real = http_view.execute_prepared

    async def counting(schema: Any, prepared: Any, *args: Any) -> Any:
        ran.append(prepared.kind)
        return await real(schema, prepared, *args)

    monkeypatch.setattr(http_view, "execute_prepared", counting)
    return ran
