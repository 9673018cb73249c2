"""The ASGI application: routes, and a lifespan that opens the database and the event bus."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute

from datadiver_graph import console, fastpaths
from datadiver_graph.api import graphiql, webhooks
from datadiver_graph.api.http import GraphQLView
from datadiver_graph.api.ratelimit import create_rate_limiter
from datadiver_graph.auth.identity import TokenVerifier
from datadiver_graph.config import Settings, load_settings
from datadiver_graph.dev import keys as dev_keys
from datadiver_graph.dev.jwks_route import jwks_endpoint
from datadiver_graph.domain.store import Store
from datadiver_graph.fanout import EventHub
from datadiver_graph.observability import metrics
from datadiver_graph.observability.access_log import AccessLogMiddleware
from datadiver_graph.observability.logs import configure_logging
from datadiver_graph.storage import mongo as db
from datadiver_graph.storage import swap
from datadiver_graph.storage.embedded import EmbeddedMongo

log = logging.getLogger(__name__)

GC_THRESHOLDS = (50_000, 20, 20)


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """503 only when the database is unreachable. A lost fan-out link degrades live updates
    but not queries or mutations, so it is reported without taking the instance out."""
    store: Store = request.app.state.store
    database_ok = await store.db.ping()
    fanout_ok = await store.events.link_ok()
    request.app.state.metrics.record_health(database=database_ok, fanout=fanout_ok)
    status = "unavailable" if not database_ok else "ok" if fanout_ok else "degraded"
    body = {"status": status, "database": database_ok, "fanout": fanout_ok}
    return JSONResponse(body, status_code=200 if database_ok else 503)


def _bench_routes() -> list[BaseRoute]:
    """Benchmark-only routes (bench/), added when DATADIVER_BENCH_ROUTES=1 and never in
    production: the bare-Starlette baseline of `getCurrentUser` (same JWT check, same read,
    same JSON) and the event-loop task count and fan-out stats the soak test samples."""
    import orjson
    from starlette.responses import Response

    from datadiver_graph.api.schema.scalars import from_epoch_ms
    from datadiver_graph.auth.identity import AuthError
    from datadiver_graph.domain import users

    async def current_user(request: Request) -> Response:
        _, _, token = request.headers.get("authorization", "").partition(" ")
        try:
            identity = await request.app.state.verifier.verify(token.strip())
        except AuthError as exc:
            return JSONResponse({"errors": [{"message": str(exc)}]}, status_code=401)
        user = await users.get_by_external_id(request.app.state.store, identity.user_id)
        found = None
        if user is not None:
            found = {
                "id": user.id,
                "externalId": user.external_id,
                "name": user.name,
                "email": user.email,
                "imageUrl": user.image_url,
                "preferences": user.preferences,
                "createdAt": from_epoch_ms(user.created_at),
                "updatedAt": from_epoch_ms(user.updated_at),
                "version": user.version,
            }
        body = orjson.dumps({"data": {"getCurrentUser": found}})
        return Response(body, media_type="application/json")

    async def stats(request: Request) -> JSONResponse:
        store: Store = request.app.state.store
        return JSONResponse({"tasks": len(asyncio.all_tasks()), "fanout": store.events.stats()})

    return [
        Route("/_bench/current-user", current_user, methods=["GET", "POST"]),
        Route("/_bench/stats", stats),
    ]


def tune_garbage_collector() -> None:
    """Fewer, cheaper collections for a server holding thousands of live subscriptions.

    Everything built at start-up lives as long as the process: freezing it keeps full
    collections from re-scanning it. A larger first-generation threshold cuts collections
    that each pause every subscriber (p99 delivery spikes with the defaults;
    bench/RESULTS.md).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLDS[0], GC_THRESHOLDS[1], GC_THRESHOLDS[2])


def preflight(settings: Settings) -> None:
    """Refuse a configuration production must not run with (raises SettingsError)."""
    TokenVerifier.from_settings(settings)  # an issuer (or, in development, the dev key)
    webhooks.webhook_secret(settings)


