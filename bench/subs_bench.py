"""2. Subscriptions: N graphql-transport-ws subscribers on one server, events at a fixed rate.

Each subscriber holds one WebSocket with one `session(sessionId)` subscription on a channel
of its own (service key in connectionParams, so each subscription listens on exactly one
channel). Events are published straight into Redis, the way another server process's
mutation would reach this one (BROADCAST_URL=redis://...), in the Event JSON format of
domain/events.py; each carries its send time in `metadata.t`, which the subscription returns, so
the client computes publish->delivery latency (wall clock, same machine).

The subscribers live in helper processes (multiprocessing, spawn): one asyncio process
cannot open and hold 10,000 WebSockets on this machine fast enough, and the load must not
run in the server's process. Levels are reached by adding subscribers to the same server
(1,000 -> 5,000 -> 10,000); RSS per subscriber is (RSS with N idle subscribers - RSS
before the first) / N.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import orjson
from redis import asyncio as aioredis

from bench.harness import (
    SERVICE_KEY,
    CpuMeter,
    Result,
    Stack,
    Target,
    percentile,
    rss_kib,
    running_stack,
    say,
)
from bench.profiling import Recorder

QUERY = (
    "subscription Watch($id: String!) { session(sessionId: $id) "
    "{ sessionId version lastActivity metadata } }"
)
WORKERS = 2
HANDSHAKES_IN_FLIGHT = 64
RATE = 1000  # events per second
TARGET_SUBSCRIBERS = 10_000
TARGET_P99_MS = 100.0
TARGET_RSS_KIB = 20.0
DRAIN_WITHIN = 10.0


def session_id(index: int) -> str:
    return f"bench-{index}"


# -- the subscriber processes ----------------------------------------------------------------


class _Worker:
    def __init__(self, url: str) -> None:
        self.url = url
        self.sockets: dict[int, Any] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.counts: dict[int, int] = {}
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.closed = 0

    async def open_one(self, index: int, limit: asyncio.Semaphore) -> None:
        from websockets.asyncio.client import connect

        async with limit:
            ws = await connect(
                self.url,
                subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
                compression=None,
                ping_interval=None,
                open_timeout=120,
                close_timeout=1,
                max_queue=None,
            )
            await ws.send(
                orjson.dumps(
                    {"type": "connection_init", "payload": {"serviceKey": SERVICE_KEY}}
                ).decode()
            )
            ack = orjson.loads(await ws.recv())
            if ack.get("type") != "connection_ack":
                raise RuntimeError(f"no connection_ack: {ack}")
            payload = {"query": QUERY, "variables": {"id": session_id(index)}}
            await ws.send(
                orjson.dumps({"id": "1", "type": "subscribe", "payload": payload}).decode()
            )
            first = orjson.loads(await ws.recv())
            if first.get("type") != "next" or first["payload"].get("errors"):
                raise RuntimeError(f"no snapshot: {first}")
        self.sockets[index] = ws
        self.counts[index] = 0
        self.tasks.append(asyncio.create_task(self.read(index, ws)))

    async def read(self, index: int, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for frame in ws:
                now = time.time()
                message = orjson.loads(frame)
                kind = message.get("type")
                if kind == "next":
                    session = (message["payload"].get("data") or {}).get("session")
                    if session is None:
                        continue
                    self.latencies.append(now - session["metadata"]["t"])
                    self.counts[index] += 1
                elif kind == "ping":
                    await ws.send('{"type":"pong"}')
                elif kind in ("error", "complete"):
                    self.errors.append(f"{index}: {message}")
        except ConnectionClosed as exc:
            self.closed += 1
            self.errors.append(f"{index}: closed {exc}")

    async def connect(self, first: int, count: int) -> dict[str, Any]:
        limit = asyncio.Semaphore(HANDSHAKES_IN_FLIGHT)
        began = time.perf_counter()
        outcomes = await asyncio.gather(
            *(self.open_one(index, limit) for index in range(first, first + count)),
            return_exceptions=True,
        )
        failed = [repr(outcome) for outcome in outcomes if isinstance(outcome, BaseException)]
        return {
            "ok": count - len(failed),
            "failed": failed[:3],
            "seconds": time.perf_counter() - began,
        }

    async def serve(self, pipe: Connection) -> None:
        loop = asyncio.get_running_loop()
        while True:
            command, argument = await loop.run_in_executor(None, pipe.recv)
            if command == "connect":
                pipe.send(await self.connect(*argument))
            elif command == "collect":
                pipe.send(
                    {
                        "counts": dict(self.counts),
                        "latencies": self.latencies,
                        "errors": self.errors[:5],
                        "error_count": len(self.errors),
                        "closed": self.closed,
                    }
                )
                self.latencies = []
            elif command == "received":
                pipe.send(sum(self.counts.values()))
            elif command == "close":
                for ws in self.sockets.values():
                    with contextlib.suppress(Exception):
                        await ws.close()
                pipe.send("closed")
                return


def worker_main(pipe: Connection, url: str) -> None:
    from bench.harness import raise_open_files

    raise_open_files()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(_Worker(url).serve(pipe))


@dataclass
class _Pool:
    pipes: list[Connection]
    processes: list[multiprocessing.process.BaseProcess]

    def ask(self, command: str, arguments: list[Any] | None = None) -> list[Any]:
        for index, pipe in enumerate(self.pipes):
            pipe.send((command, arguments[index] if arguments else None))
        return [pipe.recv() for pipe in self.pipes]


@contextlib.contextmanager
def subscriber_pool(url: str, workers: int) -> Iterator[_Pool]:
    context = multiprocessing.get_context("spawn")
    pipes, processes = [], []
    for _ in range(workers):
        ours, theirs = context.Pipe()
        process = context.Process(target=worker_main, args=(theirs, url), daemon=True)
        process.start()
        pipes.append(ours)
        processes.append(process)
    pool = _Pool(pipes, processes)
    try:
        yield pool
    finally:
        with contextlib.suppress(Exception):
            pool.ask("close")
        for process in processes:
            process.join(10)
            if process.is_alive():
                process.kill()


# -- publishing ------------------------------------------------------------------------------


class Publisher:
    """PUBLISH into Redis at a fixed rate, round-robin over the subscribers' channels."""

    def __init__(self, redis_url: str) -> None:
        self.redis = aioredis.Redis.from_url(redis_url)
        self.versions: dict[int, int] = {}
        self.expected: dict[int, int] = {}
        self._next = 0

    def _message(self, index: int) -> tuple[str, bytes]:
        version = self.versions.get(index, 1) + 1
        self.versions[index] = version
        self.expected[index] = self.expected.get(index, 0) + 1
        now_ms = int(time.time() * 1000)
        record = {
            "_id": f"bench{index:020d}",
            "sessionId": session_id(index),
            "userId": f"user_bench_{index}",
            "active": True,
            "metadata": {"t": time.time()},
            "createdAt": now_ms,
            "lastActivity": now_ms,
            "updatedAt": now_ms,
            "endedAt": None,
            "version": version,
        }
        return f"session:{session_id(index)}", orjson.dumps(
            {"kind": "session.updated", "record": record}
        )

    async def run(self, indices: list[int], rate: float, seconds: float) -> int:
        sent = 0
        began = time.perf_counter()
        while True:
            elapsed = time.perf_counter() - began
            if elapsed >= seconds:
                break
            due = int(elapsed * rate) + 1 - sent
            if due > 0:
                pipe = self.redis.pipeline(transaction=False)
                for _ in range(due):
                    channel, message = self._message(indices[self._next % len(indices)])
                    self._next += 1
                    pipe.publish(channel, message)
                await pipe.execute()
                sent += due
            await asyncio.sleep(0.005)
        return sent

    async def close(self) -> None:
        await self.redis.aclose()


