"""Graceful shutdown of a real `datadiver-graph serve` process with live subscribers."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from datadiver_graph.config import Settings
from datadiver_graph.dev.keys import mint_dev_token
from tests.cli import clean_env
from tests.test_serve_lifecycle import accepts_connections, serving
from tests.ws_client import ServerClosed, open_ws


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_shutdown_closes_subscribers_and_the_database(tmp_path: Path, sig: int) -> None:
    data_dir = tmp_path / "data"
    env = clean_env(DATA_DIR=str(data_dir), MONGODB_DB="shutdown", LOG_LEVEL="WARNING")
    token = mint_dev_token(Settings(DATA_DIR=str(data_dir)), "user_a")
    with serving(env, tmp_path) as (process, url):
        embedded_uri = (data_dir / "secantus.uri").read_text().splitlines()[0]
        async with open_ws(url, "graphql-transport-ws", {"Authorization": f"Bearer {token}"}) as ws:
            op = await ws.subscribe("subscription { userSessions { sessionId } }")
            assert await ws.data(op) == {"userSessions": []}
            process.send_signal(sig)
            # The subscriber is told, with a close frame, rather than left on a dead socket.
            try:
                code, _reason = await ws.closed(within=15)
            except ServerClosed as closed:
                code = closed.code
            assert code in (1001, 1012)
        returncode = await asyncio.to_thread(process.wait, 30)
    assert returncode == 0
    assert not accepts_connections(embedded_uri)
