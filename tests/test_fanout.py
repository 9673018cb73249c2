"""Fan-out across instances and processes, through real Redis and PostgreSQL, and what happens
when the link breaks or a subscriber cannot keep up.

Each Redis test starts its own redis-server (tests/redis_server.py) so it can stop and restart
it; PostgreSQL is the shared server on 127.0.0.1:5432, reached through a small TCP proxy when a
test needs to cut the link.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from redis import asyncio as aioredis
from starlette.applications import Starlette

from datadiver_graph.api.schema.subscriptions import SLOW_CONSUMER_CLOSE_CODE, SLOW_CONSUMER_REASON
from datadiver_graph.app import create_app
from datadiver_graph.config import Settings
from datadiver_graph.dev.keys import mint_dev_token
from datadiver_graph.domain import sessions, users
from datadiver_graph.domain.events import (
    Event,
    session_channel,
    user_channel,
    user_sessions_channel,
)
from datadiver_graph.domain.store import Store
from datadiver_graph.fanout import RESYNC, EventHub, SlowConsumer, Subscription
from datadiver_graph.storage.embedded import free_port
from datadiver_graph.storage.mongo import Database
from tests.cli import clean_env, executable
from tests.graphql_client import gql
from tests.redis_server import RedisServer, skip_or_fail
from tests.servers import serve_app
from tests.ws_client import PROTOCOLS, TRANSPORT_WS, open_ws

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TIMEOUT = 5.0

SESSION_FIELDS = "sessionId userId active metadata version"
SESSION = f"subscription($id: String!) {{ session(sessionId: $id) {{ {SESSION_FIELDS} }} }}"
CREATE_SESSION = f"""mutation($sessionId: String, $metadata: JSON) {{
  createSession(sessionId: $sessionId, metadata: $metadata) {{ {SESSION_FIELDS} }}
}}"""
UPDATE_SESSION = f"""mutation($id: String!, $metadata: JSON) {{
  updateSession(sessionId: $id, metadata: $metadata) {{ {SESSION_FIELDS} }}
}}"""


# --- helpers -----------------------------------------------------------------------------------


async def eventually(check: Callable[[], Any], what: str, within: float = TIMEOUT) -> None:
    """Poll `check` (sync or async) until it is true."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.05)


async def not_linked(hub: EventHub) -> bool:
    return not await hub.link_ok()


async def next_item(subscription: Subscription) -> Any:
    return await asyncio.wait_for(subscription.next(), TIMEOUT)


async def listening(broadcast_url: str, channel: str) -> None:
    """Wait until the broker counts a subscriber on `channel`: a message published before
    that reaches nobody.

    Redis: SUBSCRIBE is written to the socket but not awaited, so ask Redis (PUBSUB NUMSUB).
    PostgreSQL: asyncpg awaits LISTEN's completion, so once the hub's subscribe returned
    (before a subscription yields anything) it is in place.
    """
    if not broadcast_url.startswith("redis"):
        return
    client = aioredis.Redis.from_url(broadcast_url)

    async def subscribed() -> bool:
        [(_, count)] = await client.pubsub_numsub(channel)
        return int(count) >= 1

    try:
        await eventually(subscribed, f"a subscriber on {channel} at Redis")
    finally:
        await client.aclose()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.fixture
async def postgres_url() -> str:
    try:
        connection = await asyncio.wait_for(asyncpg.connect(POSTGRES_URL), TIMEOUT)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        skip_or_fail(f"PostgreSQL is not reachable at {POSTGRES_URL}: {exc}")
    await connection.close()
    return POSTGRES_URL


@contextlib.asynccontextmanager
async def hub_on(url: str, **options: Any) -> AsyncIterator[EventHub]:
    hub = EventHub(url, **options)
    await hub.connect()
    try:
        yield hub
    finally:
        await hub.disconnect()


def session_event(version: int, session_id: str = "s1", metadata: Any = None) -> Event:
    return Event(
        "session.updated",
        {"sessionId": session_id, "version": version, "metadata": metadata or {}},
    )


