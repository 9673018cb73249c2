"""The embedded SecantusDB server used when MONGODB_URI is unset (development, tests).

It runs as a child process rather than in-process: the server is pure Python and would
otherwise compete with the app for the GIL on every request. It sits in a session of its
own (a Ctrl-C aimed at the app must not stop it first), so a crash of the app (kill -9 of
its process group) leaves it running. `secantus.uri` names it and the process that owns
it: a later start finds it, and if that owner is gone, adopts it (and stops it on exit, as
its own); a command run beside a live owner only borrows it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from pymongo import MongoClient
from pymongo.errors import PyMongoError

log = logging.getLogger(__name__)


class EmbeddedDatabaseError(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedMongo:
    """A SecantusDB child process storing its data under `data_path` (kept across restarts)."""

    def __init__(self, data_path: Path, *, host: str = "127.0.0.1", port: int | None = None):
        self.data_path = Path(data_path)
        self.host = host
        self.port = port or free_port(host)
        self._process: subprocess.Popen[bytes] | None = None
        self._attached = False
        # The pid of a server we adopted (its owner died): ours to stop, not our child.
        self._adopted: int | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://{self.host}:{self.port}/?directConnection=true"

    @property
    def log_path(self) -> Path:
        return self.data_path.parent / "secantus.log"

    @property
    def uri_file(self) -> Path:
        # Lets a second command (import/export, another `serve`) find a server already
        # running on this data directory instead of fighting it for WiredTiger's lock.
        return self.data_path.parent / "secantus.uri"

    @property
    def running(self) -> bool:
        return self._attached or (self._process is not None and self._process.poll() is None)

    def _attach_to_running(self) -> bool:
        try:
            uri, pid, owner = [*self.uri_file.read_text().strip().split("\n"), "", ""][:3]
        except OSError:
            return False
        try:
            client: MongoClient[dict[str, object]] = MongoClient(
                uri, serverSelectionTimeoutMS=500, connectTimeoutMS=500
            )
        except (PyMongoError, ValueError, TypeError):  # not a URI at all
            return False
        try:
            status = client.admin.command("serverStatus")
        except PyMongoError:
            return False
        finally:
            client.close()
        # A file left by a server that died can name a port some other server now uses;
        # only the process that wrote the file is ours.
        if pid.strip() and str(status.get("pid")) != pid.strip():
            log.warning("ignoring stale %s: another process answers at %s", self.uri_file, uri)
            return False
        host_port = uri.split("//", 1)[1].split("/", 1)[0]
        self.host, port = host_port.rsplit(":", 1)
        self.port = int(port)
        self._attached = True
        if owner.strip().isdigit() and _alive(int(owner)):
            log.info("using the embedded SecantusDB already running at %s", self.uri)
            return True
        # Its owner is gone (a crash): the server is an orphan; adopt it, so that this
        # process stops it on exit instead of leaving it running for ever.
        self._adopted = int(pid) if pid.strip().isdigit() else None
        self._write_uri_file(int(pid) if pid.strip().isdigit() else None)
        log.warning(
            "adopting the embedded SecantusDB at %s left running by a process that exited",
            self.uri,
        )
        return True

    def _write_uri_file(self, server_pid: int | None) -> None:
        # uri, the server's pid, the pid of the process that stops it on exit.
        self.uri_file.write_text(f"{self.uri}\n{server_pid or ''}\n{os.getpid()}\n")

    def start(self, timeout: float = 15.0) -> str:
        """Start the server, or attach to the one already serving this data directory."""
        if self._attach_to_running():
            return self.uri
        if importlib.util.find_spec("secantus") is None:
            raise EmbeddedDatabaseError(
                "MONGODB_URI is unset and the embedded database is not installed: "
                "pip install 'datadiver-graph[embedded]', or set MONGODB_URI"
            )
        self.data_path.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "secantus",
                    "--host",
                    self.host,
                    "--port",
                    str(self.port),
                    "--storage-path",
                    str(self.data_path),
                    "--log-level",
                    "WARNING",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                # Its own process group: a Ctrl-C aimed at the app must not kill the
                # database before the app has closed its connections.
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self._wait_until_ready(timeout)
        self._write_uri_file(self._process.pid)
        log.info("embedded SecantusDB at %s (data in %s)", self.uri, self.data_path)
        return self.uri

    def _wait_until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        client: MongoClient[dict[str, object]] = MongoClient(
            self.uri, serverSelectionTimeoutMS=250, connectTimeoutMS=250
        )
        try:
            while True:
                assert self._process is not None
                if self._process.poll() is not None:
                    raise EmbeddedDatabaseError(
                        f"embedded SecantusDB exited with code {self._process.returncode}; "
                        f"see {self.log_path}: {self._log_tail()}"
                    )
                try:
                    client.admin.command("ping")
                    return
                except PyMongoError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise EmbeddedDatabaseError(
                            f"embedded SecantusDB did not answer ping within {timeout:.0f} s; "
                            f"see {self.log_path}"
                        ) from None
                    time.sleep(0.05)
        finally:
            client.close()

    def _log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM lets WiredTiger close cleanly; SIGKILL only if it does not within `timeout`."""
        process, self._process = self._process, None
        adopted, self._adopted = self._adopted, None
        self._attached = False
        if adopted is not None:
            self.uri_file.unlink(missing_ok=True)
            _terminate(adopted, timeout)
            return
        if process is None or process.poll() is not None:
            return
        self.uri_file.unlink(missing_ok=True)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("embedded SecantusDB did not stop in %.0f s; killing it", timeout)
            process.kill()
            process.wait()

    def kill(self) -> None:
        """Stop abruptly, as a crash would (fault tests)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def __enter__(self) -> EmbeddedMongo:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): kill(0) is all we know
    return stat.rpartition(")")[2].split()[0] != "Z"


def _terminate(pid: int, timeout: float) -> None:
    """Stop a server that is not our child: SIGTERM, then SIGKILL after `timeout`."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            log.warning("embedded SecantusDB did not stop in %.0f s; killing it", timeout)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            return
        time.sleep(0.05)
