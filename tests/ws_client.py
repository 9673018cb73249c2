"""Small real GraphQL-over-WebSocket clients for tests, for both protocols Strawberry speaks.

- graphql-transport-ws (the `graphql-ws` npm library): connection_init/connection_ack,
  subscribe/next/error/complete, ping/pong.
- graphql-ws (Apollo's legacy subscriptions-transport-ws): connection_init/connection_ack/ka,
  start/data/error/complete/stop, connection_terminate.

Both clients expose the same calls and report operation messages in one shape, `Message`
with kind "next" | "error" | "complete", so a test can be parametrized over the protocol.
Nothing runs in the background: frames are read only when the test asks for a message.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"
PROTOCOLS = (TRANSPORT_WS, LEGACY_WS)
TIMEOUT = 5.0


def ws_url(http_url: str) -> str:
    return http_url.replace("http://", "ws://", 1).rstrip("/") + "/graphql"


@dataclass
class Message:
    kind: str  # "next" | "error" | "complete"
    id: str
    payload: Any = None

    @property
    def data(self) -> Any:
        assert self.kind == "next", f"expected a result, got {self}"
        assert not self.payload.get("errors"), f"unexpected errors: {self.payload['errors']}"
        return self.payload["data"]

    @property
    def error_messages(self) -> list[str]:
        """Error texts from an `error` message or from a result carrying errors."""
        return [error["message"] for error in _errors_of(self)]

    @property
    def error_codes(self) -> list[str | None]:
        return [(error.get("extensions") or {}).get("code") for error in _errors_of(self)]


class ServerClosed(Exception):
    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"server closed the connection: {code} {reason!r}")
        self.code = code
        self.reason = reason


@dataclass
class GraphQLWebSocket:
    ws: ClientConnection
    protocol: str
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _pending: dict[str, deque[Message]] = field(default_factory=dict)
    keep_alives: int = 0  # "ka" (graphql-ws) messages seen
    pongs: int = 0
    other: list[dict[str, Any]] = field(default_factory=list)  # anything else the server sent

    # -- sending ----------------------------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def init(self, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """connection_init; returns the first non-keep-alive reply (normally connection_ack)."""
        message: dict[str, Any] = {"type": "connection_init"}
        if params is not None:
            message["payload"] = params
        await self.send(message)
        while True:
            reply = await self.recv_json()
            if reply.get("type") == "ka":
                self.keep_alives += 1
                continue
            return reply

    async def subscribe(
        self, query: str, variables: dict[str, Any] | None = None, *, id: str | None = None
    ) -> str:
        op_id = id or str(next(self._ids))
        payload = {"query": query, "variables": variables or {}}
        kind = "subscribe" if self.protocol == TRANSPORT_WS else "start"
        await self.send({"id": op_id, "type": kind, "payload": payload})
        return op_id

    async def unsubscribe(self, op_id: str) -> None:
        kind = "complete" if self.protocol == TRANSPORT_WS else "stop"
        await self.send({"id": op_id, "type": kind})

    async def ping(self) -> None:
        assert self.protocol == TRANSPORT_WS
        await self.send({"type": "ping"})

    async def terminate(self) -> None:
        """Leave politely: connection_terminate (graphql-ws), else a normal close."""
        if self.protocol == LEGACY_WS:
            await self.send({"type": "connection_terminate"})
        else:
            await self.ws.close()

    # -- receiving --------------------------------------------------------------------------

    async def recv_json(self, within: float = TIMEOUT) -> dict[str, Any]:
        try:
            async with asyncio.timeout(within):
                frame = await self.ws.recv()
        except ConnectionClosed as exc:
            raise ServerClosed(*_close_of(exc)) from None
        if not isinstance(frame, str):
            # Both protocols are text protocols: graphql-ws, gql and browsers refuse bytes.
            raise AssertionError(f"the server sent a binary frame: {frame[:80]!r}")
        message: dict[str, Any] = json.loads(frame)
        return message

    async def _read_one(self) -> None:
        raw = await self.recv_json()
        kind = raw.get("type")
        if kind == "ka":
            self.keep_alives += 1
        elif kind == "ping":
            await self.send({"type": "pong"})
        elif kind == "pong":
            self.pongs += 1
        elif kind in ("next", "data", "error", "complete"):
            normal = "next" if kind == "data" else kind
            op_id = str(raw.get("id"))
            self._pending.setdefault(op_id, deque()).append(
                Message(normal, op_id, raw.get("payload"))
            )
        else:
            self.other.append(raw)

    async def message(self, op_id: str, within: float = TIMEOUT) -> Message:
        """The next message for operation `op_id` (others are kept for their turn)."""
        async with asyncio.timeout(within):
            while not self._pending.get(op_id):
                await self._read_one()
        return self._pending[op_id].popleft()

    async def data(self, op_id: str, within: float = TIMEOUT) -> Any:
        """The next result's data for `op_id`; fails on an error, a completion or a timeout."""
        return (await self.message(op_id, within)).data

    async def wait_keep_alive(self, within: float = TIMEOUT) -> None:
        seen = self.keep_alives
        async with asyncio.timeout(within):
            while self.keep_alives == seen:
                await self._read_one()

    async def closed(self, within: float = TIMEOUT) -> tuple[int | None, str]:
        """Read (and drop) whatever arrives until the server closes; its close code and reason."""
        async with asyncio.timeout(within):
            while True:
                try:
                    await self.ws.recv()
                except ConnectionClosed as exc:
                    return _close_of(exc)

    def pending(self, op_id: str) -> list[Message]:
        return list(self._pending.get(op_id, ()))


def _errors_of(message: Message) -> list[dict[str, Any]]:
    if message.kind == "next":
        return list(message.payload.get("errors") or [])
    if isinstance(message.payload, list):  # graphql-transport-ws: a list of GraphQLErrors
        return message.payload
    if isinstance(message.payload, dict):  # graphql-ws: one error object
        return [message.payload]
    return []


def _close_of(exc: ConnectionClosed) -> tuple[int | None, str]:
    if exc.rcvd is not None:
        return exc.rcvd.code, exc.rcvd.reason
    return None, ""


def small_buffer_socket(url: str, receive_buffer: int) -> socket.socket:
    """A connected TCP socket with a small, fixed receive buffer (no autotuning), so a client
    that stops reading makes the server's writes back up after a few kilobytes."""
    parsed = urlparse(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect((parsed.hostname or "127.0.0.1", parsed.port or 80))
    sock.setblocking(False)
    return sock


@asynccontextmanager
async def open_ws(
    url: str,
    protocol: str,
    params: dict[str, Any] | None = None,
    *,
    init: bool = True,
    receive_buffer: int | None = None,
    max_queue: int = 16,
) -> AsyncIterator[GraphQLWebSocket]:
    """Connect to `url` (http(s) base URL or ws URL) speaking `protocol`; with `init`,
    send connection_init with `params` and require a connection_ack."""
    target = url if url.startswith("ws") else ws_url(url)
    options: dict[str, Any] = {}
    if receive_buffer is not None:
        options["sock"] = small_buffer_socket(target, receive_buffer)
    async with connect(
        target,
        subprotocols=[protocol],  # type: ignore[list-item]
        ping_interval=None,  # no client keep-alive task: tests count the loop's tasks
        max_queue=max_queue,
        open_timeout=TIMEOUT,
        close_timeout=2,
        **options,
    ) as ws:
        assert ws.subprotocol == protocol
        client = GraphQLWebSocket(ws, protocol)
        if init:
            reply = await client.init(params)
            assert reply.get("type") == "connection_ack", reply
        yield client
