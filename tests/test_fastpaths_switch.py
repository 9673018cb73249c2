"""FAST_PATHS and the version check decide, once, between the fast paths and stock.

Stock means Strawberry's own view path, handlers and executor and uvicorn's own
protocols; the answers are the same (`make test-stock` runs the API, subscription and
client tests that way).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from datadiver_graph import fastpaths
from datadiver_graph.api.http import GraphQLView
from datadiver_graph.app import create_app
from datadiver_graph.config import Settings
from datadiver_graph.fastpaths import execution, versions
from datadiver_graph.fastpaths.internals import Internal
from datadiver_graph.storage.mongo import Database
from tests.servers import serve_app

QUERY = {"query": "{ __typename }"}


@pytest.fixture(autouse=True)
def fresh_check() -> Iterator[None]:
    """The check runs once per process; these tests run it again under their own patches."""
    fastpaths.usable.cache_clear()
    yield
    fastpaths.usable.cache_clear()


def graphql_endpoint(app: Any) -> Any:
    return next(route.endpoint for route in app.routes if getattr(route, "path", "") == "/graphql")


def fast_path_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno == logging.WARNING and "fast paths off" in record.getMessage()
    ]


async def direct_path_must_not_run(*args: Any) -> Any:
    raise AssertionError("the direct path ran in stock mode")


async def test_an_untested_strawberry_runs_stock_with_one_warning(
    settings: Settings,
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    real = versions.installed_version
    monkeypatch.setattr(
        versions,
        "installed_version",
        lambda library: "0.342.0" if library == "strawberry-graphql" else real(library),
    )
    from datadiver_graph.fastpaths import view

    monkeypatch.setattr(view, "execute_prepared", direct_path_must_not_run)
    fast = settings.model_copy(update={"fast_paths": True})
    with caplog.at_level(logging.WARNING, logger="datadiver_graph.fastpaths"):
        app = create_app(fast)
        assert fastpaths.uvicorn_protocols(fast) == {}  # uvicorn's own protocols
        async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as http:
            answer = await http.post("/graphql", json=QUERY)
    assert answer.status_code == 200 and answer.json() == {"data": {"__typename": "Query"}}
    assert type(graphql_endpoint(app)) is GraphQLView
    (warning,) = fast_path_warnings(caplog)
    assert "strawberry-graphql 0.342.0 is outside >=0.341.2,<0.342" in warning


async def test_a_moved_internal_runs_stock_naming_it(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    moved = Internal("graphql-core", "graphql.execution.executor:Executor", "gone", "execution.py")
    monkeypatch.setattr(execution, "INTERNALS", (*execution.INTERNALS, moved))
    with caplog.at_level(logging.WARNING, logger="datadiver_graph.fastpaths"):
        app = create_app(settings.model_copy(update={"fast_paths": True}))
    assert type(graphql_endpoint(app)) is GraphQLView
    (warning,) = fast_path_warnings(caplog)
    assert "graphql.execution.executor.Executor.gone is gone" in warning


def test_in_range_libraries_run_the_fast_paths(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    from datadiver_graph.fastpaths.view import FastGraphQLView

    fast = settings.model_copy(update={"fast_paths": True})
    assert type(graphql_endpoint(create_app(fast))) is FastGraphQLView
    assert set(fastpaths.uvicorn_protocols(fast)) == {"ws"}
    assert fast_path_warnings(caplog) == []


async def test_fast_paths_false_serves_stock(
    settings: Settings,
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from datadiver_graph.fastpaths import view

    monkeypatch.setattr(view, "execute_prepared", direct_path_must_not_run)
    stock = settings.model_copy(update={"fast_paths": False})
    app = create_app(stock)
    assert type(graphql_endpoint(app)) is GraphQLView
    assert fastpaths.uvicorn_protocols(stock) == {}
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as http:
        answer = await http.post("/graphql", json=QUERY)
    assert answer.json() == {"data": {"__typename": "Query"}}
    assert fast_path_warnings(caplog) == []  # turned off on purpose: nothing to warn about


def test_stock_mode_imports_no_fast_path(mongo_uri: str) -> None:
    """A fast path that breaks on import cannot take the stock path down."""
    script = (
        "import sys\n"
        "from datadiver_graph.app import create_app\n"
        "from datadiver_graph.config import Settings\n"
        "app = create_app(Settings())\n"
        "app.state.settings and app.routes\n"
        "print(sorted(m for m in sys.modules if m.startswith('datadiver_graph.fastpaths.')))\n"
    )
    env = {**os.environ, "FAST_PATHS": "false", "MONGODB_URI": mongo_uri}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    # The one read every mode needs (strawberry has no public accessor for it).
    assert done.stdout.strip() in (
        "[]",
        "['datadiver_graph.fastpaths.internals', 'datadiver_graph.fastpaths.strawberry_schema']",
    )
