"""Generated queries, valid and invalid, against the production configuration.

Whatever a client sends, the answer is never a 500, never an INTERNAL error, and every
error carries a known code. Over WebSocket (both subprotocols) the same holds for every
message the server sends, a connection ends only with a close code the protocol
documents, and the server logs no error and no traceback.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import warnings
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from graphql import GraphQLSchema, StringValueNode, build_schema, print_ast
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis_graphql import Mode, from_schema, nodes, queries
from pydantic import SecretStr
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from datadiver_graph.app import create_app
from datadiver_graph.config import Settings
from datadiver_graph.storage.mongo import Database
from tests.servers import serve_app
from tests.ws_client import LEGACY_WS, PROTOCOLS, TRANSPORT_WS, ws_url

SERVICE_KEY = "fuzz-service-key-0123456789"
SCHEMA = (Path(__file__).parent.parent / "schema.graphql").read_text()
KNOWN_CODES = {
    "UNAUTHENTICATED",
    "FORBIDDEN",
    "NOT_FOUND",
    "BAD_USER_INPUT",
    "CONFLICT",
    "SERVICE_UNAVAILABLE",
    "TIMEOUT",
    "GRAPHQL_PARSE_FAILED",
    "GRAPHQL_VALIDATION_FAILED",
    "QUERY_TOO_DEEP",
    "TOO_MANY_ALIASES",
    "TOO_MANY_TOKENS",
    "TOO_MANY_DIRECTIVES",
    "INTROSPECTION_DISABLED",
    "BAD_REQUEST",
    "REQUEST_TOO_LARGE",
    "VARIABLES_TOO_LARGE",
    "RATE_LIMITED",
}
SCALARS = {
    "JSON": st.builds(
        nodes.String, st.text(max_size=20)
    ),  # a string is valid JSON; the domain must refuse it where an object is needed
    "DateTime": st.just(StringValueNode(value="2026-01-01T00:00:00.000Z")),
}


def production_settings(settings: Settings, **overrides: Any) -> Settings:
    return settings.model_copy(
        update={
            "datadiver_env": "production",
            "clerk_issuer": ["https://clerk.example.com"],
            "clerk_webhook_secret": SecretStr("whsec_" + "A" * 32),
            "service_api_keys": [SERVICE_KEY],
            "rate_limit_per_minute": 0,
            **overrides,
        }
    )


def check(post: Callable[[str], httpx.Response], query: str) -> None:
    response = post(query)
    assert response.status_code < 500, (query, response.text)
    body = response.json()
    batches = body if isinstance(body, list) else [body]
    for item in batches:
        for error in item.get("errors") or []:
            code = (error.get("extensions") or {}).get("code")
            assert code in KNOWN_CODES, (query, error)
            assert "Traceback" not in error["message"]


@pytest.mark.parametrize("mode", [Mode.POSITIVE, Mode.NEGATIVE])
async def test_generated_operations_never_fail_inside(
    settings: Settings, database: Database, mode: Mode
) -> None:
    async with serve_app(create_app(production_settings(settings))) as url:
        with httpx.Client(base_url=url, timeout=10) as client:

            def post(query: str) -> httpx.Response:
                return client.post(
                    "/graphql",
                    json={"query": query},
                    headers={"x-service-key": SERVICE_KEY},
                )

            @hypothesis_settings(
                max_examples=120,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
                database=None,
            )
            @given(from_schema(SCHEMA, custom_scalars=SCALARS, mode=mode))
            def run(query: str) -> None:
                check(post, query)

            await asyncio.to_thread(run)


# -- WebSocket: generated documents and arbitrary frames, on both subprotocols -------------

# Small limits, so that messages either side of them stay cheap to send.
WS_LIMITS: dict[str, Any] = {
    "max_body_bytes": 4_096,
    "max_variables_bytes": 1_024,
    # Counted on every connection_init and operation, as in production, never reached.
    "rate_limit_per_minute": 1_000_000,
}
# Close codes the server may end a connection with (README "Troubleshooting", api/ws.py,
# strawberry's handlers): each a refusal the protocol documents; 1011 only after the
# legacy protocol's connection_error, never for a crash.
CLOSE_CODES = {
    TRANSPORT_WS: {
        1009,  # a message over MAX_BODY_BYTES
        4400,  # an invalid message, or a document that does not parse
        4401,  # subscribe before connection_ack
        4403,  # connection_init refused
        4409,  # subscribe reusing a running operation's id
        4429,  # a second connection_init
    },
    LEGACY_WS: {
        1000,  # connection_terminate; connection_init with a payload that is no object
        1002,  # a binary frame
        1009,
        1011,  # after connection_error: connection_init refused
        4401,  # start before connection_ack
        4429,  # a second connection_init
    },
}
SERVER_MESSAGES = {
    TRANSPORT_WS: {"connection_ack", "next", "error", "complete", "ping", "pong"},
    LEGACY_WS: {"connection_ack", "connection_error", "ka", "data", "error", "complete"},
}
# Python's own words, which no error a client sees may carry (production masks them).
UNMASKED = (
    "Traceback",
    "object is not",
    "object has no attribute",
    "KeyError",
    "NoneType",
    "TypeError",
    "AttributeError",
    "unexpected keyword",
    "Internal server error",
)
# How long the server may stay silent before it is taken to have answered everything.
QUIET = 0.15
EXAMPLES = 80

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()  # past 64 bits too
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
# A value of every JSON type as often as any other (for a field of the wrong type): the
# type is drawn first, since one_of over nested strategies rarely yields a bare number.
_TYPES = {
    "boolean": st.booleans(),
    "integer": st.integers(),
    "float": st.floats(allow_nan=False, allow_infinity=False),
    "string": st.text(max_size=12),
    "array": st.lists(JSON_VALUES, max_size=3),
    "object": st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3),
}
ANY_TYPE = st.sampled_from(sorted(_TYPES)).flatmap(_TYPES.__getitem__)
VARIABLES = st.dictionaries(
    st.sampled_from(["id", "m", "userId"]) | st.text(max_size=6), JSON_VALUES, max_size=3
)
# Real operations with variables, for random payloads to reach the resolvers through.
DOCUMENTS = (
    "{ __typename }",
    "{ getCurrentUser { externalId name } }",
    "query Me { getCurrentUser { externalId } } query Other { __typename }",
    "query($id: String!) { getUser(userId: $id) { externalId preferences } }",
    "mutation($id: String, $m: JSON) { createSession(sessionId: $id, metadata: $m) { sessionId } }",
    "mutation($m: JSON) { updateUser(preferences: $m) { preferences } }",
    "subscription { currentUser { externalId } }",
    "subscription($id: String!) { user(userId: $id) { externalId } }",
    "subscription($id: String!) { session(sessionId: $id) { sessionId metadata } }",
    "subscription { currentUser { id } billingStatus { status } }",  # two root fields
    "{ __schema { types { name } } }",  # introspection: off in production
    "{ getCurrentUser { externalId ",  # does not parse
)
# Subscriptions that stay open (for a user, and for a service), so that ids get reused.
LIVE = (
    "subscription { currentUser { externalId } }",
    'subscription { user(userId: "user_fuzz") { externalId } }',
)


def subscription_documents(mode: Mode) -> st.SearchStrategy[str]:
    """Subscriptions, one root field each. hypothesis-graphql writes queries and mutations
    only, so it writes queries of a schema whose Query type is our Subscription type."""
    full = build_schema(SCHEMA)
    assert full.subscription_type is not None
    types = [kind for name, kind in full.type_map.items() if not name.startswith("__")]
    as_query = GraphQLSchema(query=full.subscription_type, types=types)
    return st.one_of(
        [
            queries(
                as_query,
                fields=[name],
                custom_scalars=SCALARS,
                mode=mode,
                print_ast=lambda document: "subscription " + print_ast(document),
            )
            for name in full.subscription_type.fields
        ]
    )


def generated_documents() -> st.SearchStrategy[str]:
    return st.one_of(
        from_schema(SCHEMA, custom_scalars=SCALARS, mode=Mode.POSITIVE),
        subscription_documents(Mode.POSITIVE),
        from_schema(SCHEMA, custom_scalars=SCALARS, mode=Mode.NEGATIVE),
        subscription_documents(Mode.NEGATIVE),
    )


def operation_type(protocol: str) -> str:
    return "subscribe" if protocol == TRANSPORT_WS else "start"


def operation_payloads() -> st.SearchStrategy[dict[str, Any]]:
    """A subscribe/start payload: well-formed, then often one field (named uniformly, so
    each is reached) set to a value of any type, or removed."""
    persisted = st.fixed_dictionaries(
        {
            "persistedQuery": st.fixed_dictionaries(
                {"version": st.just(1) | ANY_TYPE, "sha256Hash": st.text(max_size=64)}
            )
        }
    )
    well_formed = st.fixed_dictionaries(
        {"query": st.sampled_from(DOCUMENTS)},
        optional={
            "variables": VARIABLES,
            "operationName": st.sampled_from(["Me", "Other", "Nope"]),
            "extensions": persisted,
            "documentId": st.text(max_size=20),
        },
    )
    # Hypothesis tries the first choices most: the malformed ones come first.
    fields = ["operationName", "variables", "query", "extensions", "documentId", None]
    return st.builds(
        with_field,
        well_formed,
        st.sampled_from(fields),
        st.sampled_from(["any", "null", "absent"]).flatmap(
            lambda kind: {"absent": st.just(ABSENT), "null": st.none(), "any": ANY_TYPE}[kind]
        ),
    )


ABSENT = object()


def with_field(payload: dict[str, Any], name: str | None, value: object) -> dict[str, Any]:
    if name is None:
        return payload
    if value is ABSENT:
        return {key: old for key, old in payload.items() if key != name}
    return {**payload, name: value}


def messages() -> st.SearchStrategy[dict[str, Any]]:
    """A message of either protocol or of none: any `type`, `id` and `payload` shape, ids
    drawn from few so that they repeat."""
    types = st.sampled_from(
        [
            "connection_init",
            "connection_terminate",
            "ping",
            "pong",
            "subscribe",
            "start",
            "stop",
            "complete",
            "next",
            "data",
            "error",
            "ka",
        ]
    )
    return st.fixed_dictionaries(
        {},
        optional={
            "type": types | st.text(max_size=8) | JSON_VALUES,
            "id": st.sampled_from(["1", "2", ""]) | JSON_VALUES,
            "payload": operation_payloads() | JSON_VALUES,
        },
    )


def padded(kind: str, target: int, char: str, *, variables_only: bool) -> str:
    """A subscribe/start message of `target` bytes of UTF-8 (or whose variables are),
    to within one character."""
    variables = {"pad": ""}
    message = {
        "id": "big",
        "type": kind,
        "payload": {"query": "{ __typename }", "variables": variables},
    }
    base = len(dumps(variables if variables_only else message).encode())
    variables["pad"] = char * max(0, (target - base) // len(char.encode()))
    return dumps(message)


def near_the_limits(protocol: str) -> st.SearchStrategy[str]:
    """Messages a few bytes either side of MAX_BODY_BYTES, and variables either side of
    MAX_VARIABLES_BYTES, in characters of one to four bytes."""
    kind = operation_type(protocol)
    body, variables = WS_LIMITS["max_body_bytes"], WS_LIMITS["max_variables_bytes"]
    chars = st.sampled_from(["x", "é", "€", "😀"])
    return st.builds(
        lambda target, char: padded(kind, target, char, variables_only=False),
        st.integers(body - 8, body + 8),
        chars,
    ) | st.builds(
        lambda target, char: padded(kind, target, char, variables_only=True),
        st.integers(variables - 8, variables + 8),
        chars,
    )


def frames(protocol: str, inits: list[str]) -> st.SearchStrategy[str | bytes]:
    """One frame: most often an operation with a random payload and id, else a live
    subscription (its id reused by the next), a complete/stop, a message of any shape, a
    connection_init (valid, or with any payload), arbitrary text or JSON, bytes, or a
    message near a size limit."""
    kind = operation_type(protocol)
    ids = st.sampled_from(["1", "2"]) | ANY_TYPE
    operations = st.builds(
        lambda payload, op_id: dumps({"id": op_id, "type": kind, "payload": payload}),
        operation_payloads(),
        ids,
    )
    live = st.builds(
        lambda query, op_id: dumps({"id": op_id, "type": kind, "payload": {"query": query}}),
        st.sampled_from(LIVE),
        st.sampled_from(["1", "2"]),
    )
    ends = st.builds(
        lambda end, op_id: dumps({"id": op_id, "type": end}),
        st.sampled_from(["complete", "stop"]),
        ids,
    )
    credentials = st.fixed_dictionaries(
        {},
        optional={
            "authToken": st.text(max_size=20) | JSON_VALUES,
            "Authorization": st.sampled_from(["Bearer ", "Bearer x.y.z", "Basic a"]) | JSON_VALUES,
            "serviceKey": st.sampled_from([SERVICE_KEY[:-1], ""]) | JSON_VALUES,
        },
    )
    inits_of_any_payload = (credentials | JSON_VALUES).map(
        lambda payload: dumps({"type": "connection_init", "payload": payload})
    )
    return st.one_of(
        operations,
        operations,
        operations,
        live,
        ends,
        messages().map(dumps),
        st.sampled_from(inits),
        inits_of_any_payload,
        st.text(max_size=40),
        JSON_VALUES.map(dumps),
        st.binary(max_size=40),
        near_the_limits(protocol),
    )


def dumps(value: object) -> str:
    # json, not orjson: it writes integers past 64 bits as they are.
    return json.dumps(value, ensure_ascii=False)


@dataclass
class Exchange:
    sent: list[str | bytes]
    received: list[str | bytes]
    close: tuple[int, str] | None  # the server's close code and reason, if it closed


async def exchange(
    url: str, protocol: str, sent: list[str | bytes], *, answered: str | None = None
) -> Exchange:
    """Send the frames in turn, then read whatever the server answers until it closes,
    falls quiet, or (given `answered`, an operation id) sends its first message for that
    operation. graphql-transport-ws answers a ping in turn: a barrier."""
    received: list[str | bytes] = []
    async with connect(
        ws_url(url),
        subprotocols=[protocol],  # type: ignore[list-item]
        ping_interval=None,
        open_timeout=10,
        close_timeout=2,
        max_size=None,
    ) as ws:
        try:
            for frame in sent:
                await ws.send(frame)
            if protocol == TRANSPORT_WS:
                await ws.send('{"type": "ping"}')
                async with asyncio.timeout(10):
                    while '"pong"' not in (frame := await ws.recv()):
                        received.append(frame)
                    received.append(frame)
            while answered is None or not any(is_for(f, answered) for f in received):
                async with asyncio.timeout(QUIET if answered is None else 10):
                    received.append(await ws.recv())
        except TimeoutError:
            pass
        except ConnectionClosed as closed:
            code = (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else (-1, "no close frame")
            return Exchange(sent, received, code)
    return Exchange(sent, received, None)


def is_for(frame: str | bytes, operation_id: str) -> bool:
    try:
        message = json.loads(frame)
    except ValueError:
        return False
    return isinstance(message, dict) and message.get("id") == operation_id


def errors_in(message: dict[str, Any]) -> list[Any]:
    payload = message.get("payload")
    if message["type"] in ("next", "data"):
        assert isinstance(payload, dict), message
        return list(payload.get("errors") or [])
    if message["type"] in ("error", "connection_error"):
        if isinstance(payload, list):
            return payload
        return [] if payload is None else [payload]
    return []


def check_exchange(protocol: str, seen: Exchange) -> None:
    """Every message the server sent is one of its protocol's, every error carries a known
    code and no Python text, and a close has a code the protocol documents."""
    for frame in seen.received:
        assert isinstance(frame, str), f"a binary frame: {frame!r}"
        message = json.loads(frame)
        assert message.get("type") in SERVER_MESSAGES[protocol], message
        for error in errors_in(message):
            assert isinstance(error, dict) and isinstance(error.get("message"), str), message
            code = (error.get("extensions") or {}).get("code")
            assert code in KNOWN_CODES, error
            assert not any(words in error["message"] for words in UNMASKED), error
    if seen.close is not None:
        code, reason = seen.close
        assert code in CLOSE_CODES[protocol], seen.close
        if code == 1011:  # the legacy refusal, never a crash: connection_error said why
            assert any('"connection_error"' in frame for frame in seen.received), seen
        assert not any(words in reason for words in UNMASKED), seen.close


def troubles(records: list[logging.LogRecord]) -> list[str]:
    """The records a production log must never hold: an error, or any traceback."""
    return [
        f"{record.levelname} {record.name}: {record.getMessage()}"
        for record in records
        if record.levelno >= logging.ERROR or record.exc_info is not None
    ]


class Recorder(logging.Handler):
    """Keeps every record it is given, from any thread."""

    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class WebSocketFuzz:
    url: str
    protocol: str
    inits: list[str]  # connection_init messages with valid credentials: a user, a service
    records: list[logging.LogRecord]
    loop: asyncio.AbstractEventLoop

    def run(self, frames: list[str | bytes], *, answered: str | None = None) -> Exchange:
        """One connection, from hypothesis' thread, on the server's loop; checked."""
        logged = len(self.records)
        seen = self.submit(exchange(self.url, self.protocol, frames, answered=answered))
        check_exchange(self.protocol, seen)
        assert troubles(self.records[logged:]) == [], seen
        return seen

    def submit(self, work: Coroutine[Any, Any, Exchange]) -> Exchange:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout=60)


@pytest.fixture(params=PROTOCOLS)
async def ws_fuzz(
    request: pytest.FixtureRequest,
    clerk_settings: Settings,
    database: Database,
    token_for: Callable[[str], str],
    caplog: pytest.LogCaptureFixture,
) -> Any:
    """A production app on one subprotocol, and the log it writes while the test runs; at
    the end (the server stopped, its connections closed) the whole log is checked, and
    Python's RuntimeWarnings (a coroutine never awaited), which production logs too."""
    configured = production_settings(
        clerk_settings, clerk_issuer=clerk_settings.clerk_issuer, **WS_LIMITS
    )
    inits = [
        dumps({"type": "connection_init", "payload": {"authToken": token_for("user_fuzz")}}),
        dumps({"type": "connection_init", "payload": {"serviceKey": SERVICE_KEY}}),
    ]
    caplog.set_level(logging.WARNING)
    # Not caplog.records: pytest starts a new list for each phase (setup, call, teardown).
    log = Recorder(logging.WARNING)
    root, uvicorn_log = logging.getLogger(), logging.getLogger("uvicorn")
    root.addHandler(log)
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always", RuntimeWarning)
        try:
            async with serve_app(create_app(configured)) as url:
                # uvicorn's records stop at its own logger, and its log config (applied as
                # the server starts) drops handlers added before: the recorder joins now.
                uvicorn_log.addHandler(log)
                loop = asyncio.get_running_loop()
                yield WebSocketFuzz(url, request.param, inits, log.records, loop)
        finally:
            uvicorn_log.removeHandler(log)
            root.removeHandler(log)
        gc.collect()  # a coroutine never awaited is reported when it is collected
        assert troubles(log.records) == []
        assert [str(w.message) for w in warned if issubclass(w.category, RuntimeWarning)] == []