class TcpProxy:
    """Forwards 127.0.0.1:port to a target; stop() cuts every connection and refuses new ones
    until start() listens again on the same port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()  # refuse new connections
        # Cut the forwarded connections before waiting for the server: since Python 3.12.1,
        # Server.wait_closed() waits until every accepted connection is gone (3.11 returned at
        # once), so waiting first would wait forever on the idle LISTEN connection.
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)  # stop() must cut it even while the upstream connect runs
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self._writers.discard(writer)
            writer.transport.abort()
            return
        if writer.transport.is_closing():  # stop() came first
            up_writer.transport.abort()
            return
        self._writers.add(up_writer)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(sink)
            sink.transport.abort()


# --- EventHub, memory backend --------------------------------------------------------------------


async def test_hub_delivers_to_every_local_subscriber_in_order() -> None:
    async with hub_on("memory://") as hub:
        async with hub.subscribe("a") as first, hub.subscribe("a", "b") as second:
            assert hub.stats()["subscriptions"] == 2 and hub.stats()["channels"] == 2
            await hub.publish(("a",), session_event(1))
            await hub.publish(("b",), session_event(2))
            assert (await next_item(first)).record["version"] == 1
            assert (await next_item(second)).record["version"] == 1
            assert (await next_item(second)).record["version"] == 2
        assert hub.stats()["subscriptions"] == 0 and hub.stats()["channels"] == 0


async def test_hub_cuts_off_a_subscriber_that_overflows_its_bounded_queue() -> None:
    cut_off: list[str] = []
    async with hub_on("memory://", queue_size=8) as hub:
        async with (
            hub.subscribe("s", on_overflow=lambda: cut_off.append("slow")) as slow,
            hub.subscribe("s") as fast,
        ):
            received = []
            for version in range(1, 41):
                await hub.publish(("s",), session_event(version))
                received.append((await next_item(fast)).record["version"])
                stats = hub.stats()
                # Bounded: the slow subscriber's backlog never exceeds its queue.
                assert stats["queued"] <= hub.queue_size * stats["subscriptions"]
                assert slow.queued <= hub.queue_size
            assert received == list(range(1, 41))  # the fast one missed nothing
            assert cut_off == ["slow"]  # told once, the moment it overflowed
            assert hub.stats()["dropped_slow"] == 1
            assert slow.overflowed and slow.queued <= 1  # its backlog was freed at once
            with pytest.raises(SlowConsumer):
                await next_item(slow)
            with pytest.raises(SlowConsumer):
                await next_item(slow)  # and it stays cut off
        assert hub.stats()["subscriptions"] == 0 and hub.stats()["dropped_slow"] == 1


# --- EventHub, Redis backend -----------------------------------------------------------------


async def test_redis_hub_carries_events_between_hubs(redis_server: RedisServer) -> None:
    async with hub_on(redis_server.url) as sender, hub_on(redis_server.url) as receiver:
        await eventually(receiver.link_ok, "receiver linked")
        async with receiver.subscribe("s") as subscription:
            await listening(redis_server.url, "s")
            await sender.publish(("s",), session_event(7))
            assert (await next_item(subscription)).record == {
                "sessionId": "s1",
                "version": 7,
                "metadata": {},
            }


async def test_redis_hub_survives_a_restart_and_asks_for_a_resync(
    redis_server: RedisServer,
) -> None:
    async with hub_on(redis_server.url) as sender, hub_on(redis_server.url) as receiver:
        await eventually(receiver.link_ok, "receiver linked")
        async with receiver.subscribe("s") as subscription:
            await listening(redis_server.url, "s")
            await sender.publish(("s",), session_event(1))
            assert (await next_item(subscription)).record["version"] == 1

            redis_server.stop()
            await eventually(lambda: not_linked(receiver), "receiver notices")
            assert not await sender.link_ok()

            redis_server.start()  # same port
            assert await next_item(subscription) is RESYNC  # may have missed something
            await eventually(receiver.link_ok, "receiver linked again")
            await eventually(sender.link_ok, "sender linked again")
            await listening(redis_server.url, "s")  # re-subscribed by the reconnect
            # No publish happened during the outage: the sender's pooled connection is stale.
            await sender.publish(("s",), session_event(2))
            assert (await next_item(subscription)).record["version"] == 2
            assert sender.stats()["publish_failures"] == 0


async def test_redis_publish_while_down_is_counted_and_does_not_raise(
    redis_server: RedisServer,
) -> None:
    async with hub_on(redis_server.url) as hub:
        await eventually(hub.link_ok, "linked")
        redis_server.stop()
        await eventually(lambda: not_linked(hub), "link down")
        started = time.monotonic()
        await hub.publish(("a", "b"), session_event(1))  # must not raise
        assert time.monotonic() - started < TIMEOUT  # and must not hang a mutation
        assert hub.stats()["publish_failures"] == 2
        assert hub.stats()["published"] == 0

        redis_server.start()
        await eventually(hub.link_ok, "linked again")
        async with hub.subscribe("a") as subscription:
            await listening(redis_server.url, "a")
            await hub.publish(("a",), session_event(2))
            assert (await next_item(subscription)).record["version"] == 2
        assert hub.stats()["published"] == 1


async def test_redis_hub_starts_degraded_while_redis_is_down(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")  # not started yet
    async with hub_on(server.url) as hub, hub.subscribe("s") as subscription:
        assert not await hub.link_ok()
        with server:
            await eventually(hub.link_ok, "linked once Redis is up", within=10)
            await listening(server.url, "s")
            await hub.publish(("s",), session_event(3))
            assert (await next_item(subscription)).record["version"] == 3


# --- EventHub, PostgreSQL backend ------------------------------------------------------------


async def test_postgres_hub_reconnects_after_the_link_is_cut(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The listener's connection dies and PostgreSQL stays unreachable for a while: the hub
    keeps retrying (not just once), then re-listens and asks subscribers to resync."""
    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    channel = unique("pgfan")
    try:
        async with (
            hub_on(f"postgresql://postgres@127.0.0.1:{proxy.port}/postgres") as receiver,
            hub_on(postgres_url) as sender,
            receiver.subscribe(channel) as subscription,
        ):
            await sender.publish((channel,), session_event(1))
            assert (await next_item(subscription)).record["version"] == 1

            caplog.set_level(logging.WARNING, logger="datadiver_graph.fanout.hub")
            await proxy.stop()
            await eventually(lambda: not_linked(receiver), "link lost")

            def failed_reconnects() -> int:
                return sum("reconnect failed" in r.getMessage() for r in caplog.records)

            await eventually(lambda: failed_reconnects() >= 3, "several reconnect attempts fail")
            assert not await receiver.link_ok()
            await proxy.start()

            assert await asyncio.wait_for(subscription.next(), 10) is RESYNC
            assert await receiver.link_ok()
            await sender.publish((channel,), session_event(2))
            assert (await next_item(subscription)).record["version"] == 2
    finally:
        await proxy.stop()


