"""Logs and metrics of a real app over real HTTP and WebSocket (no mocks): what an operator sees.

The app runs in-process under uvicorn (tests.servers); its log lines are captured by the
app's own JSON handler attached to the root logger, and `/metrics` is read with
prometheus-client's own parser.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from datadiver_graph.app import create_app
from datadiver_graph.config import Settings
from datadiver_graph.dev.keys import mint_dev_token
from datadiver_graph.observability.logs import make_handler
from datadiver_graph.observability.metrics import MAX_OPERATION_NAMES
from datadiver_graph.storage.mongo import Database
from tests.graphql_client import gql
from tests.metrics_support import Scrape, scrape
from tests.servers import serve_app
from tests.webhook_support import SECRET, sign, user_event
from tests.ws_client import TRANSPORT_WS, open_ws

USER = "user_obs"
ME = "query Me { getCurrentUser { externalId } }"
CREATE = "mutation Create($id: String!) { createSession(sessionId: $id) { sessionId version } }"
TOUCH = "mutation Touch($id: String!) { touchSession(sessionId: $id) { version } }"
WATCH = "subscription Watch($id: String!) { session(sessionId: $id) { sessionId version } }"


@dataclass
class Served:
    url: str
    http: httpx.AsyncClient
    token: str
    logs: io.StringIO

    def lines(self) -> list[dict[str, Any]]:
        """Every captured line, each of which must be one JSON object."""
        parsed = []
        for line in self.logs.getvalue().splitlines():
            record = json.loads(line)  # fails the test on any non-JSON line
            assert isinstance(record, dict), line
            parsed.append(record)
        return parsed

    def events(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") == event]


@pytest.fixture
def obs_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"clerk_webhook_secret": SecretStr(SECRET), "log_format": "json"}
    )


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """The app's JSON handler on the root logger, writing into a buffer, for one test."""
    buffer = io.StringIO()
    handler = make_handler("json", stream=buffer)
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


