"""1. HTTP query path: `getCurrentUser` through GraphQL against the bare Starlette baseline.

Both run in the same server process, with the same signed JWT, the same database read and
the same JSON answer; the baseline is the bench-only `/_bench/current-user` route (see
app.py, DATADIVER_BENCH_ROUTES). Rounds alternate baseline and GraphQL so drift (CPU
frequency, the database warming up) falls on both alike.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
import orjson
from svix.webhooks import Webhook

from bench.harness import (
    CpuMeter,
    Result,
    Stack,
    Target,
    percentile,
    running_stack,
    say,
)
from bench.loadgen import LoadResult, build_request, run_load
from bench.profiling import Recorder
from datadiver_graph.api.webhooks import DEV_WEBHOOK_SECRET
from datadiver_graph.config import Settings
from datadiver_graph.dev.keys import mint_dev_token

USER_ID = "user_bench_http"
CONCURRENCY = 32
QUERY = (
    "query CurrentUser { getCurrentUser { id externalId name email imageUrl preferences "
    "createdAt updatedAt version } }"
)
TARGET_RATIO = 1.5
EQUAL_LOAD_SHARE = 0.8  # of the GraphQL route's own rate at fixed concurrency
TARGET_LAYER_US = 150.0


def signed_webhook(payload: dict[str, object], msg_id: str) -> tuple[bytes, dict[str, str]]:
    body = orjson.dumps(payload)
    now = datetime.now(UTC)
    signature = Webhook(DEV_WEBHOOK_SECRET).sign(msg_id, now, body.decode())
    headers = {
        "content-type": "application/json",
        "svix-id": msg_id,
        "svix-timestamp": str(int(now.timestamp())),
        "svix-signature": signature,
    }
    return body, headers


def clerk_user(
    user_id: str, updated_at: int, event_type: str = "user.created"
) -> dict[str, object]:
    """A Clerk `user.created`/`user.updated` payload (the fields the service reads, and more)."""
    return {
        "type": event_type,
        "object": "event",
        "timestamp": updated_at,
        "data": {
            "id": user_id,
            "object": "user",
            "first_name": "Ada",
            "last_name": "Bench",
            "image_url": "https://img.clerk.com/bench",
            "primary_email_address_id": "idn_1",
            "email_addresses": [
                {"id": "idn_1", "email_address": f"{user_id}@example.com", "object": "email"}
            ],
            "created_at": 1_754_000_000_000,
            "updated_at": updated_at,
            "public_metadata": {},
            "private_metadata": {},
            "unsafe_metadata": {},
        },
    }


def create_user(stack: Stack, user_id: str) -> None:
    """The way Clerk would: a signed `user.created` webhook."""
    body, headers = signed_webhook(clerk_user(user_id, 1_754_000_000_001), f"msg_{user_id}")
    response = httpx.post(f"{stack.url}/webhooks/clerk", content=body, headers=headers)
    if response.status_code != 200:
        raise RuntimeError(f"creating {user_id}: {response.status_code} {response.text}")


def dev_token(stack: Stack, user_id: str) -> str:
    settings = Settings(DATA_DIR=str(stack.data_dir), DATADIVER_ENV="development")
    return mint_dev_token(settings, user_id, ttl_seconds=3600)


def _check_same_answer(stack: Stack, token: str) -> None:
    auth = {"authorization": f"Bearer {token}"}
    graphql = httpx.post(f"{stack.url}/graphql", json={"query": QUERY}, headers=auth).json()
    bare = httpx.post(f"{stack.url}/_bench/current-user", headers=auth).json()
    if graphql != bare or graphql["data"]["getCurrentUser"] is None:
        raise RuntimeError(f"the two routes disagree:\n graphql {graphql}\n bare    {bare}")


def _check(status: int, body: bytes) -> str | None:
    if status != 200:
        return "status"
    if b'"externalId"' not in body:
        return "no user in the answer"
    return None


async def _measure(
    stack: Stack,
    request: bytes,
    seconds: float,
    profile: str | None = None,
    rate: float | None = None,
) -> tuple[LoadResult, dict[str, float]]:
    meter = CpuMeter(stack.pids())
    recorder: list[Recorder] = []

    def start() -> None:
        meter.start()
        if profile:
            recorder.append(Recorder(stack.server_pid, profile, seconds))

    result = await run_load(
        stack.port,
        lambda: request,
        concurrency=CONCURRENCY,
        seconds=seconds,
        check=_check,
        on_start=start,
        rate=rate,
    )
    used = meter.stop()
    if recorder:
        say(f"    profile: {recorder[0].finish()}")
    if result.errors:
        raise RuntimeError(f"{result.errors} failed requests; first: {result.first_error}")
    return result, used


def run(quick: bool, profile: bool) -> Result:
    rounds, seconds, warmup = (1, 5.0, 2.0) if quick else (3, 6.0, 3.0)
    result = Result("HTTP query path: getCurrentUser vs bare Starlette")
    with running_stack("http") as stack:
        create_user(stack, USER_ID)
        token = dev_token(stack, USER_ID)
        _check_same_answer(stack, token)
        headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
        body = orjson.dumps({"query": QUERY, "operationName": "CurrentUser"})
        requests = {
            "bare": build_request("POST", "/_bench/current-user", stack.port, headers, body),
            "graphql": build_request("POST", "/graphql", stack.port, headers, body),
        }
        totals: dict[str, list[tuple[LoadResult, dict[str, float]]]] = {
            "bare": [],
            "graphql": [],
        }
        paced: dict[str, tuple[LoadResult, dict[str, float]]] = {}
        rates: list[float] = []

        async def measure_all() -> None:
            for name, request in requests.items():
                say(f"  warm-up {name} ({warmup:.0f} s)")
                await _measure(stack, request, warmup)
            for round_no in range(rounds):
                for name, request in requests.items():
                    measured = await _measure(stack, request, seconds)
                    totals[name].append(measured)
                    load, used = measured
                    say(
                        f"  round {round_no + 1} {name:8s} {load.rate:7.0f} req/s  "
                        f"server {1e6 * used['server'] / load.requests:6.0f} us/req"
                    )
            # At fixed concurrency each route runs at its own maximum rate, and the kernel's
            # cost of waking an idle peer (database, client) per request grows as the rate
            # falls; the same requests paced to one rate compare the code alone.
            rate = EQUAL_LOAD_SHARE * min(load.rate for load, _ in totals["graphql"])
            rates.append(rate)
            for name, request in requests.items():
                paced[name] = await _measure(stack, request, seconds, rate=rate)
                load, used = paced[name]
                say(
                    f"  paced   {name:8s} {load.rate:7.0f} req/s  "
                    f"server {1e6 * used['server'] / load.requests:6.0f} us/req"
                )
            if profile:
                for name, request in requests.items():
                    await _measure(stack, request, 8.0, profile=f"http-{name}")

        asyncio.run(measure_all())
        paced_rate = rates[0]

    rows = []
    cpu_per_request: dict[str, float] = {}
    user_per_request: dict[str, float] = {}
    for name, measured in totals.items():
        count = sum(load.requests for load, _ in measured)
        elapsed = sum(load.seconds for load, _ in measured)
        latencies = [lat for load, _ in measured for lat in load.latencies]
        server = sum(used["server"] for _, used in measured)
        server_user = sum(used["server user"] for _, used in measured)
        database = sum(used["db"] for _, used in measured)
        cpu_per_request[name] = 1e6 * server / count
        user_per_request[name] = 1e6 * server_user / count
        rows.append(
            [
                "`getCurrentUser` (GraphQL)" if name == "graphql" else "bare Starlette route",
                f"{count / elapsed:.0f}",
                f"{percentile(latencies, 0.5) * 1000:.1f}",
                f"{percentile(latencies, 0.99) * 1000:.1f}",
                f"{cpu_per_request[name]:.0f}",
                f"{user_per_request[name]:.0f}",
                f"{1e6 * database / count:.0f}",
                count,
            ]
        )
    ratio = cpu_per_request["graphql"] / cpu_per_request["bare"]
    layer = cpu_per_request["graphql"] - cpu_per_request["bare"]
    result.markdown.append(
        f"{CONCURRENCY} keep-alive connections, {rounds} alternating round(s) of {seconds:.0f} s "
        f"per route after {warmup:.0f} s warm-up; server CPU = utime+stime of the app process."
    )
    result.markdown.append("")
    result.table(
        [
            "route",
            "req/s",
            "p50 ms",
            "p99 ms",
            "server CPU us/req",
            "of which user",
            "DB CPU us/req",
            "requests",
        ],
        rows,
    )
    user_layer = user_per_request["graphql"] - user_per_request["bare"]
    result.markdown.append(
        f"Ratio GraphQL/bare server CPU: **{ratio:.2f}x**; GraphQL layer cost "
        f"(CPU/req GraphQL - bare): **{layer:.0f} us** ({user_layer:.0f} us of it user time)."
    )
    result.markdown.append("")
    equal = {name: 1e6 * used["server"] / load.requests for name, (load, used) in paced.items()}
    equal_ratio = equal["graphql"] / equal["bare"]
    equal_layer = equal["graphql"] - equal["bare"]
    achieved = ", ".join(f"{name} {load.rate:.0f}" for name, (load, _) in paced.items())
    result.markdown.append(
        f"Both routes paced to {paced_rate:.0f} req/s ({EQUAL_LOAD_SHARE:.0%} of the GraphQL "
        f"route's rate above; achieved: {achieved}), {seconds:.0f} s each: server CPU "
        f"{equal['bare']:.0f} us/req bare, {equal['graphql']:.0f} us/req GraphQL; ratio "
        f"**{equal_ratio:.2f}x**, layer **{equal_layer:.0f} us**."
    )
    result.markdown.append("")
    result.targets += [
        Target(
            "HTTP CPU ratio GraphQL/bare",
            f"<= {TARGET_RATIO}x",
            f"{ratio:.2f}x",
            ratio <= TARGET_RATIO,
        ),
        Target(
            "GraphQL layer cost per warm request",
            f"<= {TARGET_LAYER_US:.0f} us",
            f"{layer:.0f} us",
            layer <= TARGET_LAYER_US,
        ),
    ]
    return result
