"""The lean graphql-transport-ws stack (fastpaths/ws_handler.py, fastpaths/ws_transport.py).

1. Differential: the same conversations with strawberry's own handler and with ours, on
   the same served app; every message the client receives (and every operation log
   line) must be the same, for the happy paths and the refusals alike.
2. What it is for: an idle subscription keeps no task, and delivering events keeps no
   memory per event (the graphql-core memo leak, see fastpaths/executor.py, stays fixed).
3. The whole subscription suite (tests/test_subscriptions.py) and the slow-consumer and
   Redis-outage tests again, on this stack (the imports below re-collect them here).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from graphql.execution import Executor
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from uvicorn import config as uvicorn_config

from datadiver_graph.api.http import GraphQLView
from datadiver_graph.domain.events import Event, session_channel
from datadiver_graph.fastpaths.live_operation import LiveOperation
from datadiver_graph.fastpaths.ws_handler import LiveTransportWSHandler
from datadiver_graph.fastpaths.ws_transport import WS_PROTOCOL
from tests.clerk_fixtures import SERVICE_KEY
from tests.graphql_client import gql
from tests.test_fanout import (  # noqa: F401 - re-collected here, on the lean stack
    redis_server,
    test_redis_outage_degrades_then_recovers_without_a_restart,
    test_slow_websocket_consumer_is_closed_and_others_get_every_event,
)

# The `served` fixture comes with these.
from tests.test_subscriptions import *  # noqa: F403 - re-collected here, on the lean stack
from tests.test_subscriptions import (
    CREATE_SESSION,
    SESSION,
    Served,
    bearer,
    create_session,
    eventually,
    make_user,
    task_count,
)
from tests.ws_client import TRANSPORT_WS, GraphQLWebSocket, ServerClosed, open_ws

# Tests a fast path's own internals: skipped under FAST_PATHS=false (conftest.py).
pytestmark = pytest.mark.fast_paths


@pytest.fixture(autouse=True)
def lean_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every app served in this module: our handler, and uvicorn with ws=WS_PROTOCOL."""
    monkeypatch.setattr(GraphQLView, "graphql_transport_ws_handler_class", LiveTransportWSHandler)
    monkeypatch.setitem(uvicorn_config.WS_PROTOCOLS, "auto", WS_PROTOCOL)


# --- 1. the same conversation, message for message ----------------------------------------------

Transcript = list[Any]


class Talk:
    """One run of a conversation: the client, and names that differ from run to run."""

    def __init__(self, ws: GraphQLWebSocket, served: Served, tag: str, token: str) -> None:
        self.ws = ws
        self.served = served
        self.tag = tag
        self.token = token

    async def read(self, count: int) -> Transcript:
        return [await self.ws.recv_json() for _ in range(count)]

    async def until_closed(self) -> Transcript:
        try:
            code, reason = await self.ws.closed()
        except ServerClosed as closed:
            code, reason = closed.code, closed.reason
        return [("closed", code, reason)]

    async def reply(self) -> Transcript:
        """The next message, or how the server closed the connection instead."""
        try:
            return await self.read(1)
        except ServerClosed as closed:
            return [("closed", closed.code, closed.reason)]

    async def subscribe(
        self, op_id: str, query: str, variables: Any = None, name: str | None = None
    ) -> None:
        payload: dict[str, Any] = {"query": query}
        if variables is not None:
            payload["variables"] = variables
        if name is not None:
            payload["operationName"] = name
        await self.ws.send({"id": op_id, "type": "subscribe", "payload": payload})


async def snapshot_changes_complete(talk: Talk) -> Transcript:
    query = (
        "subscription Watch($id: String!) { s: session(sessionId: $id) "
        "{ __typename sid: sessionId version metadata active } }"
    )
    session_id = f"sess-{talk.tag}"
    await talk.subscribe("1", query, {"id": session_id})
    out = await talk.read(1)
    update = (
        "mutation($id: String!) { updateSession(sessionId: $id, metadata: {n: 2}) { version } }"
    )
    result = await gql(talk.served.http, update, {"id": session_id}, token=talk.token)
    assert result.errors == [], result.body
    out += await talk.read(1)
    await talk.ws.send({"type": "ping"})
    out += await talk.read(1)
    await talk.ws.send({"id": "1", "type": "complete"})
    await talk.subscribe("1", query, {"id": session_id})  # the id is free again
    return out + await talk.read(1)