async def test_postgres_hub_handles_concurrent_subscribes_and_publishes(
    postgres_url: str,
) -> None:
    """One asyncpg connection carries every LISTEN and NOTIFY: starting many subscriptions
    (and publishing) at once must not lose any of them."""
    channels = [unique("pgc") for _ in range(8)]
    async with (
        hub_on(postgres_url) as receiver,
        hub_on(postgres_url) as sender,
        contextlib.AsyncExitStack() as stack,
    ):
        subscriptions = await asyncio.gather(
            *(stack.enter_async_context(receiver.subscribe(channel)) for channel in channels),
            *(receiver.publish((channel,), session_event(0)) for channel in channels),
        )
        await asyncio.gather(
            *(sender.publish((channel,), session_event(1)) for channel in channels)
        )
        for subscription in subscriptions[: len(channels)]:
            assert isinstance(subscription, Subscription)
            item = await next_item(subscription)
            while item.record["version"] == 0:  # its own concurrent publish, if LISTEN won
                item = await next_item(subscription)
            assert item.record["version"] == 1
        assert receiver.stats()["publish_failures"] == 0


# --- two app instances ---------------------------------------------------------------------


class Instance:
    def __init__(self, app: Starlette, url: str, http: httpx.AsyncClient) -> None:
        self.app = app
        self.url = url
        self.http = http

    @property
    def store(self) -> Store:
        store: Store = self.app.state.store
        return store

    async def readyz(self) -> tuple[int, dict[str, Any]]:
        response = await self.http.get("/readyz")
        return response.status_code, response.json()


@contextlib.asynccontextmanager
async def instance(settings: Settings) -> AsyncIterator[Instance]:
    app = create_app(settings)
    async with (
        serve_app(app) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as http,
    ):
        yield Instance(app, url, http)


