"""A/B measurement shared by bench/modes.py and bench/gains.py: the same load against
several servers that run side by side, one variant each.

Servers that measure CPU per request run at the same time and take turns round by round
(the order rotates each round), all paced to one rate, so machine drift and the load
average fall on every variant alike and no variant is credited for running at a lower
rate. Memory per subscription is measured one server after another (RSS does not drift
with load the way CPU time does).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench.harness import (
    SERVICE_KEY,
    CpuMeter,
    Stack,
    percentile,
    rss_kib,
    running_stack,
    say,
)
from bench.http_bench import QUERY, clerk_user, create_user, dev_token, signed_webhook
from bench.loadgen import LoadResult, build_request, run_load

PACE_SHARE = 0.8  # of the slowest variant's own rate at fixed concurrency
HTTP_CONCURRENCY = 32
WEBHOOK_CONCURRENCY = 16
WEBHOOK_USERS = 200
HTTP_USER = "user_bench_ab"


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


@dataclass
class Series:
    """One variant under one load: a server, how to make its next request, and what counts."""

    label: str
    stack: Stack
    make_request: Callable[[], bytes]
    check: Callable[[int, bytes], str | None]
    concurrency: int
    loads: list[LoadResult] = field(default_factory=list)
    cpu: float = 0.0
    top_rate: float = 0.0

    @property
    def requests(self) -> int:
        return sum(load.requests for load in self.loads)

    @property
    def cpu_us(self) -> float:
        return 1e6 * self.cpu / max(self.requests, 1)

    @property
    def p99_ms(self) -> float:
        return 1000 * percentile([lat for load in self.loads for lat in load.latencies], 0.99)


async def _one(series: Series, seconds: float, rate: float | None) -> tuple[LoadResult, float]:
    meter = CpuMeter({"server": series.stack.server_pid})
    load = await run_load(
        series.stack.port,
        series.make_request,
        concurrency=series.concurrency,
        seconds=seconds,
        check=series.check,
        on_start=meter.start,
        rate=rate,
    )
    used = meter.stop()["server"]
    if load.errors:
        raise RuntimeError(f"{series.label}: {load.errors} failed; first: {load.first_error}")
    return load, used


def interleave(all_series: list[Series], rounds: int, seconds: float, warmup: float) -> float:
    """Warm every series up at full speed (its top rate), then `rounds` paced turns each."""

    async def measure() -> float:
        for series in all_series:  # the first seconds of a fresh server are slower
            await _one(series, warmup, None)
        for series in all_series:
            load, _ = await _one(series, warmup, None)
            series.top_rate = load.rate
            say(f"    top rate {series.label:32s} {load.rate:6.0f}/s")
        rate = PACE_SHARE * min(series.top_rate for series in all_series)
        for round_no in range(rounds):
            shift = round_no % len(all_series)
            for series in all_series[shift:] + all_series[:shift]:
                load, used = await _one(series, seconds, rate)
                series.loads.append(load)
                series.cpu += used
                say(
                    f"    round {round_no + 1} {series.label:32s} {load.rate:6.0f}/s "
                    f"server {1e6 * used / max(load.requests, 1):6.0f} us"
                )
        return rate

    return asyncio.run(measure())


# -- the loads -------------------------------------------------------------------------------


def _graphql_ok(status: int, body: bytes) -> str | None:
    if status != 200:
        return "status"
    return None if b'"externalId"' in body else "no user in the answer"


def graphql_series(label: str, stack: Stack, path: str = "/graphql") -> Series:
    """getCurrentUser (or the bare route answering the same) with a signed dev token."""
    create_user(stack, HTTP_USER)
    token = dev_token(stack, HTTP_USER)
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    body = orjson.dumps({"query": QUERY, "operationName": "CurrentUser"})
    request = build_request("POST", path, stack.port, headers, body)
    return Series(label, stack, lambda: request, _graphql_ok, HTTP_CONCURRENCY)


def _webhook_ok(status: int, body: bytes) -> str | None:
    return None if status == 200 and b'"applied"' in body else "not applied"


_event_numbers = itertools.count(1)


def webhook_series(label: str, stack: Stack) -> Series:
    """Svix-signed Clerk user.updated events, each newer than the last for its user."""
    for user in range(WEBHOOK_USERS):
        create_user(stack, f"user_bench_wh_{user}")

    def next_event() -> bytes:
        n = next(_event_numbers)
        payload = clerk_user(
            f"user_bench_wh_{n % WEBHOOK_USERS}", 1_754_000_000_001 + n, "user.updated"
        )
        body, headers = signed_webhook(payload, f"msg_bench_ab_{n}")
        return build_request("POST", "/webhooks/clerk", stack.port, headers, body)

    return Series(label, stack, next_event, _webhook_ok, WEBHOOK_CONCURRENCY)


@contextlib.contextmanager
def stacks(
    name: str, variants: dict[str, tuple[dict[str, str], str | None]], redis: bool = False
) -> Iterator[dict[str, Stack]]:
    """One running stack per variant: label -> (extra environment, fast paths taken out)."""
    with contextlib.ExitStack() as exits:
        yield {
            label: exits.enter_context(
                running_stack(f"{name}-{index}", redis=redis, extra_env=env, variant=variant)
            )
            for index, (label, (env, variant)) in enumerate(variants.items())
        }


# -- subscriptions ---------------------------------------------------------------------------


def subscription_levels(stack: Stack, levels: list[int], seconds: float) -> list[dict[str, Any]]:
    """subs_bench's measure on one server: RSS per idle subscription, then delivery, per level."""
    from bench import subs_bench

    assert stack.redis is not None
    rows = []
    with subs_bench.subscriber_pool(stack.ws_url, subs_bench.WORKERS) as pool:
        subs_bench._add_subscribers(pool, 0, 20)
        time.sleep(1.0)
        base_rss = rss_kib(stack.server_pid)
        connected = 20
        publisher = subs_bench.Publisher(stack.redis.url)
        loop = asyncio.new_event_loop()
        try:
            for level in levels:
                row = subs_bench._level(stack, pool, publisher, loop, connected, level, seconds)
                connected = level + 20
                row["level"] = level
                row["rss_per_sub"] = (row["rss"] - base_rss) / level
                rows.append(row)
                say(
                    f"    {level:6d} subs: {row['rss_per_sub']:.1f} KiB/sub, delivered "
                    f"{row['received']}/{row['sent']}, p99 {row['p99'] * 1000:.1f} ms"
                )
                stack.check_alive()
        finally:
            loop.run_until_complete(publisher.close())
            loop.close()
    return rows