FUZZ_SETTINGS = hypothesis_settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI is deterministic
    database=None,
    suppress_health_check=list(HealthCheck),
)


async def test_generated_websocket_operations_never_fail_inside(ws_fuzz: WebSocketFuzz) -> None:
    """Documents hypothesis-graphql writes from the schema (queries, mutations and
    subscriptions, valid and not), each sent as subscribe/start with random variables,
    are answered as their protocol says: a result, an error, or (a document that does not
    parse, on graphql-transport-ws) a 4400 close."""
    kind = operation_type(ws_fuzz.protocol)

    @FUZZ_SETTINGS
    @given(
        document=generated_documents(),
        variables=VARIABLES,
        init=st.sampled_from(ws_fuzz.inits),
    )
    def run(document: str, variables: dict[str, Any], init: str) -> None:
        operation = {
            "id": "op",
            "type": kind,
            "payload": {"query": document, "variables": variables},
        }
        seen = ws_fuzz.run([init, dumps(operation)], answered="op")
        answers = [json.loads(frame) for frame in seen.received]
        assert answers[0]["type"] == "connection_ack", seen
        if not any(answer.get("id") == "op" for answer in answers):
            assert seen.close is not None and seen.close[0] == 4400, seen

    await asyncio.to_thread(run)


async def test_arbitrary_websocket_frames_never_fail_inside(ws_fuzz: WebSocketFuzz) -> None:
    """Any sequence of frames (text, JSON, bytes, messages of any shape, before and after
    connection_init, ids reused, sizes either side of the limits) gets answers of the
    protocol, or a documented close; never INTERNAL, Python's words or a logged error."""

    @FUZZ_SETTINGS
    @given(
        init_first=st.sampled_from([True, True, False]),  # mostly past the handshake
        sent=st.lists(frames(ws_fuzz.protocol, ws_fuzz.inits), min_size=1, max_size=6),
        init=st.sampled_from(ws_fuzz.inits),
    )
    def run(init_first: bool, sent: list[str | bytes], init: str) -> None:
        ws_fuzz.run([init, *sent] if init_first else sent)

    await asyncio.to_thread(run)