@contextlib.asynccontextmanager
async def two_instances(
    settings: Settings, broadcast_url: str
) -> AsyncIterator[tuple[Instance, Instance]]:
    shared = settings.model_copy(update={"broadcast_url": broadcast_url})
    async with instance(shared) as a, instance(shared) as b:
        for node in (a, b):
            await eventually(node.store.events.link_ok, f"{node.url} linked")
        yield a, b


async def assert_mutation_on_a_reaches_b(
    a: Instance, b: Instance, settings: Settings, broadcast_url: str
) -> None:
    token = mint_dev_token(settings, "user_ada")
    session_id = unique("s")
    created = await gql(a.http, CREATE_SESSION, {"sessionId": session_id}, token=token)
    assert created.errors == [], created.body
    async with open_ws(b.url, TRANSPORT_WS, {"authToken": token}) as ws:
        op = await ws.subscribe(SESSION, {"id": session_id})
        assert (await ws.data(op))["session"]["version"] == 1
        await listening(broadcast_url, session_channel(session_id))  # before A publishes
        for step in (2, 3):
            result = await gql(
                a.http, UPDATE_SESSION, {"id": session_id, "metadata": {"step": step}}, token=token
            )
            assert result.errors == [], result.body
            session = (await ws.data(op))["session"]
            assert session["version"] == step and session["metadata"] == {"step": step}
    assert a.store.events.stats()["published"] >= 2
    assert b.store.events.stats()["delivered"] >= 2


async def test_two_instances_share_events_through_redis(
    settings: Settings, database: Database, redis_server: RedisServer
) -> None:
    async with two_instances(settings, redis_server.url) as (a, b):
        await assert_mutation_on_a_reaches_b(a, b, settings, redis_server.url)


async def test_two_instances_share_events_through_postgres(
    settings: Settings, database: Database, postgres_url: str
) -> None:
    async with two_instances(settings, postgres_url) as (a, b):
        await assert_mutation_on_a_reaches_b(a, b, settings, postgres_url)


async def test_events_too_large_for_postgres_notify_still_reach_subscribers(
    settings: Settings, database: Database, postgres_url: str
) -> None:
    """pg_notify refuses 8000 bytes: a large change travels as a record-less hint and the
    subscriber re-reads it; a large user's deletion still completes their subscriptions."""
    user_id = unique("user")
    token = mint_dev_token(settings, user_id)
    session_id = unique("s")
    big = {"notes": "n" * 10_000}
    async with two_instances(settings, postgres_url) as (a, b):
        await users.upsert_from_clerk(
            a.store,
            users.ClerkProfile(user_id, "Big", None, None, created_at=None, updated_at=1),
        )
        await users.update(a.store, user_id, preferences=big)
        created = await gql(a.http, CREATE_SESSION, {"sessionId": session_id}, token=token)
        assert created.errors == []
        async with open_ws(b.url, TRANSPORT_WS, {"authToken": token}) as ws:
            session_op = await ws.subscribe(SESSION, {"id": session_id})
            me = await ws.subscribe("subscription { currentUser { externalId preferences } }")
            assert (await ws.data(session_op))["session"]["version"] == 1
            assert (await ws.data(me))["currentUser"]["preferences"] == big
            for channel in (session_channel(session_id), user_channel(user_id)):
                await listening(postgres_url, channel)

            result = await gql(
                a.http, UPDATE_SESSION, {"id": session_id, "metadata": big}, token=token
            )
            assert result.errors == [], result.body
            session = (await ws.data(session_op))["session"]
            assert session["version"] == 2 and session["metadata"] == big

            await users.delete_from_clerk(a.store, user_id)
            assert (await ws.message(me)).kind == "complete"
            assert (await ws.message(session_op)).kind == "complete"