def graphql_view(settings: Settings) -> GraphQLView:
    """Strawberry's view with our public hooks, or with the fast paths when they are on."""
    if fastpaths.enabled(settings):
        from datadiver_graph.fastpaths.view import FastGraphQLView

        return FastGraphQLView(settings)
    return GraphQLView(settings)


def create_app(settings: Settings, *, tune_gc: bool = False) -> Starlette:
    """`tune_gc` is for a serving process (serve, workers); tests leave the collector alone."""
    # Built before the lifespan so a bad auth configuration fails at start-up, not per request.
    http_client = httpx.AsyncClient(timeout=httpx.Timeout(5.0), follow_redirects=False)
    verifier = TokenVerifier.from_settings(settings, http_client=http_client)
    preflight(settings)
    graphql = graphql_view(settings)
    rate_limiter = create_rate_limiter(settings.rate_limit_per_minute, settings.broadcast_url)
    app_metrics = metrics.Metrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        embedded: EmbeddedMongo | None = None
        uri = settings.mongodb_uri
        if uri is None:
            embedded = EmbeddedMongo(settings.embedded_data_path)
            uri = embedded.start()
        else:
            log.info("using MongoDB from MONGODB_URI (database %s)", settings.mongodb_db)
        database = db.connect(uri, settings.mongodb_db, timeout_ms=settings.mongodb_timeout_ms)
        bus = EventHub(settings.broadcast_url)
        hub_sync: asyncio.Task[None] | None = None
        try:
            await db.ensure_indexes(database)
            # An import that crashed past its commit point is rolled forward before serving.
            await swap.recover(database)
            await bus.connect()
            app.state.store = Store(db=database, events=bus)
            if metrics.multiprocess_mode():
                # Another worker may answer the scrape: keep this one's fan-out counts current.
                hub_sync = asyncio.create_task(app_metrics.sync_hub_forever(bus))
            if tune_gc:
                tune_garbage_collector()
            yield
        finally:
            if hub_sync is not None:
                hub_sync.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await hub_sync
                app_metrics.sync_hub(bus)
            metrics.process_exited()
            await verifier.aclose()
            await http_client.aclose()
            if rate_limiter is not None:
                await rate_limiter.close()
            await bus.disconnect()
            await database.close()
            if embedded is not None:
                embedded.stop()

    graphql_websocket = WebSocketRoute("/graphql", graphql)
    routes: list[BaseRoute] = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics.metrics_endpoint),
        Route("/graphql", graphql, methods=["GET", "POST"]),
        graphql_websocket,
        *webhooks.ROUTES,
    ]
    if dev_keys.dev_mode(settings):
        routes.append(Route("/.well-known/jwks.json", jwks_endpoint))
    routes.extend(console.routes(settings, verifier))  # /console; off in production by default
    if not settings.is_production:  # GraphiQL and its files: development only
        routes.append(graphiql.static_route())
    if os.environ.get("DATADIVER_BENCH_ROUTES") == "1" and not settings.is_production:
        routes.extend(_bench_routes())  # benchmarks only; never in production
    # First, so it is outermost: every request gets its id and its log line, CORS included.
    middleware: list[Middleware] = [Middleware(AccessLogMiddleware, metrics=app_metrics)]
    if settings.cors_allowed_origins:
        # Only origins named in configuration; no wildcard with credentials, ever.
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_allowed_origins,
                allow_methods=["GET", "POST"],
                allow_headers=["authorization", "content-type", "x-service-key", "x-request-id"],
                allow_credentials=True,
                max_age=600,
            )
        )
    if fastpaths.enabled(settings):
        from datadiver_graph.fastpaths.ws_shortcut import WebSocketShortcut

        # Innermost: a /graphql WebSocket skips the router (and what it keeps per connection).
        middleware.append(Middleware(WebSocketShortcut, route=graphql_websocket))
    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.verifier = verifier
    app.state.rate_limiter = rate_limiter
    app.state.metrics = app_metrics
    return app


def app_from_env() -> Starlette:
    """Factory for `uvicorn --factory` and multi-worker serve: settings from the environment."""
    settings = load_settings()
    # A worker process is a fresh interpreter: it inherits no logging set-up from `serve`.
    configure_logging(settings)
    return create_app(settings)
