"""The health panel, read from the service's own metrics: exactly what `GET /metrics` reports.

It refreshes the health gauges and fan-out counters the way a scrape does, then parses the
same exposition text (all workers' values in multi-process mode, and then this worker's
own from its registry, as each worker writes it). Rates are the change between two panel
refreshes of this process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from datadiver_graph.domain.store import Store
from datadiver_graph.observability import metrics as service_metrics
from datadiver_graph.observability.metrics import Metrics


@dataclass(slots=True)
class Health:
    database_up: bool
    fanout_up: bool
    websocket_connections: int
    subscriptions: int
    requests_total: int
    server_errors_total: int
    operations_total: int
    operation_errors_total: int
    requests_per_s: float | None
    server_errors_per_s: float | None
    operation_errors_per_s: float | None
    fanout: dict[str, int]
    webhooks: dict[str, int] = field(default_factory=dict)
    multiprocess: bool = False
    # This worker's own share (its registry), when several workers sum into the totals.
    process_connections: int | None = None
    process_subscriptions: int | None = None


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def _total(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **where: Any) -> int:
    return int(
        sum(
            value
            for labels, value in samples.get(name, [])
            if all(check(labels.get(key, "")) for key, check in where.items())
        )
    )


class HealthPanel:
    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._last: tuple[float, int, int, int] | None = None

    async def read(self, metrics: Metrics, store: Store) -> Health:
        database_ok, fanout_ok = await service_metrics.check_health(store)
        metrics.record_health(database=database_ok, fanout=fanout_ok)
        metrics.sync_hub(store.events)
        samples = _samples(metrics.exposition().decode())
        multiprocess = service_metrics.multiprocess_mode()
        own = _samples(generate_latest(metrics.registry).decode()) if multiprocess else None
        requests = _total(samples, "datadiver_http_requests_total")
        errors = _total(samples, "datadiver_http_requests_total", status=_server_error)
        operations = _total(samples, "datadiver_graphql_operations_total")
        failed = _total(samples, "datadiver_graphql_operations_total", outcome="error".__eq__)
        now = self._clock()
        rates: list[float | None] = [None, None, None]
        if self._last is not None and now > self._last[0]:
            elapsed = now - self._last[0]
            rates = [
                max(0.0, (current - before) / elapsed)
                for current, before in zip((requests, errors, failed), self._last[1:], strict=True)
            ]
        self._last = (now, requests, errors, failed)
        webhooks: dict[str, int] = {}
        for labels, value in samples.get("datadiver_webhook_events_total", []):
            outcome = labels.get("outcome", "?")
            webhooks[outcome] = webhooks.get(outcome, 0) + int(value)
        return Health(
            database_up=_total(samples, "datadiver_database_up") > 0,
            fanout_up=_total(samples, "datadiver_fanout_link_up") > 0,
            websocket_connections=_total(samples, "datadiver_websocket_connections"),
            subscriptions=_total(samples, "datadiver_graphql_subscriptions_active"),
            requests_total=requests,
            server_errors_total=errors,
            operations_total=operations,
            operation_errors_total=failed,
            requests_per_s=rates[0],
            server_errors_per_s=rates[1],
            operation_errors_per_s=rates[2],
            fanout={
                "published": _total(samples, "datadiver_fanout_events_published_total"),
                "delivered": _total(samples, "datadiver_fanout_events_delivered_total"),
                "publish failures": _total(samples, "datadiver_fanout_publish_failures_total"),
                "dropped (slow)": _total(samples, "datadiver_fanout_dropped_slow_total"),
            },
            webhooks=dict(sorted(webhooks.items())),
            multiprocess=multiprocess,
            process_connections=(
                _total(own, "datadiver_websocket_connections") if own is not None else None
            ),
            process_subscriptions=(
                _total(own, "datadiver_graphql_subscriptions_active") if own is not None else None
            ),
        )


def _server_error(status: str) -> bool:
    return status.startswith("5")
