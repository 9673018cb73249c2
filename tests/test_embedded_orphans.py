"""The embedded database never outlives every server: one left running by a crash is
adopted by the next `serve`, which stops it when it stops (issue 16, item 10)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from datadiver_graph.storage.embedded import _alive
from tests.cli import clean_env, executable
from tests.test_serve_lifecycle import start_serve, wait_ready


def database_pid(data_dir: Path) -> int:
    return int((data_dir / "secantus.uri").read_text().split("\n")[1])


def gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def test_a_database_orphaned_by_a_crash_is_adopted_then_stopped(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = clean_env(DATA_DIR=str(data_dir), MONGODB_DB="orphans", LOG_LEVEL="WARNING")
    first, _ = start_serve(env, tmp_path, own_group=True)
    orphan = database_pid(data_dir)
    try:
        os.killpg(first.pid, signal.SIGKILL)  # the whole group, as a crash or OOM kill would
        first.communicate(timeout=10)
        assert _alive(orphan)  # its own session: the crash left it running

        second, _ = start_serve(env, tmp_path, own_group=True)
        assert database_pid(data_dir) == orphan  # adopted, not a second one started
        second.send_signal(signal.SIGTERM)  # a graceful stop
        out, _ = second.communicate(timeout=30)
        assert second.returncode == 0, out.decode(errors="replace")[-2000:]
        assert gone_within(orphan, 20), "the adopted database was left running"
        assert not (data_dir / "secantus.uri").exists()
    finally:
        if _alive(orphan):
            os.kill(orphan, signal.SIGKILL)


def test_a_command_beside_a_live_server_borrows_its_database(tmp_path: Path) -> None:
    """Borrowing is not adopting: a command run while `serve` lives leaves it its database."""
    data_dir = tmp_path / "data"
    env = clean_env(DATA_DIR=str(data_dir), MONGODB_DB="orphans", LOG_LEVEL="WARNING")
    server, url = start_serve(env, tmp_path, own_group=True)
    pid = database_pid(data_dir)
    try:
        exported = subprocess.run(
            [executable(), "export", "--table", "users"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert exported.returncode == 0, exported.stderr.decode()[-2000:]
        assert _alive(pid) and database_pid(data_dir) == pid
        wait_ready(server, url)
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=30)
    assert gone_within(pid, 20)