@pytest.fixture
async def served(
    obs_settings: Settings, database: Database, json_logs: io.StringIO
) -> AsyncIterator[Served]:
    token = mint_dev_token(obs_settings, USER)
    async with (
        serve_app(create_app(obs_settings)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        yield Served(url, client, token, json_logs)


async def eventually(check: Any, within: float = 5.0) -> None:
    """Retry an async assertion until it holds (a gauge updated by another task)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            await check()
            return
        except AssertionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.05)


# -- metrics ----------------------------------------------------------------------------------


async def test_metrics_count_http_graphql_webhooks_and_subscriptions(served: Served) -> None:
    http, token = served.http, served.token
    before = await scrape(http)

    assert (await gql(http, ME, token=token)).data == {"getCurrentUser": None}
    created = await gql(http, CREATE, {"id": "s-obs"}, token=token)
    assert created.data["createSession"]["version"] == 1
    broken = await gql(http, "{ getCurrentUser { externalId ", token=token)
    assert broken.codes == ["GRAPHQL_PARSE_FAILED"]
    denied = await gql(http, TOUCH, {"id": "s-obs"})  # no token
    assert denied.codes == ["UNAUTHENTICATED"]

    body, headers = sign(user_event("user.created", USER, email_addresses=[]))
    assert (await http.post("/webhooks/clerk", content=body, headers=headers)).status_code == 200
    headers["svix-signature"] = "v1,AAAA"
    forged = await http.post("/webhooks/clerk", content=body, headers=headers)
    assert forged.status_code == 400

    async with open_ws(served.url, TRANSPORT_WS, {"Authorization": f"Bearer {token}"}) as ws:
        op = await ws.subscribe(WATCH, {"id": "s-obs"})
        assert (await ws.data(op))["session"]["version"] == 1
        during = await scrape(http)
        assert during.value("datadiver_websocket_connections") == 1
        assert during.value("datadiver_graphql_subscriptions_active") == 1
        assert (await gql(http, TOUCH, {"id": "s-obs"}, token=token)).data
        assert (await ws.data(op))["session"]["version"] == 2
        await ws.unsubscribe(op)

    async def settled() -> None:
        now = await scrape(http)
        assert now.value("datadiver_websocket_connections") == 0
        assert now.value("datadiver_graphql_subscriptions_active") == 0

    await eventually(settled)
    after = await scrape(http)

    def delta(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    graphql_posts = {"method": "POST", "route": "/graphql", "status": "200"}
    # Me, Create, the parse failure (200 under application/json), Touch x2.
    assert delta("datadiver_http_requests_total", **graphql_posts) >= 4
    assert delta("datadiver_http_request_duration_seconds_count", route="/graphql") >= 4
    ops = "datadiver_graphql_operations_total"
    assert delta(ops, operation="Me", type="query", outcome="ok") == 1
    assert delta(ops, operation="Create", type="mutation", outcome="ok") == 1
    assert delta(ops, operation="Touch", type="mutation", outcome="ok") == 1
    assert delta(ops, operation="Touch", type="mutation", outcome="error") == 1
    assert delta(ops, operation="anonymous", outcome="error") == 1  # the syntax error
    assert delta(ops, operation="Watch", type="subscription", outcome="ok") == 1
    assert delta("datadiver_graphql_errors_total", code="GRAPHQL_PARSE_FAILED") == 1
    assert delta("datadiver_graphql_errors_total", code="UNAUTHENTICATED") == 1
    latency = "datadiver_graphql_operation_duration_seconds_count"
    assert delta(latency, operation="Me", type="query") == 1
    assert delta(latency, type="subscription") == 0  # lifetimes are not latencies

    webhooks = "datadiver_webhook_events_total"
    assert delta(webhooks, type="user.created", outcome="applied") == 1
    assert delta(webhooks, type="unknown", outcome="invalid_signature") == 1
    assert delta("datadiver_http_requests_total", route="/webhooks/clerk", status="400") == 1

    # Create, the webhook's user and Touch each published; Touch reached the subscriber.
    assert delta("datadiver_fanout_events_published_total") >= 3
    assert delta("datadiver_fanout_events_delivered_total") >= 1
    assert after.value("datadiver_fanout_publish_failures_total") == 0
    assert after.value("datadiver_fanout_dropped_slow_total") == 0
    assert after.value("datadiver_database_up") == 1
    assert after.value("datadiver_fanout_link_up") == 1


async def test_unknown_paths_and_operation_names_keep_label_sets_bounded(served: Served) -> None:
    http, token = served.http, served.token
    for n in range(3):
        assert (await http.get(f"/no/such/path/{n}")).status_code == 404
    for n in range(MAX_OPERATION_NAMES + 20):
        result = await gql(http, f"query Op{n} {{ getCurrentUser {{ externalId }} }}", token=token)
        assert result.status == 200
    long_name = "Q" + "x" * 200
    await gql(http, f"query {long_name} {{ getCurrentUser {{ externalId }} }}", token=token)

    after = await scrape(http)
    routes = after.label_values("datadiver_http_requests_total", "route")
    assert "unmatched" in routes
    assert not any(route.startswith("/no/such") for route in routes)
    names = after.label_values("datadiver_graphql_operations_total", "operation")
    assert len(names) <= MAX_OPERATION_NAMES + 2  # the admitted names, "other", "anonymous"
    assert "other" in names
    assert long_name not in names
    assert after.value("datadiver_graphql_operations_total", operation="other") >= 21


async def test_readyz_updates_the_health_gauges(served: Served) -> None:
    assert (await served.http.get("/readyz")).status_code == 200
    text = (await served.http.get("/metrics")).text
    assert Scrape(text).value("datadiver_database_up") == 1


# -- logs -------------------------------------------------------------------------------------


async def test_every_line_is_json_with_the_documented_fields(served: Served) -> None:
    http, token = served.http, served.token
    response = await http.post(
        "/graphql",
        json={"query": ME},
        headers={"authorization": f"Bearer {token}", "x-request-id": "req-abc.123"},
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "req-abc.123"

    # An unusable id (too long, or not printable) is replaced, and the new one echoed.
    for bad in ("x" * 129, "bad\tid"):
        replaced = await http.post("/graphql", json={"query": ME}, headers={"x-request-id": bad})
        assert replaced.headers["x-request-id"] not in (bad, "")
        assert len(replaced.headers["x-request-id"]) <= 128

    broken = await http.post(
        "/graphql",
        json={"query": 'mutation Bad { touchSession(sessionId: "nope") { version } }'},
        headers={"authorization": f"Bearer {token}"},
    )
    assert broken.json()["errors"]

    body, headers = sign(user_event("user.created", USER, email_addresses=[]))
    headers["x-request-id"] = "req-webhook"
    assert (await http.post("/webhooks/clerk", content=body, headers=headers)).status_code == 200

    async with open_ws(served.url, TRANSPORT_WS, {"authToken": token}) as ws:
        op = await ws.subscribe("subscription Live { currentUser { externalId } }")
        assert (await ws.data(op))["currentUser"]["externalId"] == USER
        await ws.unsubscribe(op)

    await eventually(_has_event(served, "subscription_end"))
    await eventually(_has_event(served, "websocket"))
    lines = served.lines()
    assert lines, "nothing was logged"
    for line in lines:
        assert {"time", "level", "logger", "message"} <= line.keys(), line
    assert token not in served.logs.getvalue()
    assert "Bearer" not in served.logs.getvalue()

    requests = served.events("http_request")
    for line in requests:
        assert {"method", "path", "status", "duration_ms", "request_id"} <= line.keys(), line
    tagged = [line for line in requests if line["request_id"] == "req-abc.123"]
    assert len(tagged) == 1  # one line per request: no second access log
    assert tagged[0] | {"method": "POST", "path": "/graphql", "status": 200} == tagged[0]

    operations = served.events("graphql_operation")
    for line in operations:
        assert {"operation", "operation_type", "user_id", "duration_ms", "outcome"} <= line.keys()
        assert "error_codes" in line and "request_id" in line
    me = [line for line in operations if line["request_id"] == "req-abc.123"]
    assert len(me) == 1
    assert me[0]["operation"] == "Me"
    assert me[0]["operation_type"] == "query"
    assert me[0]["user_id"] == USER
    assert me[0]["outcome"] == "ok" and me[0]["error_codes"] == []
    bad = next(line for line in operations if line["operation"] == "Bad")
    assert bad["outcome"] == "error" and bad["error_codes"] == ["NOT_FOUND"]
    # The same request id on the operation line and the request line of that request.
    bad_request = [line for line in requests if line["request_id"] == bad["request_id"]]
    assert len(bad_request) == 1

    (webhook,) = served.events("webhook")
    assert webhook["event_type"] == "user.created"
    assert webhook["svix_id"] == headers["svix-id"]
    assert webhook["outcome"] == "applied"
    assert webhook["request_id"] == "req-webhook"

    (start,) = served.events("subscription_start")
    (end,) = served.events("subscription_end")
    assert start["operation"] == end["operation"] == "Live"
    assert start["user_id"] == end["user_id"] == USER
    assert end["reason"] == "cancelled" and end["duration_ms"] >= 0
    # Both lines carry the id of the WebSocket connection that ran the subscription.
    (connection,) = served.events("websocket")
    assert start["request_id"] == end["request_id"] == connection["request_id"]
    assert connection["accepted"] is True


async def test_a_rejected_websocket_is_logged_with_its_close_code(served: Served) -> None:
    from tests.ws_client import ServerClosed

    with pytest.raises((ServerClosed, AssertionError)):
        async with open_ws(served.url, TRANSPORT_WS, {"authToken": "not-a-token"}) as ws:
            await ws.closed()
    await eventually(_has_event(served, "websocket"))
    (line,) = served.events("websocket")
    assert line["close_code"] == 4403
    assert "not-a-token" not in served.logs.getvalue()


def _has_event(served: Served, event: str) -> Any:
    async def check() -> None:
        assert served.events(event), f"no {event} line yet"

    return check


# -- formats ----------------------------------------------------------------------------------


def test_log_format_defaults_to_text_in_development_and_json_in_production() -> None:
    assert Settings(DATADIVER_ENV="development").effective_log_format == "text"
    assert Settings(DATADIVER_ENV="production").effective_log_format == "json"
    assert Settings(DATADIVER_ENV="development", LOG_FORMAT="JSON").effective_log_format == "json"
    assert Settings(DATADIVER_ENV="production", LOG_FORMAT="text").effective_log_format == "text"


def test_invalid_log_format_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from datadiver_graph.config import SettingsError, load_settings

    monkeypatch.setenv("LOG_FORMAT", "yaml")
    with pytest.raises(SettingsError, match="LOG_FORMAT"):
        load_settings()


def test_text_lines_are_readable_with_their_fields() -> None:
    from datadiver_graph.observability.logs import request_id_var

    buffer = io.StringIO()
    logger = logging.getLogger("tests.observability.text")
    logger.propagate = False
    logger.addHandler(make_handler("text", stream=buffer))
    logger.setLevel(logging.INFO)
    token = request_id_var.set("rid-1")
    try:
        logger.info("GET /healthz 200", extra={"status": 200, "duration_ms": 1.5})
    finally:
        request_id_var.reset(token)
        logger.handlers.clear()
    line = buffer.getvalue().strip()
    assert "\n" not in line
    assert line.endswith("GET /healthz 200 status=200 duration_ms=1.5 request_id=rid-1")
    assert " INFO tests.observability.text: " in line
