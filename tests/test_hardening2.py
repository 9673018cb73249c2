"""Issue 16: the same limits on every transport, clean answers to malformed requests.

Each test drives a real server over real sockets, as the probe that found the problem did,
and runs in both modes (FAST_PATHS=true and false).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect

from datadiver_graph.app import create_app
from datadiver_graph.config import Settings
from datadiver_graph.dev.keys import mint_dev_token
from datadiver_graph.storage.mongo import Database
from tests.graphql_client import gql
from tests.servers import serve_app
from tests.ws_client import LEGACY_WS, PROTOCOLS, TRANSPORT_WS, open_ws, ws_url

KEY_A = "service-key-a-0123456789"
KEY_B = "service-key-b-0123456789"
ME = "{ getCurrentUser { externalId } }"
CREATE = "mutation($id: String!) { createSession(sessionId: $id) { sessionId } }"


@asynccontextmanager
async def served(settings: Settings, **overrides: Any) -> AsyncIterator[str]:
    configured = settings.model_copy(update={"service_api_keys": [KEY_A, KEY_B], **overrides})
    async with serve_app(create_app(configured)) as url:
        yield url


@pytest.fixture
def token(settings: Settings) -> Callable[[str], str]:
    return lambda user: mint_dev_token(settings, user)


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        f"{r.levelname} {r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.exc_info is not None or r.levelno >= logging.ERROR
    ]


# -- 1. the rate limit counts WebSocket operations and connections -------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_websocket_operations_count_against_the_rate_limit(
    settings: Settings, database: Database, token: Callable[[str], str], protocol: str
) -> None:
    """The budget is shared with HTTP: operations over the socket spend it, and the ones
    past it are refused with RATE_LIMITED, writes included; HTTP is then refused too."""
    ada = token("user_ada")
    async with served(settings, rate_limit_per_minute=6) as url:
        async with open_ws(url, protocol, {"authToken": ada}) as ws:  # 1 (connection_init)
            ids = [await ws.subscribe(CREATE if i % 2 else ME, {"id": f"ws{i}"}) for i in range(8)]
            first = [await ws.message(op_id) for op_id in ids]
        async with httpx.AsyncClient(base_url=url) as http:
            after = await gql(http, ME, token=ada)
    assert [m.kind for m in first[:5]] == ["next"] * 5
    assert [m.kind for m in first[5:]] == ["error"] * 3
    assert all(m.error_codes == ["RATE_LIMITED"] for m in first[5:])
    assert await database.sessions.count_documents({}) == 2  # ws1, ws3: ws5 and ws7 refused
    assert after.status == 429 and after.codes == ["RATE_LIMITED"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_connection_floods_are_closed_with_4429(
    settings: Settings, database: Database, token: Callable[[str], str], protocol: str
) -> None:
    ada = token("user_ada")
    async with served(settings, rate_limit_per_minute=3) as url:
        for _ in range(3):
            async with open_ws(url, protocol, {"authToken": ada}):
                pass
        async with open_ws(url, protocol, init=False) as ws:
            await ws.send({"type": "connection_init", "payload": {"authToken": ada}})
            reply = await ws.recv_json() if protocol == LEGACY_WS else None
            code, _ = await ws.closed()
        async with open_ws(url, protocol, {"authToken": token("user_bob")}):
            pass  # another identity has its own budget
    assert code == 4429
    if reply is not None:  # legacy graphql-ws: connection_error says why, then the close
        assert reply["type"] == "connection_error"
        assert reply["payload"]["extensions"]["code"] == "RATE_LIMITED"


async def test_each_service_key_has_its_own_budget(settings: Settings, database: Database) -> None:
    async with (
        served(settings, rate_limit_per_minute=2) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        a = [(await gql(http, "{ __typename }", service_key=KEY_A)).status for _ in range(3)]
        b = [(await gql(http, "{ __typename }", service_key=KEY_B)).status for _ in range(2)]
    assert a == [200, 200, 429]
    assert b == [200, 200]


# -- 2. legacy graphql-ws: one connection_init, one keep-alive ----------------------------


async def test_a_second_legacy_connection_init_is_refused(
    settings: Settings,
    database: Database,
    token: Callable[[str], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with (
        served(settings, rate_limit_per_minute=0) as url,
        open_ws(url, LEGACY_WS, {"authToken": token("user_ada")}) as ws,
    ):
        await ws.send({"type": "connection_init", "payload": {"authToken": token("user_ada")}})
        code, _ = await ws.closed()
    assert code == 4429
    assert ws.keep_alives <= 1 and ws.other == []
    assert tracebacks(caplog) == []


# -- 4, 7. malformed requests: 400 BAD_REQUEST, never a 500 or Python's own words ---------


@pytest.mark.parametrize(
    "body",
    [
        [1],
        [[{"query": "{ __typename }"}]],
        ["{ __typename }"],
        [None],
        1,
        "x",
        None,
        {"query": "{ __typename }", "operationName": 5},
        {"query": "{ __typename }", "operationName": ["a"]},
        {"query": "{ __typename }", "operationName": {"a": 1}},
        {"query": 5},
        {"query": "{ __typename }", "variables": [1]},
        {"query": "{ __typename }", "variables": "x"},
        {"query": "{ __typename }", "extensions": 5},
        {"query": "{ __typename }", "documentId": 5},
        [{"query": "{ __typename }", "operationName": 5}],
    ],
)
async def test_malformed_requests_are_bad_requests(
    http: httpx.AsyncClient, body: Any, caplog: pytest.LogCaptureFixture
) -> None:
    response = await http.post(
        "/graphql", content=orjson.dumps(body), headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "BAD_REQUEST"
    assert "object is not" not in error["message"]
    assert tracebacks(caplog) == []


# -- 5. subscriptions over HTTP ------------------------------------------------------------


async def test_subscriptions_over_http_are_refused(
    http: httpx.AsyncClient, token: Callable[[str], str], caplog: pytest.LogCaptureFixture
) -> None:
    auth = {"authorization": f"Bearer {token('user_ada')}"}
    answers = [
        await http.get("/graphql", params={"query": "subscription { currentUser { externalId } }"}),
        await http.post(
            "/graphql",
            json={"query": 'subscription { userSessions(userId: "other") { sessionId } }'},
            headers=auth,
        ),
        await http.post(
            "/graphql",
            json={
                "query": "query Q { __typename } subscription S { currentUser { id } }",
                "operationName": "S",
            },
            headers=auth,
        ),
    ]
    for response in answers:
        assert response.status_code == 400, response.text
        [error] = response.json()["errors"]
        assert error["extensions"]["code"] == "BAD_REQUEST"
        assert "WebSocket" in error["message"]
    assert tracebacks(caplog) == []


# -- 8. a client going away is not an error ------------------------------------------------


async def test_client_disconnects_are_not_logged_as_errors(
    app_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    host, port = app_url.removeprefix("http://").split(":")
    caplog.set_level(logging.INFO)
    for _ in range(3):
        _reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /graphql HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b'content-length: 1000\r\n\r\n{"query": '
        )
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()
        await writer.wait_closed()
    for protocol in PROTOCOLS:
        for _ in range(3):
            async with connect(ws_url(app_url), subprotocols=[protocol]):  # type: ignore[list-item]
                pass  # opened and closed idle
    await asyncio.sleep(0.2)
    assert tracebacks(caplog) == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_subscriptions_cut_short_leave_no_coroutine_unawaited(
    settings: Settings, database: Database, token: Callable[[str], str], protocol: str
) -> None:
    """A live subscription whose connection ends before its work starts (its id reused at
    once: 4409 on graphql-transport-ws; the client gone) is cancelled cleanly, without
    Python's "coroutine ... was never awaited" warning, which production logs. The
    WebSocket fuzz test (test_fuzz_queries.py) found it."""
    live = "subscription { currentUser { externalId } }"
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always", RuntimeWarning)
        async with served(settings, rate_limit_per_minute=0) as url:
            for _ in range(3):
                async with open_ws(url, protocol, {"authToken": token("user_ada")}) as ws:
                    await ws.subscribe(live, id="1")
                    await ws.subscribe(live, id="1")
                    if protocol == TRANSPORT_WS:
                        assert (await ws.closed())[0] == 4409
                async with open_ws(url, protocol, {"authToken": token("user_ada")}) as ws:
                    await ws.subscribe(live, id="1")  # and leaves at once
        gc.collect()  # a coroutine never awaited is reported when it is collected
    assert [str(w.message) for w in warned if issubclass(w.category, RuntimeWarning)] == []


# -- 9. HTTP's size limits over WebSocket --------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_websocket_messages_meet_the_size_limits(
    settings: Settings, database: Database, token: Callable[[str], str], protocol: str
) -> None:
    limits = {"max_variables_bytes": 1_024, "max_body_bytes": 8_192, "rate_limit_per_minute": 0}
    create = "mutation($m: JSON) { createSession(metadata: $m) { sessionId } }"
    async with (
        served(settings, **limits) as url,
        open_ws(url, protocol, {"authToken": token("user_ada")}) as ws,
    ):
        op = await ws.subscribe(create, {"m": {"blob": "y" * 2_000}})
        refused = await ws.message(op)
        fits = await ws.subscribe(create, {"m": {"blob": "y" * 100}})
        assert (await ws.message(fits)).kind == "next"
        await ws.subscribe(ME, {"pad": "z" * 10_000})
        code, _ = await ws.closed()
    assert refused.kind == "error" and refused.error_codes == ["VARIABLES_TOO_LARGE"]
    assert code == 1009
    assert await database.sessions.count_documents({}) == 1


# -- 11. integers past 64 bits -------------------------------------------------------------


@pytest.mark.parametrize("number", ["1180591620717411303424", "18446744073709551615"])
async def test_integers_past_64_bits_are_refused_not_rounded(
    settings: Settings, database: Database, token: Callable[[str], str], number: str
) -> None:
    body = (
        '{"query": "mutation($m: JSON) { createSession(metadata: $m) { sessionId } }",'
        ' "variables": {"m": {"n": ' + number + "}}}"
    )
    ada = token("user_ada")
    async with served(settings) as url, httpx.AsyncClient(base_url=url) as http:
        response = await http.post(
            "/graphql",
            content=body,
            headers={"content-type": "application/json", "authorization": f"Bearer {ada}"},
        )
        async with open_ws(url, TRANSPORT_WS, {"authToken": ada}) as ws:
            await ws.ws.send('{"id": "1", "type": "subscribe", "payload": ' + body + "}")
            message = await ws.message("1")
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "64 bits" in response.json()["errors"][0]["message"]
    assert message.error_codes == ["BAD_USER_INPUT"]
    assert await database.sessions.count_documents({}) == 0


async def test_large_integers_within_64_bits_are_stored_exactly(
    http: httpx.AsyncClient, database: Database, token: Callable[[str], str]
) -> None:
    body = (
        '{"query": "mutation($m: JSON) { createSession(metadata: $m) { metadata } }",'
        ' "variables": {"m": {"n": 9223372036854775807, "id": "123456789012345678901234"}}}'
    )
    response = await http.post(
        "/graphql",
        content=body,
        headers={"content-type": "application/json", "authorization": f"Bearer {token('a')}"},
    )
    metadata = response.json()["data"]["createSession"]["metadata"]
    assert metadata == {"n": 2**63 - 1, "id": "123456789012345678901234"}


# -- 11. a deleted user writes nothing; /metrics needs its token ---------------------------


async def test_a_deleted_users_token_writes_nothing(
    http: httpx.AsyncClient, store: Any, database: Database, token: Callable[[str], str]
) -> None:
    from datadiver_graph.domain import users

    ada = token("user_ada")
    created = await gql(http, CREATE, {"id": "before"}, token=ada)
    assert created.errors == []
    await users.delete_from_clerk(store, "user_ada")  # the tombstone; the token still verifies
    writes = [
        await gql(http, CREATE, {"id": "after"}, token=ada),
        await gql(http, 'mutation { touchSession(sessionId: "before") { version } }', token=ada),
        await gql(http, 'mutation { endSession(sessionId: "before") { active } }', token=ada),
        await gql(http, 'mutation { updateUser(name: "X") { name } }', token=ada),
        await gql(
            http,
            'mutation { createSession(userId: "user_ada") { sessionId } }',
            service_key=None,
            token=ada,
        ),
    ]
    assert [w.codes for w in writes] == [["FORBIDDEN"]] * len(writes)
    assert await database.sessions.count_documents({}) == 1
    stored = await database.sessions.find_one({"sessionId": "before"})
    assert stored is not None and stored["active"] is True and stored["version"] == 1


async def test_metrics_need_the_token_when_set_and_are_off_in_production_without(
    settings: Settings, database: Database
) -> None:
    from pydantic import SecretStr

    secret = "m" * 32
    production = {
        "datadiver_env": "production",
        "clerk_issuer": ["https://clerk.example.com"],
        "clerk_webhook_secret": SecretStr("whsec_" + "A" * 32),
    }
    async with served(settings, **production) as url, httpx.AsyncClient(base_url=url) as http:
        unset = await http.get("/metrics")
    async with (
        served(settings, **production, metrics_token=SecretStr(secret)) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        anonymous = await http.get("/metrics")
        wrong = await http.get("/metrics", headers={"authorization": "Bearer " + "x" * 32})
        right = await http.get("/metrics", headers={"authorization": f"Bearer {secret}"})
    async with served(settings) as url, httpx.AsyncClient(base_url=url) as http:
        development = await http.get("/metrics")
    assert unset.status_code == 404
    assert anonymous.status_code == 401 and wrong.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert right.status_code == 200 and "datadiver_http_requests_total" in right.text
    assert development.status_code == 200
