"""A minimal HTTP/1.1 keep-alive load generator.

Each connection sends one request, reads the whole response, and sends the next (closed
loop at fixed concurrency). It speaks raw HTTP over asyncio streams instead of httpx: on a
2-core machine the load generator shares the CPU with the server and the database, and
httpx costs several times more CPU per request than the request it measures.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

MakeRequest = Callable[[], bytes]
Check = Callable[[int, bytes], str | None]  # (status, body) -> error text or None


def build_request(
    method: str, path: str, port: int, headers: dict[str, str], body: bytes = b""
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"host: 127.0.0.1:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body or method == "POST":
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def request(self, data: bytes) -> tuple[int, bytes]:
        self.writer.write(data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        at = lower.find(b"content-length:")
        if at < 0:
            raise RuntimeError(f"response without content-length: {head[:200]!r}")
        end = lower.find(b"\r\n", at)
        length = int(lower[at + 15 : end])
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    def close(self) -> None:
        self.writer.close()


@dataclass
class LoadResult:
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    first_error: str | None = None

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


async def run_load(
    port: int,
    make_request: MakeRequest,
    *,
    concurrency: int,
    seconds: float,
    check: Check | None = None,
    on_start: Callable[[], None] | None = None,
    rate: float | None = None,
) -> LoadResult:
    """`concurrency` keep-alive connections, each in a closed loop for `seconds`.

    With `rate`, requests are paced to that many per second overall (the connections take
    turns at the scheduled times; one falls behind only when all are busy), so two routes
    can be compared at the same load rather than each at its own maximum.

    `on_start` runs once every connection is open, just before the first request, so a CPU
    meter started there covers exactly the measured requests.
    """
    connections = [await Connection.open(port) for _ in range(concurrency)]
    result = LoadResult()
    deadline = 0.0

    scheduled = 0

    async def loop(connection: Connection) -> None:
        nonlocal scheduled
        while time.perf_counter() < deadline:
            if rate is not None:
                due = started + scheduled / rate
                scheduled += 1
                wait = due - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
                if time.perf_counter() >= deadline:
                    break
            data = make_request()
            began = time.perf_counter()
            status, body = await connection.request(data)
            result.latencies.append(time.perf_counter() - began)
            result.requests += 1
            problem = check(status, body) if check else (None if status == 200 else str(status))
            if problem is not None:
                result.errors += 1
                if result.first_error is None:
                    result.first_error = f"{status}: {problem} {body[:300]!r}"

    if on_start is not None:
        on_start()
    started = time.perf_counter()
    deadline = started + seconds
    try:
        await asyncio.gather(*(loop(connection) for connection in connections))
    finally:
        result.seconds = time.perf_counter() - started
        for connection in connections:
            connection.close()
    return result