async def test_redis_outage_degrades_then_recovers_without_a_restart(
    settings: Settings, database: Database, redis_server: RedisServer
) -> None:
    token = mint_dev_token(settings, "user_ada")
    session_id = unique("s")
    async with two_instances(settings, redis_server.url) as (a, b):
        for node in (a, b):
            assert await node.readyz() == (200, {"status": "ok", "database": True, "fanout": True})
        created = await gql(a.http, CREATE_SESSION, {"sessionId": session_id}, token=token)
        assert created.errors == []
        async with open_ws(b.url, TRANSPORT_WS, {"authToken": token}) as ws:
            op = await ws.subscribe(SESSION, {"id": session_id})
            assert (await ws.data(op))["session"]["version"] == 1
            await listening(redis_server.url, session_channel(session_id))

            redis_server.stop()

            async def degraded(node: Instance) -> bool:
                return await node.readyz() == (
                    200,
                    {"status": "degraded", "database": True, "fanout": False},
                )

            for node in (a, b):
                await eventually(lambda node=node: degraded(node), f"{node.url} degraded")

            # Queries and mutations keep working; the change cannot be fanned out yet.
            during = await gql(
                a.http,
                UPDATE_SESSION,
                {"id": session_id, "metadata": {"during": "outage"}},
                token=token,
            )
            assert during.errors == [] and during.data["updateSession"]["version"] == 2
            assert a.store.events.stats()["publish_failures"] >= 1

            redis_server.start()  # same port, empty: no subscriptions, no history

            async def ok(node: Instance) -> bool:
                return await node.readyz() == (
                    200,
                    {"status": "ok", "database": True, "fanout": True},
                )

            for node in (a, b):
                await eventually(lambda node=node: ok(node), f"{node.url} ok again")
            await listening(redis_server.url, session_channel(session_id))  # B re-subscribed

            # The change made while Redis was down arrives: B re-read its snapshot.
            session = (await ws.data(op))["session"]
            assert session["version"] == 2 and session["metadata"] == {"during": "outage"}

            # And new events flow again, with no process restarted.
            after = await gql(
                a.http, UPDATE_SESSION, {"id": session_id, "metadata": {"after": 1}}, token=token
            )
            assert after.errors == []
            session = (await ws.data(op))["session"]
            assert session["version"] == 3 and session["metadata"] == {
                "during": "outage",
                "after": 1,
            }
            assert ws.pending(op) == []


# --- real processes --------------------------------------------------------------------------


def wait_ready(process: subprocess.Popen[bytes], url: str, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            out = process.stdout.read().decode(errors="replace") if process.stdout else ""
            pytest.fail(f"serve exited with {process.returncode}: {out[-2000:]}")
        try:
            response = httpx.get(f"{url}/readyz", timeout=1)
            body: dict[str, Any] = response.json()
            if response.status_code == 200 and body.get("fanout"):
                return body
            last = body
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.1)
    pytest.fail(f"{url}/readyz not ready within {timeout} s (last: {last!r})")


