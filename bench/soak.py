"""4. Soak (issue 8): mixed load for a long time; do memory and task counts stay flat?

Load, all at once: queries (getCurrentUser, getUserSessions), mutations (touchSession,
updateSession), signed Clerk webhooks, long-lived subscribers (one userSessions
subscription per user, held all run), and churn (connect, subscribe, take the snapshot,
unsubscribe, subscribe again, disconnect). Server RSS and the event loop's task count
(bench-only GET /_bench/stats) are sampled when the load is paused after a warm-up
("start") and when it is paused again at the end ("end"), with the long-lived subscribers
held both times, so the two samples see the same steady state; they should agree within
10%. Samples taken every few seconds under load are reported as min/max.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

import orjson
from websockets.asyncio.client import connect

from bench.harness import Result, Stack, Target, rss_kib, running_stack, say
from bench.http_bench import clerk_user, create_user, dev_token, signed_webhook
from bench.loadgen import Connection, build_request

USERS = 20
HTTP_WORKERS = 4
CHURN_WORKERS = 2
SAMPLE_EVERY = 5.0
FLAT = 0.10

Q_ME = "query Me { getCurrentUser { externalId name version } }"
Q_SESSIONS = "query S { getUserSessions(first: 5) { nodes { sessionId lastActivity } } }"
M_CREATE = "mutation C($id: String!) { createSession(sessionId: $id) { sessionId } }"
M_TOUCH = "mutation T($id: String!) { touchSession(sessionId: $id) { version } }"
M_UPDATE = (
    "mutation U($id: String!, $m: JSON!) { updateSession(sessionId: $id, metadata: $m) "
    "{ version } }"
)
S_SESSIONS = "subscription { userSessions { sessionId version } }"
S_SESSION = "subscription W($id: String!) { session(sessionId: $id) { version } }"
S_ME = "subscription { currentUser { externalId version } }"


class Soak:
    def __init__(self, stack: Stack, tokens: dict[str, str]) -> None:
        self.stack = stack
        self.tokens = tokens
        self.running = asyncio.Event()
        self.stop = False
        self.busy = 0
        self.counts: dict[str, int] = {}
        self.failures: list[str] = []
        self.webhook_seq = 10_000_000

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def fail(self, what: str) -> None:
        self.count("failures")
        if len(self.failures) < 5:
            self.failures.append(what[:300])

    # -- HTTP ------------------------------------------------------------------------------

    def _graphql(self, user: str, query: str, variables: dict[str, Any]) -> bytes:
        body = orjson.dumps({"query": query, "variables": variables})
        headers = {
            "authorization": f"Bearer {self.tokens[user]}",
            "content-type": "application/json",
        }
        return build_request("POST", "/graphql", self.stack.port, headers, body)

    def _webhook(self, user: str) -> bytes:
        self.webhook_seq += 1
        payload = clerk_user(user, 1_754_000_000_001 + self.webhook_seq, "user.updated")
        body, headers = signed_webhook(payload, f"msg_soak_{self.webhook_seq}")
        return build_request("POST", "/webhooks/clerk", self.stack.port, headers, body)

    def _operation(self) -> tuple[str, bytes]:
        user = f"user_soak_{random.randrange(USERS)}"
        sid = f"soak-{user}"
        roll = random.random()
        if roll < 0.35:
            return "getCurrentUser", self._graphql(user, Q_ME, {})
        if roll < 0.50:
            return "getUserSessions", self._graphql(user, Q_SESSIONS, {})
        if roll < 0.70:
            return "touchSession", self._graphql(user, M_TOUCH, {"id": sid})
        if roll < 0.85:
            metadata = {"n": random.randrange(1000), "gone": None}
            return "updateSession", self._graphql(user, M_UPDATE, {"id": sid, "m": metadata})
        return "webhook", self._webhook(user)

    async def http_worker(self) -> None:
        connection = await Connection.open(self.stack.port)
        try:
            while not self.stop:
                await self.running.wait()
                if self.stop:
                    break
                self.busy += 1
                try:
                    what, request = self._operation()
                    status, body = await connection.request(request)
                    if status != 200 or b'"errors"' in body:
                        self.fail(f"{what}: {status} {body[:200]!r}")
                    self.count(what)
                finally:
                    self.busy -= 1
        finally:
            connection.close()

    # -- WebSockets ------------------------------------------------------------------------

    async def _open(self, user: str) -> Any:
        ws = await connect(
            self.stack.ws_url,
            subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
            compression=None,
            ping_interval=None,
            close_timeout=1,
        )
        params = {"Authorization": f"Bearer {self.tokens[user]}"}
        await ws.send(orjson.dumps({"type": "connection_init", "payload": params}).decode())
        ack = orjson.loads(await ws.recv())
        if ack.get("type") != "connection_ack":
            raise RuntimeError(f"no ack: {ack}")
        return ws

    @staticmethod
    async def _first_result(ws: Any, op_id: str, query: str, variables: dict[str, Any]) -> None:
        payload = {"query": query, "variables": variables}
        await ws.send(orjson.dumps({"id": op_id, "type": "subscribe", "payload": payload}).decode())
        while True:
            message = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            if message.get("id") == op_id and message.get("type") == "next":
                if message["payload"].get("errors"):
                    raise RuntimeError(str(message["payload"]["errors"]))
                return
            if message.get("type") in ("error", "complete") and message.get("id") == op_id:
                raise RuntimeError(str(message))

    async def churn_worker(self) -> None:
        while not self.stop:
            await self.running.wait()
            if self.stop:
                break
            self.busy += 1
            user = f"user_soak_{random.randrange(USERS)}"
            try:
                ws = await self._open(user)
                try:
                    await self._first_result(ws, "1", S_SESSION, {"id": f"soak-{user}"})
                    await ws.send('{"id":"1","type":"complete"}')
                    await self._first_result(ws, "2", S_ME, {})
                    await ws.send('{"id":"2","type":"complete"}')
                    self.count("subscribe/unsubscribe")
                finally:
                    await ws.close()
            except Exception as exc:
                self.fail(f"churn: {exc!r}")
            finally:
                self.busy -= 1

    async def long_lived(self, user: str, ready: asyncio.Event) -> None:
        ws = await self._open(user)
        try:
            await self._first_result(ws, "1", S_SESSIONS, {})
            ready.set()
            async for frame in ws:
                message = orjson.loads(frame)
                if message.get("type") == "next":
                    self.count("live updates received")
                elif message.get("type") == "ping":
                    await ws.send('{"type":"pong"}')
                elif message.get("type") in ("error", "complete"):
                    self.fail(f"long-lived subscription ended: {message}")
                    return
        except Exception as exc:
            if not self.stop:
                self.fail(f"long-lived: {exc!r}")
        finally:
            with contextlib.suppress(Exception):
                await ws.close()

    # -- sampling --------------------------------------------------------------------------

    def sample(self) -> dict[str, Any]:
        stats = self.stack.stats()
        fanout = stats["fanout"]
        assert isinstance(fanout, dict)
        return {
            "rss": rss_kib(self.stack.server_pid),
            "tasks": stats["tasks"],
            "subscriptions": fanout["subscriptions"],
            "queued": fanout["queued"],
        }

    async def quiet_sample(self) -> dict[str, Any]:
        """Pause the load, let in-flight work finish, sample, resume."""
        self.running.clear()
        deadline = time.monotonic() + 15
        while self.busy and time.monotonic() < deadline:  # noqa: ASYNC110 (a counter, polled)
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)
        sample = await asyncio.to_thread(self.sample)
        self.running.set()
        return sample


async def _soak(stack: Stack, tokens: dict[str, str], warmup: float, seconds: float) -> Result:
    soak = Soak(stack, tokens)
    # Each user's own session, so touch/update always find one.
    setup = await Connection.open(stack.port)
    for user in tokens:
        request = soak._graphql(user, M_CREATE, {"id": f"soak-{user}"})
        status, body = await setup.request(request)
        if status != 200 or b'"errors"' in body:
            raise RuntimeError(f"createSession: {status} {body[:300]!r}")
    setup.close()
    readies = [asyncio.Event() for _ in tokens]
    holders = [
        asyncio.create_task(soak.long_lived(user, ready))
        for user, ready in zip(tokens, readies, strict=True)
    ]
    await asyncio.wait_for(asyncio.gather(*(ready.wait() for ready in readies)), 30)
    workers = [asyncio.create_task(soak.http_worker()) for _ in range(HTTP_WORKERS)]
    workers += [asyncio.create_task(soak.churn_worker()) for _ in range(CHURN_WORKERS)]
    soak.running.set()
    say(f"  warm-up {warmup:.0f} s")
    await asyncio.sleep(warmup)
    start = await soak.quiet_sample()
    say(f"  start: {start}; load for {seconds:.0f} s")
    samples = []
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        await asyncio.sleep(min(SAMPLE_EVERY, max(0.0, seconds - (time.monotonic() - began))))
        samples.append(await asyncio.to_thread(soak.sample))
        if len(samples) % max(1, int(60 / SAMPLE_EVERY)) == 0:
            say(f"  {time.monotonic() - began:5.0f} s: rss {samples[-1]['rss'] / 1024:.1f} MiB")
    passive = ("failures", "live updates received")
    operations = sum(n for what, n in soak.counts.items() if what not in passive)
    end = await soak.quiet_sample()
    say(f"  end:   {end}")
    soak.stop = True
    soak.running.set()
    await asyncio.gather(*workers, return_exceptions=True)
    for holder in holders:
        holder.cancel()
    await asyncio.gather(*holders, return_exceptions=True)

    result = Result("Soak: mixed queries, mutations, subscription churn, webhooks")
    rss_growth = end["rss"] / start["rss"] - 1
    task_change = end["tasks"] / start["tasks"] - 1
    result.markdown.append(
        f"{warmup:.0f} s warm-up, then {seconds:.0f} s of load ({HTTP_WORKERS} HTTP workers, "
        f"{CHURN_WORKERS} subscribe/unsubscribe churners, {USERS} long-lived subscribers); "
        f"{operations} operations ({operations / (warmup + seconds):.0f}/s)."
    )
    result.markdown.append("")
    result.table(
        ["sample", "server RSS MiB", "asyncio tasks", "fan-out subscriptions", "queued events"],
        [
            _sample_row("start (paused)", start),
            _sample_row("end (paused)", end),
            [
                "under load (min-max)",
                f"{min(s['rss'] for s in samples) / 1024:.1f}-"
                f"{max(s['rss'] for s in samples) / 1024:.1f}",
                f"{min(s['tasks'] for s in samples)}-{max(s['tasks'] for s in samples)}",
                f"{min(s['subscriptions'] for s in samples)}-"
                f"{max(s['subscriptions'] for s in samples)}",
                f"{max(s['queued'] for s in samples)} max",
            ],
        ],
    )
    mix = ", ".join(f"{what} {n}" for what, n in sorted(soak.counts.items()))
    result.markdown += [f"Operations: {mix}.", ""]
    if soak.failures:
        result.notes.append(f"failures (first {len(soak.failures)}): {soak.failures}")
    result.targets += [
        Target(
            "soak: server RSS flat (end vs start)",
            f"within {FLAT:.0%}",
            f"{rss_growth:+.1%}",
            abs(rss_growth) <= FLAT,
        ),
        Target(
            "soak: asyncio tasks flat (end vs start)",
            f"within {FLAT:.0%}",
            f"{start['tasks']} -> {end['tasks']} ({task_change:+.1%})",
            abs(task_change) <= FLAT,
        ),
        Target("soak: failed operations", "0", str(soak.counts.get("failures", 0)), None),
    ]
    result.targets[-1].met = soak.counts.get("failures", 0) == 0
    return result


def _sample_row(name: str, sample: dict[str, Any]) -> list[object]:
    rss = f"{sample['rss'] / 1024:.1f}"
    return [name, rss, sample["tasks"], sample["subscriptions"], sample["queued"]]


def run(quick: bool, profile: bool, soak_seconds: float | None = None) -> Result:
    total = soak_seconds if soak_seconds is not None else (42.0 if quick else 1800.0)
    warmup = min(8.0, total / 4) if total < 300 else 60.0
    seconds = total - warmup
    with running_stack("soak", redis=True) as stack:
        tokens = {}
        for n in range(USERS):
            user = f"user_soak_{n}"
            create_user(stack, user)
            tokens[user] = dev_token(stack, user)
        result = asyncio.run(_soak(stack, tokens, warmup, seconds))
        stack.check_alive()
    if profile:
        result.notes.append("soak is not profiled (see the other benchmarks' profiles)")
    return result
