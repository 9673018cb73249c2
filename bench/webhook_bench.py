"""3. Webhook ingest: Svix-signed Clerk `user.updated` events at fixed concurrency.

Every event has its own svix-id and a newer Clerk `updated_at` than the last one for its
user, so each is verified, deduplicated, stored and published (answer "applied"), the full
path. The events are signed by the load generator as they are sent, with the development
secret the server uses when CLERK_WEBHOOK_SECRET is unset.
"""

from __future__ import annotations

import asyncio
import itertools

from bench.harness import CpuMeter, Result, Target, percentile, running_stack, say
from bench.http_bench import clerk_user, create_user, signed_webhook
from bench.loadgen import build_request, run_load
from bench.profiling import Recorder

CONCURRENCY = 16
USERS = 200
TARGET_CPU_US = 300.0


def _check(status: int, body: bytes) -> str | None:
    if status != 200 or b'"applied"' not in body:
        return "not applied"
    return None


def run(quick: bool, profile: bool) -> Result:
    seconds, warmup = (8.0, 2.0) if quick else (15.0, 3.0)
    result = Result("Webhook ingest: signed Clerk user.updated")
    counter = itertools.count(1)
    with running_stack("webhooks") as stack:
        for user in range(USERS):
            create_user(stack, f"user_bench_wh_{user}")

        def next_event() -> bytes:
            n = next(counter)
            user_id = f"user_bench_wh_{n % USERS}"
            payload = clerk_user(user_id, 1_754_000_000_001 + n, "user.updated")
            body, headers = signed_webhook(payload, f"msg_bench_{n}")
            return build_request("POST", "/webhooks/clerk", stack.port, headers, body)

        async def measure(seconds: float, name: str | None = None):  # type: ignore[no-untyped-def]
            meter = CpuMeter(stack.pids())
            recorder: list[Recorder] = []

            def start() -> None:
                meter.start()
                if name:
                    recorder.append(Recorder(stack.server_pid, name, seconds))

            load = await run_load(
                stack.port,
                next_event,
                concurrency=CONCURRENCY,
                seconds=seconds,
                check=_check,
                on_start=start,
            )
            used = meter.stop()
            if recorder:
                say(f"    profile: {recorder[0].finish()}")
            if load.errors:
                raise RuntimeError(f"{load.errors} events failed; first: {load.first_error}")
            return load, used

        say(f"  warm-up ({warmup:.0f} s)")
        asyncio.run(measure(warmup))
        load, used = asyncio.run(measure(seconds))
        if profile:
            asyncio.run(measure(8.0, "webhooks"))
    per_event = 1e6 * used["server"] / load.requests
    say(f"  {load.rate:.0f} events/s, server {per_event:.0f} us/event")
    result.markdown.append(
        f"{CONCURRENCY} concurrent senders for {seconds:.0f} s after {warmup:.0f} s warm-up, "
        f"over {USERS} users; each event verified (svix), deduplicated, stored, published."
    )
    result.markdown.append("")
    result.table(
        ["events/s", "p50 ms", "p99 ms", "server CPU us/event", "DB CPU us/event", "events"],
        [
            [
                f"{load.rate:.0f}",
                f"{percentile(load.latencies, 0.5) * 1000:.1f}",
                f"{percentile(load.latencies, 0.99) * 1000:.1f}",
                f"{per_event:.0f}",
                f"{1e6 * used['db'] / load.requests:.0f}",
                load.requests,
            ]
        ],
    )
    result.targets.append(
        Target(
            "webhook server CPU per verified event",
            f"<= {TARGET_CPU_US:.0f} us",
            f"{per_event:.0f} us",
            per_event <= TARGET_CPU_US,
        )
    )
    return result
