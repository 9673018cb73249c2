"""`datadiver-graph serve` as a real process with LOG_FORMAT=json: stderr is JSON lines only,
uvicorn's access log is replaced by ours, and /metrics aggregates worker processes."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from datadiver_graph.api.webhooks import DEV_WEBHOOK_SECRET
from datadiver_graph.config import Settings
from datadiver_graph.dev.keys import mint_dev_token
from datadiver_graph.storage.embedded import free_port
from tests.cli import clean_env, executable
from tests.metrics_support import scrape_sync
from tests.test_serve_lifecycle import wait_ready
from tests.webhook_support import sign, user_event
from tests.ws_client import TRANSPORT_WS, open_ws

USER = "user_json"


@contextlib.contextmanager
def serving(
    env: dict[str, str], cwd: Path, *args: str
) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """serve on a free port, stderr (the log) to a file; stopped with SIGTERM at the end."""
    port = free_port()
    log_path = cwd / "serve.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [executable(), "serve", "--port", str(port), *args],
            env=env,
            cwd=cwd,
            stdout=log_file,
            stderr=log_file,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(process, url)
            yield process, url, log_path
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def json_lines(log_path: Path) -> list[dict[str, Any]]:
    lines = []
    for raw in log_path.read_text().splitlines():
        try:
            record = json.loads(raw)
        except json.JSONDecodeError:
            pytest.fail(f"a log line is not JSON: {raw!r}")
        assert isinstance(record, dict)
        assert {"time", "level", "logger", "message"} <= record.keys(), record
        lines.append(record)
    return lines


@pytest.fixture
def env(tmp_path: Path, mongo_uri: str, db_name: str) -> Iterator[dict[str, str]]:
    yield clean_env(
        MONGODB_URI=mongo_uri,
        MONGODB_DB=db_name,
        DATA_DIR=str(tmp_path / "data"),
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
    )
    with MongoClient(mongo_uri) as client:
        client.drop_database(db_name)


async def test_serve_logs_json_lines_only_and_serves_multiprocess_metrics(
    env: dict[str, str], tmp_path: Path
) -> None:
    metrics_dir = tmp_path / "metrics"
    env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"left over by a previous run")
    token = mint_dev_token(Settings(DATA_DIR=env["DATA_DIR"]), USER)

    with serving(env, tmp_path) as (process, url, log_path):
        assert not (metrics_dir / "counter_999999.db").exists()  # wiped at start
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            answer = await http.post(
                "/graphql",
                json={"query": "query Me { getCurrentUser { externalId } }"},
                headers={"authorization": f"Bearer {token}", "x-request-id": "cli-req-1"},
            )
            assert answer.status_code == 200
            assert answer.headers["x-request-id"] == "cli-req-1"
            body, headers = sign(
                user_event("user.created", USER, email_addresses=[]), secret=DEV_WEBHOOK_SECRET
            )
            hook = await http.post("/webhooks/clerk", content=body, headers=headers)
            assert hook.status_code == 200
        async with open_ws(url, TRANSPORT_WS, {"Authorization": f"Bearer {token}"}) as ws:
            op = await ws.subscribe("subscription Live { currentUser { externalId } }")
            assert (await ws.data(op))["currentUser"]["externalId"] == USER
            during = scrape_sync(url)
            assert during.value("datadiver_websocket_connections") == 1
            assert during.value("datadiver_graphql_subscriptions_active") == 1
            await ws.unsubscribe(op)

        scraped = scrape_sync(url)
        assert any(metrics_dir.glob("*.db"))  # values live in the shared directory
        assert scraped.value("datadiver_graphql_operations_total", operation="Me") == 1
        assert scraped.value("datadiver_webhook_events_total", type="user.created") == 1
        assert scraped.value("datadiver_http_requests_total", route="/graphql") >= 1
        assert scraped.value("datadiver_database_up") == 1

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0

    lines = json_lines(log_path)
    text = log_path.read_text()
    assert token not in text
    assert not any(line["logger"] == "uvicorn.access" for line in lines)
    assert any(line["logger"] == "uvicorn.error" for line in lines)  # uvicorn's, as JSON
    assert not any("color_message" in line for line in lines)
    mine = [line for line in lines if line.get("request_id") == "cli-req-1"]
    assert [line["event"] for line in mine] == ["graphql_operation", "http_request"]
    assert mine[0]["user_id"] == USER and mine[0]["operation"] == "Me"
    events = {line.get("event") for line in lines}
    assert {"webhook", "subscription_start", "subscription_end", "websocket"} <= events


def test_serve_with_workers_aggregates_metrics_across_processes(
    env: dict[str, str], tmp_path: Path
) -> None:
    before = set(Path(tempfile.gettempdir()).glob("datadiver-metrics-*"))
    requests = 12
    with serving(env, tmp_path, "--workers", "2") as (process, url, log_path):
        with httpx.Client(base_url=url, timeout=10) as http:
            for _ in range(requests):
                response = http.post("/graphql", json={"query": "query Q { __typename }"})
                assert response.status_code == 200
        created = set(Path(tempfile.gettempdir()).glob("datadiver-metrics-*")) - before
        assert len(created) == 1  # serve made the shared directory

        # Whichever worker answers, it reports every worker's requests.
        for _ in range(4):
            scraped = scrape_sync(url)
            assert scraped.value("datadiver_graphql_operations_total", operation="Q") == requests
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0

    assert not any(path.exists() for path in created)  # and removed it on the way out
    lines = json_lines(log_path)
    assert len([line for line in lines if line.get("event") == "graphql_operation"]) == requests
    pids = {line["message"] for line in lines if line["message"].startswith("Started server")}
    assert len(pids) == 2  # two workers, each logging through our JSON handler
