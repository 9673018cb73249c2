"""What every benchmark shares: the servers it starts, process counters, the machine, stats.

A benchmark runs three kinds of process: the embedded SecantusDB (and Redis where fan-out is
measured), the app as `datadiver-graph serve` in a process of its own, and the load, which
runs in the bench process (plus helper processes for many WebSockets). Server CPU time and
RSS are read from /proc for the server's pid only, so the load generator's own work, and the
database's, never count against the app.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from datadiver_graph.storage.embedded import EmbeddedMongo, free_port

SERVICE_KEY = "bench-service-key-0123456789abcdef"
DB_NAME = "bench"
READY_WITHIN = 60.0
REPO = Path(__file__).resolve().parent.parent
FAST_PATHS_OFF = "fast paths off"  # the server's one warning when it runs stock regardless
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PACKAGES = (
    "strawberry-graphql",
    "graphql-core",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "websockets",
    "pymongo",
    "SecantusDB",
    "redis",
    "broadcaster",
    "orjson",
    "pydantic",
    "PyJWT",
    "cryptography",
    "svix",
    "py-spy",
)


# -- limits and /proc ------------------------------------------------------------------------


def raise_open_files() -> int:
    """Lift the soft open-file limit to the hard one; children (the server) inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU time of a process (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


class CpuMeter:
    """CPU seconds a set of processes used between start() and stop(): `name` is user +
    system time, `name user` the user time alone (the kernel's share of socket I/O varies
    with how busy the peers are, our code does not)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._start: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        readings: dict[str, float] = {}
        for name, pid in self.pids.items():
            user, system = cpu_times(pid)
            readings[name] = user + system
            readings[f"{name} user"] = user
        return readings

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> dict[str, float]:
        self.used = {name: value - self._start[name] for name, value in self._read().items()}
        return self.used


# -- statistics ------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


# -- the machine -----------------------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine() -> dict[str, str]:
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return {
        "cpu": cpu_model(),
        "cores": f"{os.cpu_count()} (usable: {len(os.sched_getaffinity(0))})",
        "memory": _memory_total(),
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": ", ".join(versions),
    }


def _memory_total() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) // 1024} MiB"
    return "unknown"


# -- servers ---------------------------------------------------------------------------------


class RedisProcess:
    """A throw-away `redis-server` on a free port (no persistence)."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                *(binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""),
                *("--appendonly", "no", "--dir", str(directory)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock,
            ):
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not start")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@dataclass
class Stack:
    """The servers of one benchmark: database, (Redis), the app, and where they answer."""

    workdir: Path
    data_dir: Path
    db: EmbeddedMongo
    server: subprocess.Popen[bytes]
    port: int
    redis: RedisProcess | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"

    @property
    def server_pid(self) -> int:
        return self.server.pid

    @property
    def db_pid(self) -> int:
        process = self.db._process
        assert process is not None
        return process.pid

    def pids(self) -> dict[str, int]:
        return {"server": self.server_pid, "db": self.db_pid}

    def check_alive(self) -> None:
        if self.server.poll() is not None:
            raise RuntimeError(f"server exited with {self.server.returncode}: {self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        path = self.workdir / "server.log"
        with contextlib.suppress(OSError):
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stats(self) -> dict[str, object]:
        """The bench-only /_bench/stats: event-loop task count and fan-out counters."""
        response = httpx.get(f"{self.url}/_bench/stats", timeout=30)
        response.raise_for_status()
        result: dict[str, object] = response.json()
        return result


def _start_server(
    workdir: Path, data_dir: Path, mongo_uri: str, extra_env: dict[str, str], variant: str | None
) -> tuple[subprocess.Popen[bytes], int, dict[str, str]]:
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        # Nothing from the caller's shell may change what is measured.
        if not key.startswith(("CLERK_", "BROADCAST_", "SERVICE_", "RATE_", "NEXT_PUBLIC_"))
    }
    env.update(
        {
            "MONGODB_URI": mongo_uri,
            "MONGODB_DB": DB_NAME,
            "DATA_DIR": str(data_dir),
            "DATADIVER_ENV": "development",
            "RATE_LIMIT_PER_MINUTE": "0",  # the default 600/min per identity would throttle
            "LOG_LEVEL": "WARNING",
            "DATADIVER_BENCH_ROUTES": "1",
            "PYTHONUNBUFFERED": "1",
            "FAST_PATHS": "true",  # as `serve` runs by default, whatever the caller's shell says
        }
    )
    env.update(extra_env)
    exe = Path(sys.executable).with_name("datadiver-graph")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "datadiver_graph.cli"]
    if variant is not None:  # fast paths taken out one by one (bench/variant_server.py)
        command = [sys.executable, "-m", "bench.variant_server", variant]
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)

    def lift_limit() -> None:  # the server holds one descriptor per WebSocket
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit[1], limit[1]))

    with (workdir / "server.log").open("ab") as log:
        process = subprocess.Popen(
            [*command, "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=workdir,  # no stray .env from the repository
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=lift_limit,
        )
    return process, port, env


def _wait_ready(stack: Stack) -> None:
    deadline = time.monotonic() + READY_WITHIN
    while time.monotonic() < deadline:
        stack.check_alive()
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{stack.url}/readyz", timeout=2).status_code == 200:
                _check_mode(stack)
                return
        time.sleep(0.1)
    raise RuntimeError(f"server not ready within {READY_WITHIN:.0f} s: {stack.log_tail()}")


def _check_mode(stack: Stack) -> None:
    """A run meant for the fast paths must not measure stock because a version moved."""
    wanted = stack.env.get("FAST_PATHS", "true").lower() not in ("0", "false", "no", "off")
    if wanted and FAST_PATHS_OFF in (stack.workdir / "server.log").read_text(errors="replace"):
        raise RuntimeError(f"the server runs without its fast paths: {stack.log_tail(3)}")


def _stop_process(process: subprocess.Popen[bytes], timeout: float) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


@contextlib.contextmanager
def running_stack(
    name: str,
    *,
    redis: bool = False,
    extra_env: dict[str, str] | None = None,
    variant: str | None = None,
) -> Iterator[Stack]:
    """Database (+ Redis) + app server in a fresh temporary directory, torn down on exit.
    `variant`: fast paths to take out (bench/variant_server.py); FAST_PATHS in extra_env."""
    workdir = Path(tempfile.mkdtemp(prefix=f"datadiver-bench-{name}-"))
    data_dir = workdir / "data"
    db = EmbeddedMongo(data_dir / "mongo")
    redis_process: RedisProcess | None = None
    server: subprocess.Popen[bytes] | None = None
    try:
        mongo_uri = db.start(timeout=30)
        env = dict(extra_env or {})
        if redis:
            redis_process = RedisProcess(workdir / "redis")
            env["BROADCAST_URL"] = redis_process.url
        server, port, full_env = _start_server(workdir, data_dir, mongo_uri, env, variant)
        stack = Stack(workdir, data_dir, db, server, port, redis_process, full_env)
        _wait_ready(stack)
        yield stack
    finally:
        if server is not None:
            _stop_process(server, 5)
        db.stop()
        if redis_process is not None:
            redis_process.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# -- results ---------------------------------------------------------------------------------


@dataclass
class Target:
    what: str
    goal: str
    measured: str
    met: bool | None  # None: not applicable in this mode


@dataclass
class Result:
    name: str
    markdown: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def table(self, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        self.markdown.append("| " + " | ".join(header) + " |")
        self.markdown.append("| " + " | ".join("---" for _ in header) + " |")
        for row in rows:
            self.markdown.append("| " + " | ".join(str(cell) for cell in row) + " |")
        self.markdown.append("")


def say(message: str) -> None:
    print(message, flush=True)