async def refusals(talk: Talk) -> Transcript:
    await talk.subscribe("a", SESSION)  # $id missing
    await talk.subscribe("b", SESSION, {"id": 5})  # not a String
    await talk.subscribe("c", SESSION, {"id": "sess-bob"})  # another user's
    await talk.subscribe("d", "subscription { session(sessionId: 1) { nope } }")
    await talk.subscribe("e", "query Me { getCurrentUser { externalId } }")
    two = "subscription A { currentUser { name } } subscription B { currentUser { email } }"
    await talk.subscribe("g", two, name="B")
    out = await talk.read(7)  # e: next and complete; g: next; the others an error each
    return sorted(out, key=lambda m: (m.get("id"), m.get("type")))


async def user_deletion_completes(talk: Talk) -> Transcript:
    from datadiver_graph.domain import users

    await talk.subscribe("me", "subscription { currentUser { externalId name } }")
    out = await talk.read(1)
    await users.delete_from_clerk(talk.served.store, f"user_{talk.tag}")
    return out + await talk.read(1)


async def duplicate_id(talk: Talk) -> Transcript:
    await talk.subscribe("1", SESSION, {"id": f"sess-{talk.tag}"})
    out = await talk.read(1)
    await talk.subscribe("1", SESSION, {"id": f"sess-{talk.tag}"})
    return out + await talk.until_closed()


async def syntax_error(talk: Talk) -> Transcript:
    await talk.subscribe("1", "subscription { session(sessionId: ")
    return await talk.reply()


async def unknown_operation_name(talk: Talk) -> Transcript:
    await talk.subscribe("1", SESSION, {"id": "x"}, name="Unknown")
    return await talk.reply()


async def several_operations_and_no_name(talk: Talk) -> Transcript:
    two = "subscription A { currentUser { name } } subscription B { currentUser { email } }"
    await talk.subscribe("1", two)
    return await talk.reply()


def _untagged(value: Any, tag: str) -> Any:
    if isinstance(value, str):
        return value.replace(tag, "<tag>")
    if isinstance(value, dict):
        return {k: _untagged(v, tag) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_untagged(v, tag) for v in value)
    return value


OPERATIONS_LOG = "datadiver_graph.graphql.operations"


def operation_lines(records: list[logging.LogRecord], tag: str) -> list[Any]:
    fields = ("event", "operation", "operation_type", "user_id", "outcome", "error_codes", "reason")
    found = [
        _untagged(tuple(getattr(r, name, None) for name in fields), tag)
        for r in records
        if r.name == OPERATIONS_LOG
    ]
    return sorted(found, key=repr)


def subscriptions_ended(records: list[logging.LogRecord]) -> bool:
    events = [getattr(r, "event", None) for r in records if r.name == OPERATIONS_LOG]
    return events.count("subscription_start") == events.count("subscription_end")


