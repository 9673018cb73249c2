"""The Python `gql` library (4.4.0) as the AI backend uses it: a service key, HTTP and WebSocket.

The server is the real app under uvicorn on a free port (tests/servers.py); every operation
goes through gql's own transports: HTTPXAsyncTransport with `X-Service-Key`, and
WebsocketsTransport with `{"serviceKey": key}` as connection_init payload on both
subprotocols (graphql-transport-ws and the legacy graphql-ws).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import pytest
import websockets
from gql import Client, GraphQLRequest
from gql.transport.exceptions import (
    TransportConnectionFailed,
    TransportQueryError,
    TransportServerError,
)
from gql.transport.httpx import HTTPXAsyncTransport
from gql.transport.websockets import WebsocketsTransport

from datadiver_graph.app import create_app
from datadiver_graph.config import Settings
from datadiver_graph.storage.mongo import Database
from tests.clerk_fixtures import SERVICE_KEY
from tests.servers import serve_app

TRANSPORT_WS = WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL  # "graphql-transport-ws"
LEGACY_WS = WebsocketsTransport.APOLLO_SUBPROTOCOL  # "graphql-ws"
subprotocols = pytest.mark.parametrize("subprotocol", [TRANSPORT_WS, LEGACY_WS])

SESSION_FIELDS = "sessionId userId active metadata version"
CREATE_SESSION = f"""mutation Create($userId: String!, $sessionId: String, $metadata: JSON) {{
  createSession(userId: $userId, sessionId: $sessionId, metadata: $metadata) {{ {SESSION_FIELDS} }}
}}"""
UPDATE_SESSION = f"""mutation Update($sessionId: String!, $metadata: JSON, $active: Boolean) {{
  updateSession(sessionId: $sessionId, metadata: $metadata, active: $active) {{ {SESSION_FIELDS} }}
}}"""
GET_SESSION = f"""query Get($sessionId: String!) {{
  getSession(sessionId: $sessionId) {{ {SESSION_FIELDS} }}
}}"""
GET_USER_SESSIONS = f"""query List($userId: String!) {{
  getUserSessions(userId: $userId, activeOnly: false) {{
    nodes {{ {SESSION_FIELDS} }}
    pageInfo {{ hasNextPage }}
  }}
}}"""
WATCH_SESSION = f"""subscription Watch($sessionId: String!) {{
  session(sessionId: $sessionId) {{ {SESSION_FIELDS} }}
}}"""
WATCH_USER_SESSIONS = f"""subscription WatchList($userId: String!) {{
  userSessions(userId: $userId, activeOnly: false) {{ {SESSION_FIELDS} }}
}}"""

STEP = 5.0  # seconds any one message may take


def request(document: str, **variables: Any) -> GraphQLRequest:
    return GraphQLRequest(document, variable_values=variables)


@pytest.fixture
async def url(clerk_settings: Settings, database: Database) -> AsyncIterator[str]:
    """The full app (with SERVICE_KEY) under uvicorn; its /graphql URL over HTTP."""
    async with serve_app(create_app(clerk_settings)) as base:
        yield f"{base}/graphql"


# --- what the AI backend writes ---------------------------------------------------------------


def http_client(url: str, key: str = SERVICE_KEY) -> Client:
    return Client(transport=HTTPXAsyncTransport(url=url, headers={"X-Service-Key": key}))


def ws_client(url: str, subprotocol: str, key: str = SERVICE_KEY) -> Client:
    transport = WebsocketsTransport(
        url=url.replace("http://", "ws://", 1),
        init_payload={"serviceKey": key},
        subprotocols=[subprotocol],
    )
    return Client(transport=transport)


def error_codes(error: TransportQueryError) -> list[str]:
    return [e["extensions"]["code"] for e in error.errors or []]


async def next_result(results: AsyncGenerator[dict[str, Any], None]) -> dict[str, Any]:
    try:
        return await asyncio.wait_for(anext(results), STEP)
    except TimeoutError:
        raise AssertionError(f"no subscription result within {STEP} s") from None


# --- HTTP ---------------------------------------------------------------------------------------


async def test_http_service_key_creates_reads_and_merges_a_users_session(url: str) -> None:
    async with http_client(url) as api:
        created = await api.execute(
            request(
                CREATE_SESSION,
                userId="user_ada",
                sessionId="sess-1",
                metadata={"doc": "a.pdf", "model": "m1", "pages": [1, 2]},
            )
        )
        assert created["createSession"] == {
            "sessionId": "sess-1",
            "userId": "user_ada",
            "active": True,
            "metadata": {"doc": "a.pdf", "model": "m1", "pages": [1, 2]},
            "version": 1,
        }
        await api.execute(request(CREATE_SESSION, userId="user_ada", sessionId="sess-2"))
        await api.execute(request(CREATE_SESSION, userId="user_bob", sessionId="sess-bob"))

        # Merge by top-level key: given keys replace, null removes, others stay.
        updated = await api.execute(
            request(UPDATE_SESSION, sessionId="sess-1", metadata={"model": "m2", "pages": None})
        )
        assert updated["updateSession"]["metadata"] == {"doc": "a.pdf", "model": "m2"}
        assert updated["updateSession"]["version"] == 2

        got = await api.execute(request(GET_SESSION, sessionId="sess-1"))
        assert got["getSession"] == updated["updateSession"]
        missing = await api.execute(request(GET_SESSION, sessionId="sess-none"))
        assert missing == {"getSession": None}

        listed = await api.execute(request(GET_USER_SESSIONS, userId="user_ada"))
        nodes = listed["getUserSessions"]["nodes"]
        # Newest activity first (updateSession is not activity; touchSession is).
        assert [n["sessionId"] for n in nodes] == ["sess-2", "sess-1"]
        assert {n["userId"] for n in nodes} == {"user_ada"}
        assert listed["getUserSessions"]["pageInfo"] == {"hasNextPage": False}


async def test_http_service_key_must_name_a_user(url: str) -> None:
    async with http_client(url) as api:
        with pytest.raises(TransportQueryError) as refused:
            await api.execute(GraphQLRequest("{ getUserSessions { nodes { sessionId } } }"))
    assert error_codes(refused.value) == ["BAD_USER_INPUT"]
    assert "userId is required" in str(refused.value)


async def test_http_wrong_service_key_is_refused(url: str) -> None:
    async with http_client(url, key="svc-wrong-0123456789abcdef") as api:
        with pytest.raises(TransportQueryError) as refused:
            await api.execute(request(GET_SESSION, sessionId="sess-1"))
    assert error_codes(refused.value) == ["UNAUTHENTICATED"]
    assert "invalid service key" in str(refused.value)


# --- WebSocket ----------------------------------------------------------------------------------


@subprotocols
async def test_ws_subscriptions_get_the_snapshot_then_each_change_in_order(
    url: str, subprotocol: str
) -> None:
    async with http_client(url) as api:
        await api.execute(
            request(CREATE_SESSION, userId="user_ada", sessionId="sess-1", metadata={"step": 0})
        )
        async with ws_client(url, subprotocol) as live:
            assert live.transport.subprotocol == subprotocol  # type: ignore[attr-defined]
            session = live.subscribe(request(WATCH_SESSION, sessionId="sess-1"))
            sessions = live.subscribe(request(WATCH_USER_SESSIONS, userId="user_ada"))
            try:
                first = await next_result(session)
                assert first["session"]["version"] == 1
                assert first["session"]["metadata"] == {"step": 0}
                listed = await next_result(sessions)
                assert [s["sessionId"] for s in listed["userSessions"]] == ["sess-1"]

                # Changes made over HTTP, by the same service, arrive in order.
                for step in (1, 2, 3):
                    await api.execute(
                        request(UPDATE_SESSION, sessionId="sess-1", metadata={"step": step})
                    )
                for step in (1, 2, 3):
                    change = (await next_result(session))["session"]
                    assert (change["version"], change["metadata"]) == (step + 1, {"step": step})

                await api.execute(request(CREATE_SESSION, userId="user_ada", sessionId="sess-2"))
                # The list is re-sent on each change; the last one holds both sessions.
                seen: list[list[str]] = []
                while not seen or len(seen[-1]) < 2:
                    listed = await next_result(sessions)
                    seen.append([s["sessionId"] for s in listed["userSessions"]])
                assert seen[-1] == ["sess-2", "sess-1"]
                assert all(ids[-1] == "sess-1" for ids in seen)
            finally:
                await session.aclose()
                await sessions.aclose()


@subprotocols
async def test_ws_query_and_mutation_over_the_socket(url: str, subprotocol: str) -> None:
    async with ws_client(url, subprotocol) as live:
        created = await live.execute(
            request(CREATE_SESSION, userId="user_ada", sessionId="sess-ws", metadata={"a": 1})
        )
        assert created["createSession"]["userId"] == "user_ada"
        updated = await live.execute(
            request(UPDATE_SESSION, sessionId="sess-ws", metadata={"b": 2}, active=False)
        )
        assert updated["updateSession"]["metadata"] == {"a": 1, "b": 2}
        assert updated["updateSession"]["active"] is False
        got = await live.execute(request(GET_SESSION, sessionId="sess-ws"))
        assert got["getSession"] == updated["updateSession"]
        # An operation error arrives as gql's TransportQueryError, and the socket stays open.
        with pytest.raises(TransportQueryError) as refused:
            await live.execute(GraphQLRequest("{ getUserSessions { nodes { sessionId } } }"))
        assert error_codes(refused.value) == ["BAD_USER_INPUT"]
        listed = await live.execute(request(GET_USER_SESSIONS, userId="user_ada"))
        assert [n["sessionId"] for n in listed["getUserSessions"]["nodes"]] == ["sess-ws"]


async def test_ws_wrong_service_key_is_closed_with_4403(url: str) -> None:
    client = ws_client(url, TRANSPORT_WS, key="svc-wrong-0123456789abcdef")
    with pytest.raises(TransportConnectionFailed) as failed:
        async with client:
            pytest.fail("connected with a wrong service key")
    # gql wraps the close it read while waiting for connection_ack.
    closed = failed.value.__cause__
    assert isinstance(closed, websockets.exceptions.ConnectionClosedError), repr(closed)
    assert closed.rcvd is not None
    assert (closed.rcvd.code, closed.rcvd.reason) == (4403, "Forbidden")


async def test_legacy_ws_wrong_service_key_is_refused(url: str) -> None:
    """The legacy protocol has no 4403: connection_error, which gql raises as a server error
    carrying the payload (a GraphQL error with code UNAUTHENTICATED)."""
    client = ws_client(url, LEGACY_WS, key="svc-wrong-0123456789abcdef")
    with pytest.raises(TransportServerError) as failed:
        async with client:
            pytest.fail("connected with a wrong service key")
    assert "'code': 'UNAUTHENTICATED'" in str(failed.value), failed.value
    assert "unauthenticated: " in str(failed.value), failed.value
