"""Run the installed `datadiver-graph` command as a user would: a real subprocess."""

from __future__ import annotations

import os
import pty
import shutil
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


def executable() -> str:
    """The console script of this venv (not a `python -m`: cli has no __main__)."""
    beside = Path(sys.executable).parent / "datadiver-graph"
    if beside.exists():
        return str(beside)
    found = shutil.which("datadiver-graph")
    if found is None:
        raise RuntimeError("datadiver-graph is not installed in this environment")
    return found


def clean_env(**overrides: str | None) -> dict[str, str]:
    """The environment without any of the service's variables, plus `overrides`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MONGODB_", "CLERK_", "CONVEX_", "NEXT_PUBLIC_CLERK"))
        and key
        not in {
            "DATA_DIR",
            "BROADCAST_URL",
            "SERVICE_API_KEYS",
            "MAX_QUERY_SIZE",
            "CACHE_TTL",
            "DATADIVER_ENV",
            "LOG_LEVEL",
            "LOG_FORMAT",
            "PROMETHEUS_MULTIPROC_DIR",
        }
    }
    for key, value in overrides.items():
        if value is not None:
            env[key] = value
    return env


def run(
    args: Sequence[str],
    env: Mapping[str, str],
    cwd: Path,
    *,
    stdin: bytes | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [executable(), *args],
        env=dict(env),
        cwd=cwd,
        input=stdin,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[bytes], *needles: str) -> str:
    """A user-caused failure: non-zero exit, one `error:` line on stderr, no traceback."""
    stderr = result.stderr.decode()
    assert result.returncode != 0, stderr
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    for needle in needles:
        assert needle in lines[0], stderr
    return lines[0]


@dataclass(frozen=True)
class TerminalRun:
    returncode: int
    stdout: bytes  # captured: only stdin and stderr are the terminal
    terminal: str  # what the command wrote to the terminal (prompts, progress)


def run_on_terminal(
    args: Sequence[str], env: Mapping[str, str], cwd: Path, answer: bytes, timeout: float = 120
) -> TerminalRun:
    """The command with a terminal as stdin and stderr, as an operator runs it: `answer`
    typed in beforehand. The terminal is read while the command runs so that its output
    (a progress bar redraws many times) never fills the pty's buffer."""
    main, replica = pty.openpty()
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: every writer closed the terminal
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        os.write(main, answer)
        with subprocess.Popen(
            [executable(), *args],
            env=dict(env),
            cwd=cwd,
            stdin=replica,
            stdout=subprocess.PIPE,
            stderr=replica,
        ) as process:
            os.close(replica)
            replica = -1
            stdout, _ = process.communicate(timeout=timeout)
        reader.join(timeout=5)
    finally:
        if replica != -1:
            os.close(replica)
        os.close(main)
    text = b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")
    return TerminalRun(process.returncode, stdout, text)