# -- the benchmark ---------------------------------------------------------------------------


def _wait_received(pool: _Pool, expected: int, within: float) -> int:
    deadline = time.monotonic() + within
    while True:
        received = sum(pool.ask("received"))
        if received >= expected or time.monotonic() > deadline:
            return received
        time.sleep(0.2)


def _add_subscribers(pool: _Pool, first: int, count: int) -> float:
    share = [count // WORKERS + (1 if w < count % WORKERS else 0) for w in range(WORKERS)]
    starts, at = [], first
    for part in share:
        starts.append((at, part))
        at += part
    began = time.perf_counter()
    replies = pool.ask("connect", starts)
    seconds = time.perf_counter() - began
    failed = [failure for reply in replies for failure in reply["failed"]]
    if failed:
        raise RuntimeError(f"{count - sum(r['ok'] for r in replies)} subscribers failed: {failed}")
    return seconds


def run(quick: bool, profile: bool) -> Result:
    levels = [1000] if quick else [1000, 5000, 10_000]
    seconds = 5.0 if quick else 8.0
    result = Result("Subscriptions: graphql-transport-ws fan-out on one server process")
    rows: list[list[object]] = []
    target_row: dict[str, Any] | None = None
    worst_p99 = (0.0, 0)  # (seconds, level): a pause at any level counts against the target
    extra = {"SERVICE_API_KEYS": SERVICE_KEY}
    with running_stack("subs", redis=True, extra_env=extra) as stack:
        assert stack.redis is not None
        with subscriber_pool(stack.ws_url, WORKERS) as pool:
            # Warm up (imports, caches) with a few subscribers, then take the baseline.
            _add_subscribers(pool, 0, 20)
            time.sleep(1.0)
            base_rss = rss_kib(stack.server_pid)
            base_tasks = int(stack.stats()["tasks"])  # type: ignore[call-overload]
            connected = 20
            publisher = Publisher(stack.redis.url)
            loop = asyncio.new_event_loop()
            try:
                for level in levels:
                    row = _level(stack, pool, publisher, loop, connected, level, seconds)
                    connected = level + 20
                    row["rss_per_sub"] = (row["rss"] - base_rss) / level
                    row["tasks_per_sub"] = (row["tasks"] - base_tasks) / level
                    rows.append(_row(level, row))
                    say(
                        f"  {level:6d} subs: connect {row['connect_rate']:.0f}/s, "
                        f"{row['rss_per_sub']:.1f} KiB/sub, delivered {row['received']}/"
                        f"{row['sent']}, p99 {row['p99'] * 1000:.1f} ms"
                    )
                    target_row = row
                    worst_p99 = max(worst_p99, (row["p99"], level))
                    stack.check_alive()
                if profile:
                    assert target_row is not None
                    recorder = Recorder(stack.server_pid, "subs-delivery", seconds, native=True)
                    indices = list(range(20, connected))
                    loop.run_until_complete(publisher.run(indices, RATE, seconds))
                    say(f"    profile: {recorder.finish()}")
            finally:
                loop.run_until_complete(publisher.close())
                loop.close()
    result.markdown.append(
        f"One server process, Redis fan-out, {WORKERS} subscriber processes, one "
        f"`session(sessionId)` subscription per WebSocket on its own channel; {RATE} events/s "
        f"for {seconds:.0f} s per level, round-robin over the subscribers. Latency = client "
        "receive time - publish time (wall clock). RSS per subscriber = (server RSS with N idle "
        f"subscribers - RSS with 20) / N; baseline {base_rss / 1024:.0f} MiB."
    )
    result.markdown.append("")
    result.table(
        [
            "subscribers",
            "connect+subscribe /s",
            "server CPU us/subscribe",
            "RSS KiB/sub",
            "tasks/sub",
            "delivered/expected",
            "p50 ms",
            "p99 ms",
            "max ms",
            "server CPU us/event",
        ],
        rows,
    )
    assert target_row is not None
    level = levels[-1]
    lost = target_row["sent"] - target_row["received"]
    met = level >= TARGET_SUBSCRIBERS
    result.targets += [
        Target(
            f"subscriptions on one process (this run: {level})",
            f">= {TARGET_SUBSCRIBERS}",
            f"{level} held",
            met if not quick else None,
        ),
        Target(
            f"p99 delivery at {RATE} events/s (worst level)",
            f"<= {TARGET_P99_MS:.0f} ms",
            f"{worst_p99[0] * 1000:.1f} ms at {worst_p99[1]} subs",
            worst_p99[0] * 1000 <= TARGET_P99_MS,
        ),
        Target(
            f"events lost ({level} subs)",
            "0",
            f"{lost} of {target_row['sent']}",
            lost == 0 and target_row["per_sub_ok"],
        ),
        Target(
            f"RSS per idle subscription ({level} subs)",
            f"<= {TARGET_RSS_KIB:.0f} KiB",
            f"{target_row['rss_per_sub']:.1f} KiB",
            target_row["rss_per_sub"] <= TARGET_RSS_KIB,
        ),
    ]
    return result


def _level(
    stack: Stack,
    pool: _Pool,
    publisher: Publisher,
    loop: asyncio.AbstractEventLoop,
    connected: int,
    level: int,
    seconds: float,
) -> dict[str, Any]:
    # connected counts the 20 warm-up subscribers (indices 0..19); level ones are 20..
    first = connected
    count = level + 20 - connected
    meter = CpuMeter({"server": stack.server_pid})
    meter.start()
    connect_seconds = _add_subscribers(pool, first, count)
    subscribe_cpu = meter.stop()["server"]
    time.sleep(1.5)  # idle: let the server finish anything the connects left behind
    rss = rss_kib(stack.server_pid)
    tasks = int(stack.stats()["tasks"])  # type: ignore[call-overload]
    pool.ask("collect")  # drop anything received so far
    before = sum(pool.ask("received"))
    meter.start()
    sent = loop.run_until_complete(publisher.run(list(range(20, level + 20)), RATE, seconds))
    received = _wait_received(pool, before + sent, DRAIN_WITHIN) - before
    delivery_cpu = meter.stop()["server"]
    reports = pool.ask("collect")
    latencies = [lat for report in reports for lat in report["latencies"]]
    counts: dict[int, int] = {}
    for report in reports:
        counts.update(report["counts"])
    errors = sum(report["error_count"] for report in reports)
    # Per subscriber: every event published to it arrived exactly once (cumulative counts).
    wrong = sum(1 for i, n in publisher.expected.items() if counts.get(i, 0) != n)
    if errors:
        say(f"    subscriber errors: {[e for r in reports for e in r['errors']]}")
    return {
        "connect_rate": count / connect_seconds,
        "subscribe_cpu_us": 1e6 * subscribe_cpu / count,
        "rss": rss,
        "tasks": tasks,
        "sent": sent,
        "received": received,
        "per_sub_ok": errors == 0 and wrong == 0,
        "wrong_subs": wrong,
        "p50": percentile(latencies, 0.5),
        "p99": percentile(latencies, 0.99),
        "max": max(latencies) if latencies else float("nan"),
        "delivery_cpu_us": 1e6 * delivery_cpu / max(sent, 1),
    }


def _row(level: int, row: dict[str, Any]) -> list[object]:
    return [
        f"{level:,}",
        f"{row['connect_rate']:.0f}",
        f"{row['subscribe_cpu_us']:.0f}",
        f"{row['rss_per_sub']:.1f}",
        f"{row['tasks_per_sub']:.1f}",
        f"{row['received']}/{row['sent']}"
        + ("" if row["per_sub_ok"] else f" ({row['wrong_subs']} subscribers off)"),
        f"{row['p50'] * 1000:.1f}",
        f"{row['p99'] * 1000:.1f}",
        f"{row['max'] * 1000:.1f}",
        f"{row['delivery_cpu_us']:.0f}",
    ]