# -- one long subscription on the legacy graphql-ws protocol ---------------------------------

LEGACY_QUERY = (
    "subscription Watch($id: String!) { session(sessionId: $id) "
    "{ sessionId version lastActivity metadata } }"
)
# The same with a directive: execution.py leaves such a selection to graphql-core's own
# (memoised) field collection, the one executor.py's per-event reset is for.
LEGACY_DIRECTIVE_QUERY = (
    "subscription Watch($id: String!) { session(sessionId: $id) "
    "{ sessionId version lastActivity metadata @include(if: true) } }"
)


async def legacy_growth(
    stack: Stack, subscriptions: int, rate: float, seconds: float, query: str = LEGACY_QUERY
) -> dict[str, float]:
    """RSS growth of the server while `subscriptions` long-lived legacy graphql-ws
    subscriptions each receive many events: graphql-core's per-event executor copies run
    on this protocol with the fast paths on (graphql-transport-ws has its own path)."""
    from websockets.asyncio.client import connect

    from bench.subs_bench import Publisher, session_id

    assert stack.redis is not None
    received = 0
    sockets = []
    readers = []

    async def read(ws: Any) -> None:
        nonlocal received
        async for frame in ws:
            message = orjson.loads(frame)
            if message.get("type") == "data":
                if (message["payload"].get("data") or {}).get("session") is not None:
                    received += 1
            elif message.get("type") in ("error", "complete", "connection_error"):
                raise RuntimeError(f"legacy subscription: {message}")

    for index in range(subscriptions):
        ws = await connect(
            stack.ws_url,
            subprotocols=["graphql-ws"],
            compression=None,
            ping_interval=None,  # type: ignore[list-item]
        )
        await ws.send(
            orjson.dumps(
                {"type": "connection_init", "payload": {"serviceKey": SERVICE_KEY}}
            ).decode()
        )
        while orjson.loads(await ws.recv()).get("type") != "connection_ack":
            pass
        payload = {"query": query, "variables": {"id": session_id(index)}}
        await ws.send(orjson.dumps({"id": "1", "type": "start", "payload": payload}).decode())
        sockets.append(ws)
        readers.append(asyncio.create_task(read(ws)))
    publisher = Publisher(stack.redis.url)
    try:
        indices = list(range(subscriptions))
        await publisher.run(indices, rate, 1.0)  # warm-up: the first events build caches
        await _until(lambda: received >= sum(publisher.expected.values()), 10)
        before = rss_kib(stack.server_pid)
        sent_before = sum(publisher.expected.values())
        await publisher.run(indices, rate, seconds)
        sent = sum(publisher.expected.values()) - sent_before
        await _until(lambda: received >= sent + sent_before, 20)
        await asyncio.sleep(1.0)
        after = rss_kib(stack.server_pid)
    finally:
        await publisher.close()
        for ws in sockets:
            with contextlib.suppress(Exception):
                await ws.close()
        for reader in readers:
            reader.cancel()
    return {
        "events": sent,
        "received": received - sent_before,
        "growth_kib": after - before,
        "per_event_b": 1024 * (after - before) / max(sent, 1),
    }


async def _until(condition: Callable[[], bool], within: float) -> None:
    for _ in range(int(within * 10)):  # polled: the counts live in the readers' closures
        if condition():
            return
        await asyncio.sleep(0.1)
