"""`datadiver-graph serve` as a real process: embedded database start, stop and persistence."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pymongo import MongoClient

from datadiver_graph.storage.embedded import free_port
from tests.cli import assert_one_line_error, clean_env, executable, run

READY_WITHIN = 15.0


def wait_ready(process: subprocess.Popen[bytes], url: str) -> httpx.Response:
    """Poll /readyz until it answers 200; fail if the server exits or 15 s pass."""
    deadline = time.monotonic() + READY_WITHIN
    last: Any = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            out, _ = process.communicate()
            pytest.fail(f"serve exited with {process.returncode}: {out.decode()[-2000:]}")
        try:
            response = httpx.get(f"{url}/readyz", timeout=1)
            if response.status_code == 200:
                return response
            last = response.status_code
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.1)
    pytest.fail(f"/readyz did not answer 200 within {READY_WITHIN} s (last: {last!r})")


def start_serve(
    env: dict[str, str], cwd: Path, *, own_group: bool = False
) -> tuple[subprocess.Popen[bytes], str]:
    """`serve` on a free port, once ready; `own_group` puts it in its own process group
    (to kill -9 it with its children, as a crash would). Killed if it never gets ready."""
    port = free_port()
    process = subprocess.Popen(
        [executable(), "serve", "--port", str(port)],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=own_group,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, url)
    except BaseException:
        if process.poll() is None:
            process.kill()
            process.communicate()
        raise
    return process, url


@contextlib.contextmanager
def serving(env: dict[str, str], cwd: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    process, url = start_serve(env, cwd)
    try:
        yield process, url
    finally:
        if process.poll() is None:  # the test did not stop it: stop it (and its database)
            process.terminate()
            try:
                process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()


def stop(process: subprocess.Popen[bytes], sig: signal.Signals) -> str:
    process.send_signal(sig)
    out, _ = process.communicate(timeout=30)
    return out.decode(errors="replace")


def accepts_connections(uri: str) -> bool:
    host_port = uri.split("//", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        try:
            sock.connect((host, int(port)))
        except OSError:
            return False
        return True


def test_embedded_database_starts_stops_with_serve_and_keeps_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = clean_env(DATA_DIR=str(data_dir), MONGODB_DB="lifecycle", LOG_LEVEL="WARNING")
    uri_file = data_dir / "secantus.uri"
    rows = tmp_path / "sessions.jsonl"
    rows.write_bytes(
        orjson.dumps({"sessionId": "kept", "userId": "user_a", "createdAt": 1_000}) + b"\n"
    )

    with serving(env, tmp_path) as (process, _url):
        assert uri_file.exists()
        embedded_uri = uri_file.read_text().splitlines()[0]
        assert accepts_connections(embedded_uri)
        # The CLI finds the running embedded database through DATA_DIR/secantus.uri.
        result = run(["import", "--table", "sessions", str(rows)], env, tmp_path)
        assert result.returncode == 0, result.stderr.decode()
        with MongoClient(embedded_uri, serverSelectionTimeoutMS=2000) as client:
            assert client.lifecycle.sessions.count_documents({"sessionId": "kept"}) == 1
        output = stop(process, signal.SIGINT)
        assert process.returncode == 0, output
        assert "Traceback" not in output, output

    # The database went down with the server, and said so by removing its address file.
    assert not accepts_connections(embedded_uri)
    assert not uri_file.exists()

    with serving(env, tmp_path) as (process, _url):
        embedded_uri = uri_file.read_text().splitlines()[0]
        with MongoClient(embedded_uri, serverSelectionTimeoutMS=2000) as client:
            doc = client.lifecycle.sessions.find_one({"sessionId": "kept"})
        assert doc is not None and doc["userId"] == "user_a"
        output = stop(process, signal.SIGTERM)
        assert process.returncode == 0, output
        assert "Traceback" not in output, output
    assert not accepts_connections(embedded_uri)


def test_with_mongodb_uri_no_embedded_database_is_started(
    tmp_path: Path, mongo_uri: str, db_name: str
) -> None:
    data_dir = tmp_path / "data"
    env = clean_env(
        MONGODB_URI=mongo_uri, MONGODB_DB=db_name, DATA_DIR=str(data_dir), LOG_LEVEL="WARNING"
    )
    try:
        with serving(env, tmp_path) as (process, url):
            response = httpx.get(f"{url}/readyz", timeout=5)
            assert response.status_code == 200
            assert not (data_dir / "secantus.uri").exists()
            assert not (data_dir / "mongo").exists()
            output = stop(process, signal.SIGTERM)
            assert process.returncode == 0, output
    finally:
        with MongoClient(mongo_uri) as client:
            client.drop_database(db_name)
    assert accepts_connections(mongo_uri)  # the shared server is not ours to stop


def test_a_stale_address_file_is_not_trusted(tmp_path: Path, mongo_uri: str, db_name: str) -> None:
    """A secantus.uri left behind by a dead server may name a port another server now holds:
    the CLI must start its own database rather than write into that one."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "secantus.uri").write_text(f"{mongo_uri}\n999999999\n")
    env = clean_env(DATA_DIR=str(data_dir), MONGODB_DB=db_name)
    rows = tmp_path / "users.jsonl"
    rows.write_bytes(orjson.dumps({"externalId": "user_stale", "createdAt": 1}) + b"\n")
    try:
        result = run(["import", "--table", "users", str(rows)], env, tmp_path)
        assert result.returncode == 0, result.stderr.decode()
        with MongoClient(mongo_uri) as client:
            assert client[db_name].users.count_documents({}) == 0
        # It went to the embedded database under DATA_DIR, which keeps it.
        result = run(["export", "--table", "users"], env, tmp_path)
        assert result.returncode == 0, result.stderr.decode()
        assert orjson.loads(result.stdout)["externalId"] == "user_stale"
        # A refused import through the embedded database still says so in one line.
        result = run(["import", "--table", "users", str(rows)], env, tmp_path)
        assert_one_line_error(result, "users", "--append")
    finally:
        with MongoClient(mongo_uri) as client:
            client.drop_database(db_name)
