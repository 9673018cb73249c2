"""Prometheus metrics: what they are, how their labels stay bounded, and `GET /metrics`.

Each app owns a `Metrics` (its own registry, so tests and several apps in one process do
not share counters). With PROMETHEUS_MULTIPROC_DIR set, prometheus-client keeps every value
in files under that directory and `/metrics` aggregates all the workers' files through its
MultiProcessCollector, whichever worker answers the scrape (`serve --workers N` sets the
variable up in a temporary directory when it is unset).

Label values never come from clients unfiltered: routes are the app's route templates,
operation names are capped (`LabelLimiter`), event types are those Clerk signed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import re
import threading
from collections.abc import Awaitable, Iterable
from typing import Any, cast

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess
from starlette.requests import Request
from starlette.responses import Response

from datadiver_graph.domain.store import Store
from datadiver_graph.fanout import EventHub

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Distinct operation names (per process) that get a label of their own; later ones are "other".
MAX_OPERATION_NAMES = 100
MAX_LABEL_LENGTH = 64
OTHER = "other"
ANONYMOUS = "anonymous"
# How often, in multi-process mode, each worker copies its fan-out counters into the files.
HUB_SYNC_INTERVAL_S = 5.0

_LABEL_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]*$")
_HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
GRAPHQL_BUCKETS = HTTP_BUCKETS


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


class LabelLimiter:
    """Turns client-supplied names into bounded label values.

    A name must look like an identifier and be at most MAX_LABEL_LENGTH long; the first
    `limit` distinct names seen keep their own label, any later one becomes "other".
    """

    def __init__(self, limit: int = MAX_OPERATION_NAMES, *, empty: str = ANONYMOUS) -> None:
        self.limit = limit
        self.empty = empty
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, name: str | None) -> str:
        if not name:
            return self.empty
        if len(name) > MAX_LABEL_LENGTH or not _LABEL_RE.match(name):
            return OTHER
        if name in self._seen:
            return name
        with self._lock:
            if len(self._seen) >= self.limit:
                return OTHER
            self._seen.add(name)
        return name


def http_method_label(method: str) -> str:
    return method if method in _HTTP_METHODS else OTHER


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.operation_name = LabelLimiter()
        self.event_type = LabelLimiter(limit=50, empty="unknown")

        self.http_requests = Counter(
            "datadiver_http_requests",
            "HTTP requests answered, by route template and status code.",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "datadiver_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response.",
            ["method", "route"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.graphql_operations = Counter(
            "datadiver_graphql_operations",
            "GraphQL operations, by operation name, type and outcome (ok or error).",
            ["operation", "type", "outcome"],
            registry=r,
        )
        self.graphql_errors = Counter(
            "datadiver_graphql_errors",
            "Errors returned by GraphQL operations, by extensions.code.",
            ["code"],
            registry=r,
        )
        self.graphql_duration = Histogram(
            "datadiver_graphql_operation_duration_seconds",
            "Execution time of queries and mutations (subscriptions are not timed here).",
            ["operation", "type"],
            buckets=GRAPHQL_BUCKETS,
            registry=r,
        )
        self.websocket_connections = Gauge(
            "datadiver_websocket_connections",
            "WebSocket connections open now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.active_subscriptions = Gauge(
            "datadiver_graphql_subscriptions_active",
            "GraphQL subscriptions running now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.events_published = Counter(
            "datadiver_fanout_events_published",
            "Events published to the fan-out (one per channel).",
            registry=r,
        )
        self.publish_failures = Counter(
            "datadiver_fanout_publish_failures",
            "Publishes the fan-out backend refused (the write itself was committed).",
            registry=r,
        )
        self.events_delivered = Counter(
            "datadiver_fanout_events_delivered",
            "Events handed to local subscribers.",
            registry=r,
        )
        self.events_dropped = Counter(
            "datadiver_fanout_dropped_slow",
            "Subscribers cut off (close 1013) for falling too far behind; their backlog dropped.",
            registry=r,
        )
        self.webhook_events = Counter(
            "datadiver_webhook_events",
            "Clerk webhook deliveries, by event type and outcome.",
            ["type", "outcome"],
            registry=r,
        )
        self.database_up = Gauge(
            "datadiver_database_up",
            "1 when the database answered a ping at the last scrape or readiness check.",
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.fanout_up = Gauge(
            "datadiver_fanout_link_up",
            "1 when events from other instances can reach this one (last scrape or readyz).",
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self._hub_seen: dict[str, int] = {}
        self._hub_lock = threading.Lock()
        # labels() validates and locks on every call, a cost each request would pay otherwise.
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}

    def _child(self, metric: object, *labels: str) -> Any:
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = cast(Any, metric).labels(*labels)
        return child

    # -- helpers the middleware, the GraphQL extension and the webhook call -------------------

    def observe_http(self, method: str, route: str, status: int, seconds: float) -> None:
        method = http_method_label(method)
        self._child(self.http_requests, method, route, str(status)).inc()
        self._child(self.http_duration, method, route).observe(seconds)

    def observe_operation(
        self, operation: str, kind: str, codes: Iterable[str], seconds: float | None
    ) -> None:
        codes = list(codes)
        outcome = "error" if codes else "ok"
        self._child(self.graphql_operations, operation, kind, outcome).inc()
        for code in codes:
            self._child(self.graphql_errors, _code_label(code)).inc()
        if seconds is not None:
            self._child(self.graphql_duration, operation, kind).observe(seconds)

    def observe_webhook(self, event_type: str | None, outcome: str) -> None:
        self.webhook_events.labels(self.event_type(event_type), outcome).inc()

    def record_health(self, *, database: bool, fanout: bool) -> None:
        self.database_up.set(1 if database else 0)
        self.fanout_up.set(1 if fanout else 0)

    def sync_hub(self, hub: EventHub) -> None:
        """Add what the hub counted since the last sync to the Prometheus counters."""
        stats = hub.stats()
        counters = {
            "published": self.events_published,
            "publish_failures": self.publish_failures,
            "delivered": self.events_delivered,
            "dropped_slow": self.events_dropped,
        }
        with self._hub_lock:
            for key, counter in counters.items():
                now = stats.get(key, 0)
                before = self._hub_seen.get(key, 0)
                if now > before:
                    counter.inc(now - before)
                # A new hub (tests reuse an app) starts from zero: follow it down.
                self._hub_seen[key] = now

    async def sync_hub_forever(self, hub: EventHub) -> None:
        while True:
            await asyncio.sleep(HUB_SYNC_INTERVAL_S)
            self.sync_hub(hub)

    # -- exposition ---------------------------------------------------------------------------

    def exposition(self) -> bytes:
        if multiprocess_mode():
            # A fresh registry per scrape, as prometheus-client prescribes: the collector
            # reads every worker's files; our own registry would duplicate this process's.
            registry = CollectorRegistry()
            prometheus_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)


_KNOWN_CODE = re.compile(r"^[A-Z][A-Z_]{0,40}$")


def _code_label(code: str) -> str:
    return code if _KNOWN_CODE.match(code) else "OTHER"


HEALTH_TIMEOUT_S = 2.0


async def check_health(store: Store) -> tuple[bool, bool]:
    """(database reachable, fan-out link up); a check that does not answer in 2 s is down."""

    async def within(check: Awaitable[bool]) -> bool:
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_S):
                return await check
        except TimeoutError:
            return False

    return await within(store.db.ping()), await within(store.events.link_ok())


def scrape_refusal(request: Request) -> Response | None:
    """Who may read /metrics: with METRICS_TOKEN set, only a bearer of it (401 else); in
    production without one, nobody (404: the numbers map the service for a prober)."""
    settings = request.app.state.settings
    token = settings.metrics_token
    if token is None:
        return Response(status_code=404) if settings.is_production else None
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    expected = token.get_secret_value().strip().encode()
    if scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), expected):
        return None
    return Response(status_code=401, headers={"www-authenticate": 'Bearer realm="metrics"'})


async def metrics_endpoint(request: Request) -> Response:
    refusal = scrape_refusal(request)
    if refusal is not None:
        return refusal
    metrics: Metrics = request.app.state.metrics
    store: Store | None = getattr(request.app.state, "store", None)
    if store is not None:
        database_ok, fanout_ok = await check_health(store)
        metrics.record_health(database=database_ok, fanout=fanout_ok)
        metrics.sync_hub(store.events)
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def process_exited() -> None:
    """Drop this process's live gauges from the shared directory (multi-process mode)."""
    if multiprocess_mode():
        with contextlib.suppress(OSError):
            prometheus_multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
