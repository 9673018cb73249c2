"""The client-conformance suite: real client libraries, unmodified, against a real server.

Each `tests/clients/*.test.mjs` is a Node test file (node's own test runner) using a
library frontends run: graphql-ws, Apollo Client 3 and 4, urql, subscriptions-transport-ws,
graphql-http's audit, a headless Chromium. The libraries come pinned from
`tests/clients/package-lock.json` (`make test` runs `npm ci`). Each file starts its own
`datadiver-graph serve` processes (support.mjs) on this session's SecantusDB.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from datadiver_graph.storage.embedded import EmbeddedMongo
from tests.cli import executable

CLIENTS = Path(__file__).parent / "clients"
FILES = sorted(path.name for path in CLIENTS.glob("*.test.mjs"))


@pytest.fixture(scope="module")
def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail("node is not installed: the client-conformance suite needs Node.js 20+")
    if not (CLIENTS / "node_modules" / ".package-lock.json").exists():
        pytest.fail("tests/clients has no node_modules: run `make test` (it runs `npm ci`)")
    return found


@pytest.mark.timeout(300)
@pytest.mark.parametrize("file", FILES)
def test_client_library(file: str, node: str, mongo_server: EmbeddedMongo) -> None:
    env = {
        **os.environ,
        "DATADIVER_GRAPH": executable(),
        "MONGODB_URI": mongo_server.uri,
        "NODE_OPTIONS": "--unhandled-rejections=strict",
    }
    result = subprocess.run(
        [node, "--test", "--test-reporter=spec", file],
        cwd=CLIENTS,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    if result.returncode != 0:
        pytest.fail(f"{file} failed:\n{result.stdout[-12000:]}\n{result.stderr[-4000:]}")