@contextlib.contextmanager
def serving(env: dict[str, str], cwd: Path, *args: str) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [executable(), "serve", "--port", str(port), *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(process, url)
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if process.stdout is not None:
            process.stdout.close()


def serve_env(mongo_uri: str, db_name: str, data_dir: Path, broadcast_url: str) -> dict[str, str]:
    return clean_env(
        MONGODB_URI=mongo_uri,
        MONGODB_DB=db_name,
        BROADCAST_URL=broadcast_url,
        DATA_DIR=str(data_dir),
        DATADIVER_ENV="development",
        LOG_LEVEL="WARNING",
    )


async def test_two_serve_processes_share_events_through_redis(
    settings: Settings,
    database: Database,
    mongo_uri: str,
    db_name: str,
    data_dir: Path,
    tmp_path: Path,
    redis_server: RedisServer,
) -> None:
    token = mint_dev_token(settings, "user_ada")  # creates DATA_DIR/dev-signing-key.pem
    env = serve_env(mongo_uri, db_name, data_dir, redis_server.url)
    session_id = unique("s")
    with serving(env, tmp_path) as url_a, serving(env, tmp_path) as url_b:
        async with (
            httpx.AsyncClient(base_url=url_a, timeout=10) as http_a,
            open_ws(url_b, TRANSPORT_WS, {"Authorization": f"Bearer {token}"}) as ws,
        ):
            created = await gql(http_a, CREATE_SESSION, {"sessionId": session_id}, token=token)
            assert created.errors == [], created.body
            op = await ws.subscribe(SESSION, {"id": session_id})
            assert (await ws.data(op))["session"]["version"] == 1
            await listening(redis_server.url, session_channel(session_id))
            result = await gql(
                http_a, UPDATE_SESSION, {"id": session_id, "metadata": {"via": "A"}}, token=token
            )
            assert result.errors == [], result.body
            session = (await ws.data(op))["session"]
            assert session["version"] == 2 and session["metadata"] == {"via": "A"}


def test_serve_with_two_workers_answers_readyz(
    mongo_uri: str, db_name: str, data_dir: Path, tmp_path: Path, redis_server: RedisServer
) -> None:
    env = serve_env(mongo_uri, db_name, data_dir, redis_server.url)
    with serving(env, tmp_path, "--workers", "2") as url:
        for _ in range(4):  # whichever worker answers
            response = httpx.get(f"{url}/readyz", timeout=5)
            assert response.status_code == 200
            assert response.json() == {"status": "ok", "database": True, "fanout": True}


# --- slow consumers over a real WebSocket ----------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_slow_websocket_consumer_is_closed_and_others_get_every_event(
    settings: Settings, database: Database, protocol: str
) -> None:
    async with instance(settings) as node:
        hub = node.store.events
        token = mint_dev_token(settings, "user_ada")
        session = await sessions.create(node.store, "user_ada", session_id=unique("flood"))
        channels = (session_channel(session.session_id), user_sessions_channel("user_ada"))
        blob = "x" * 12_000  # large events fill the socket buffers after a few of them
        async with (
            open_ws(node.url, protocol, {"authToken": token}) as fast,
            open_ws(
                node.url, protocol, {"authToken": token}, receive_buffer=4096, max_queue=1
            ) as slow,
        ):
            fast_op = await fast.subscribe(SESSION, {"id": session.session_id})
            slow_op = await slow.subscribe(SESSION, {"id": session.session_id})
            assert (await fast.data(fast_op))["session"]["version"] == 1
            assert (await slow.data(slow_op))["session"]["version"] == 1
            assert hub.stats()["subscriptions"] == 2
            # From here on `slow` reads nothing.

            max_queued = 0
            version = 1
            cut_off_at: int | None = None
            while version < 2_000:
                version += 1
                record = session.model_copy(update={"version": version}).to_doc()
                record["metadata"] = {"n": version, "blob": blob}
                await hub.publish(channels, Event("session.updated", record))
                got = (await fast.data(fast_op))["session"]
                assert got["version"] == version and got["metadata"]["n"] == version
                stats = hub.stats()
                assert stats["queued"] <= hub.queue_size * stats["subscriptions"]
                max_queued = max(max_queued, stats["queued"])
                if cut_off_at is None and stats["dropped_slow"] == 1:
                    cut_off_at = version
                if cut_off_at is not None and version >= cut_off_at + 100:
                    break
            assert cut_off_at is not None, "the slow client was never cut off"
            assert max_queued >= hub.queue_size // 2  # it really did fall behind

            # When the slow client reads again it finds the close the server queued for it.
            assert await slow.closed() == (SLOW_CONSUMER_CLOSE_CODE, SLOW_CONSUMER_REASON)
            await eventually(
                lambda: hub.stats()["subscriptions"] == 1, "the slow subscription is released"
            )
            assert hub.stats()["dropped_slow"] == 1 and hub.stats()["queued"] <= hub.queue_size

            # The fast client is unaffected and keeps receiving.
            record = session.model_copy(update={"version": version + 1}).to_doc()
            await hub.publish(channels, Event("session.updated", record))
            assert (await fast.data(fast_op))["session"]["version"] == version + 1


# --- independence from broadcaster -------------------------------------------------------------


def test_fanout_runs_with_broadcaster_unimportable() -> None:
    """fan-out keeps broadcaster's backend interface itself, so no broadcaster release (nor its
    absence) can break it: every backend module imports, and a hub delivers, without it."""
    script = """
import asyncio, sys
sys.modules["broadcaster"] = None  # any import of it, public or private, now fails
from datadiver_graph.fanout import EventHub
from datadiver_graph.fanout import memory_backend, postgres_backend, redis_backend
from datadiver_graph.domain.events import Event

async def main():
    hub = EventHub("memory://")
    await hub.connect()
    async with hub.subscribe("c") as subscription:
        await hub.publish(("c",), Event("session.updated", {"version": 1}))
        print((await asyncio.wait_for(subscription.next(), 5)).record["version"])
    await hub.disconnect()

asyncio.run(main())
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"