@pytest.mark.parametrize(
    "conversation",
    [
        snapshot_changes_complete,
        refusals,
        user_deletion_completes,
        duplicate_id,
        syntax_error,
        unknown_operation_name,
        several_operations_and_no_name,
    ],
)
async def test_our_handler_says_what_strawberrys_says(
    served: Served,
    token_for: Callable[[str], str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    conversation: Callable[[Talk], Awaitable[Transcript]],
) -> None:
    caplog.set_level(logging.INFO, logger=OPERATIONS_LOG)
    await create_session(served, token_for("user_bob"), "sess-bob")
    heard = []
    for handler in (BaseGraphQLTransportWSHandler, LiveTransportWSHandler):
        monkeypatch.setattr(GraphQLView, "graphql_transport_ws_handler_class", handler)
        tag = handler.__name__
        token = token_for(f"user_{tag}")
        await make_user(served.store, f"user_{tag}")
        await create_session(served, token, f"sess-{tag}", {"n": 1})
        caplog.clear()
        async with open_ws(served.url, TRANSPORT_WS, bearer(token)) as ws:
            transcript = await conversation(Talk(ws, served, tag, token))
        await eventually(
            lambda: (
                served.store.events.stats()["subscriptions"] == 0
                and subscriptions_ended(caplog.records)
            ),
            "every subscription over, and logged",
        )
        heard.append((_untagged(transcript, tag), operation_lines(caplog.records, tag)))
    theirs, ours = heard
    assert ours[0] == theirs[0]  # what the client heard
    assert ours[1] == theirs[1]  # what the operations log says


# --- 2. what it is for -------------------------------------------------------------------------


def live_operations() -> list[LiveOperation]:
    return [o for o in gc.get_objects() if type(o) is LiveOperation]


async def test_idle_subscriptions_keep_no_task(
    served: Served, token_for: Callable[[str], str]
) -> None:
    token = token_for("user_ada")
    await asyncio.sleep(0.1)
    before = task_count()
    async with (
        open_ws(served.url, TRANSPORT_WS, bearer(token)) as first,
        open_ws(served.url, TRANSPORT_WS, {"serviceKey": SERVICE_KEY}) as second,
    ):
        ops = [await first.subscribe(SESSION, {"id": f"s-{n}"}) for n in range(10)]
        other = [await second.subscribe(SESSION, {"id": f"t-{n}"}) for n in range(5)]
        for op in ops:
            assert await first.data(op) == {"session": None}
        for op in other:
            assert await second.data(op) == {"session": None}
        assert served.store.events.stats()["subscriptions"] == 15
        # One task per connection (uvicorn's), none per subscription.
        await eventually(lambda: task_count() == before + 2, "one task per connection")
        assert all(op.task is None for op in live_operations())

        # An event wakes one subscription for as long as it takes to deliver it.
        result = await gql(served.http, CREATE_SESSION, {"sessionId": "s-3"}, token=token)
        assert result.errors == [], result.body
        assert (await first.data(ops[3]))["session"]["sessionId"] == "s-3"
        await eventually(lambda: task_count() == before + 2, "the delivery task is gone")
        active = served.app.state.metrics.active_subscriptions
        assert active._value.get() == 15
    await eventually(lambda: task_count() <= before, "tasks back to baseline")
    assert served.store.events.stats()["subscriptions"] == 0
    assert served.app.state.metrics.active_subscriptions._value.get() == 0


SESSION_RECORD = {
    "_id": "x" * 24,
    "sessionId": "sess-mem",
    "userId": "user_ada",
    "active": True,
    "metadata": {},
    "createdAt": 1,
    "lastActivity": 1,
    "updatedAt": 1,
    "endedAt": None,
}


@asynccontextmanager
async def watched_session(
    served: Served, token: str
) -> AsyncIterator[Callable[[range], Awaitable[None]]]:
    """A subscription to one session; yields `deliver(versions)`: publish, await each."""
    await create_session(served, token, "sess-mem")
    async with open_ws(served.url, TRANSPORT_WS, bearer(token)) as ws:
        op = await ws.subscribe(SESSION, {"id": "sess-mem"})
        assert (await ws.data(op))["session"]["version"] == 1

        async def deliver(versions: range) -> None:
            for version in versions:
                event = Event("session.updated", {**SESSION_RECORD, "version": version})
                await served.store.events.publish((session_channel("sess-mem"),), event)
                assert (await ws.data(op))["session"]["version"] == version

        yield deliver


async def test_delivering_events_keeps_no_memory_per_event(
    served: Served, token_for: Callable[[str], str]
) -> None:
    async with watched_session(served, token_for("user_ada")) as deliver:
        await deliver(range(2, 202))  # warm: caches, pools
        tracemalloc.start()
        try:
            gc.collect()  # what is unreachable does not count, only what stays alive
            before = tracemalloc.take_snapshot()
            await deliver(range(202, 1202))
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    # The leak this guards against grew ~1 KiB per event: 1,000 events would be ~1 MiB.
    assert grown < 100 * 1024, f"{grown} bytes more after 1,000 events"


async def test_delivering_an_event_leaves_no_executor_for_the_garbage_collector(
    served: Served, token_for: Callable[[str], str]
) -> None:
    """Freed as soon as the event is sent: left in reference cycles, thousands of events a
    second would keep the collector busy, and its pauses delay every subscriber."""
    async with watched_session(served, token_for("user_ada")) as deliver:
        await deliver(range(2, 12))
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            await deliver(range(12, 62))
            gc.collect()
            executors = [o for o in gc.garbage if issubclass(type(o), Executor)]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    assert executors == []
