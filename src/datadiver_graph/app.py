"""The ASGI application: routes, and a lifespan that opens the database and the event bus."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from datadiver_graph import db
from datadiver_graph.config import Settings, load_settings
from datadiver_graph.embedded import EmbeddedMongo
from datadiver_graph.events import EventBus
from datadiver_graph.store import Store

log = logging.getLogger(__name__)


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    store: Store = request.app.state.store
    database_ok = await store.db.ping()
    body = {"status": "ok" if database_ok else "unavailable", "database": database_ok}
    return JSONResponse(body, status_code=200 if database_ok else 503)


def create_app(settings: Settings) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        embedded: EmbeddedMongo | None = None
        uri = settings.mongodb_uri
        if uri is None:
            embedded = EmbeddedMongo(settings.embedded_data_path)
            uri = embedded.start()
        else:
            log.info("using MongoDB from MONGODB_URI (database %s)", settings.mongodb_db)
        database = db.connect(uri, settings.mongodb_db)
        bus = EventBus(settings.broadcast_url)
        try:
            await db.ensure_indexes(database)
            await bus.connect()
            app.state.store = Store(db=database, events=bus)
            yield
        finally:
            await bus.disconnect()
            await database.close()
            if embedded is not None:
                embedded.stop()

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
        ],
        lifespan=lifespan,
    )
    app.state.settings = settings
    return app


def app_from_env() -> Starlette:
    """Factory for `uvicorn --factory` and multi-worker serve: settings from the environment."""
    return create_app(load_settings())
