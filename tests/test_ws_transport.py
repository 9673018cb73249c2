"""ws_transport: uvicorn's WebSocket protocol with less kept per connection, same behaviour.

Served by a real uvicorn (ws=WS_PROTOCOL, as `datadiver-graph serve` does) with a small
Starlette echo app, and driven by a real client, or by raw bytes where the wire matters.
"""

from __future__ import annotations

import asyncio
import base64
import heapq
import os
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.protocol import Protocol

from datadiver_graph.fastpaths.ws_transport import (
    WS_PROTOCOL,
    LeanEvent,
    LeanQueue,
    LeanWebSocketProtocol,
    PingWheel,
)
from datadiver_graph.storage.embedded import free_port

# Tests a fast path's own internals: skipped under FAST_PATHS=false (conftest.py).
pytestmark = pytest.mark.fast_paths

TIMEOUT = 5.0


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for `condition`, checking every few milliseconds, for at most TIMEOUT.

    For state uvicorn keeps (started, open connections), which signals no event to await.
    """
    async with asyncio.timeout(TIMEOUT):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert condition(), what


async def yield_to_others() -> None:
    """Let every task that is ready run until it next waits."""
    for _ in range(3):
        await asyncio.sleep(0)


# --- the containers ----------------------------------------------------------------------------


async def test_lean_queue_is_first_in_first_out_and_wakes_a_waiting_reader() -> None:
    queue: LeanQueue[int] = LeanQueue()
    assert queue.empty() and queue.qsize() == 0
    queue.put_nowait(1)
    queue.put_nowait(2)
    assert await queue.get() == 1
    reader = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert await asyncio.wait_for(reader, TIMEOUT) == 2
    waiting = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not waiting.done()
    queue.put_nowait(3)
    assert await asyncio.wait_for(waiting, TIMEOUT) == 3
    assert queue.empty()


async def test_lean_queue_hands_a_wake_up_on_when_its_reader_is_cancelled() -> None:
    queue: LeanQueue[str] = LeanQueue()
    first = asyncio.create_task(queue.get())
    second = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait("only")
    first.cancel()  # woken, but cancelled before it could take the item
    assert await asyncio.wait_for(second, TIMEOUT) == "only"
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_lean_event_wakes_every_waiter() -> None:
    event = LeanEvent()
    assert not event.is_set()
    waiters = [asyncio.create_task(event.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    event.set()
    assert await asyncio.wait_for(asyncio.gather(*waiters), TIMEOUT) == [True] * 3
    event.clear()
    assert not event.is_set()
    late = asyncio.create_task(event.wait())
    await yield_to_others()
    assert not late.done()
    late.cancel()
    with pytest.raises(asyncio.CancelledError):
        await late
    event.set()
    assert await event.wait()


class _Timer:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when, self.callback, self.cancelled = when, callback, False

    def __lt__(self, other: _Timer) -> bool:
        return self.when < other.when

    def cancel(self) -> None:
        self.cancelled = True


class ManualClockLoop:
    """The part of an event loop PingWheel uses (`time`, `call_at`), on a clock the test
    moves: timers fire exactly when due, so the test can check the wheel's own lateness
    without a real machine's scheduling delays, and without waiting."""

    def __init__(self, now: float) -> None:
        self.now = now
        self._timers: list[_Timer] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(when, callback)
        heapq.heappush(self._timers, timer)
        return timer

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        raise AssertionError(context)

    def advance(self, seconds: float) -> None:
        until = self.now + seconds
        while self._timers and self._timers[0].when <= until:
            timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                self.now = max(self.now, timer.when)
                timer.callback()
        self.now = until


class _Pinged:
    def __init__(self, clock: ManualClockLoop) -> None:
        self.clock = clock
        self.at: list[float] = []

    def send_keepalive_ping(self) -> None:
        self.at.append(self.clock.time())


async def test_ping_wheel_is_one_per_event_loop() -> None:
    loop = asyncio.get_running_loop()
    assert PingWheel.of(loop) is PingWheel.of(loop)


def test_ping_wheel_pings_each_connection_once_at_most_a_bucket_late() -> None:
    began = 1000.3  # between two buckets, as a connection's clock usually is
    loop = ManualClockLoop(began)
    wheel = PingWheel.of(loop)  # type: ignore[arg-type]
    early, late, cancelled = _Pinged(loop), _Pinged(loop), _Pinged(loop)
    wheel.add(early, 0.1)  # type: ignore[arg-type]
    wheel.add(late, 1.2)  # type: ignore[arg-type]
    wheel.add(cancelled, 0.1).cancel()  # type: ignore[arg-type]
    loop.advance(0.05)
    assert early.at == []  # not early
    for _ in range(100):  # a minute, in steps
        loop.advance(0.6)
    assert len(early.at) == 1 and 0.1 <= early.at[0] - began <= 0.1 + PingWheel.RESOLUTION
    assert len(late.at) == 1 and 1.2 <= late.at[0] - began <= 1.2 + PingWheel.RESOLUTION
    assert cancelled.at == []


# --- served by uvicorn -----------------------------------------------------------------------


async def echo(websocket: WebSocket) -> None:
    await websocket.accept(subprotocol="echo")
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") == "close-4001":
                await websocket.close(code=4001, reason="asked to")
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            else:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        pass


@asynccontextmanager
async def served(**options: Any) -> AsyncIterator[tuple[str, uvicorn.Server]]:
    port = free_port()
    config = uvicorn.Config(
        Starlette(routes=[WebSocketRoute("/ws", echo)]),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws=WS_PROTOCOL,
        ws_per_message_deflate=False,
        **options,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await until(lambda: server.started or task.done(), "the server started")
        if task.done():
            task.result()
        yield f"ws://127.0.0.1:{port}/ws", server
    finally:
        server.should_exit = True
        await task


def connections(server: uvicorn.Server) -> list[LeanWebSocketProtocol]:
    found = [c for c in server.server_state.connections if isinstance(c, LeanWebSocketProtocol)]
    return found


async def test_messages_echo_and_the_handshake_is_not_kept() -> None:
    async with served() as (url, server), connect(url, subprotocols=["echo"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "echo"
        for text in ("one", "two" * 1000, "three"):
            await ws.send(text)
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == text
        await ws.send(b"\x00\x01binary")
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == b"\x00\x01binary"

        (protocol,) = connections(server)
        assert protocol.request is None and protocol.response is None
        # The parser holds neither the handshake request nor the last frame.
        assert protocol.conn.parser.gi_code is Protocol.parse.__code__
        assert protocol.conn.parser.gi_frame.f_locals.get("frame") is None
        assert isinstance(protocol.queue, LeanQueue) and isinstance(protocol.writable, LeanEvent)
        assert not hasattr(protocol, "__dict__") or not vars(protocol)  # all in slots


def _frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A client frame (masked), as RFC 6455 5.2 lays it out."""
    mask = os.urandom(4)
    head = bytes([(0x80 if fin else 0) | opcode])
    length = len(payload)
    if length < 126:
        head += bytes([0x80 | length])
    else:
        head += bytes([0x80 | 126]) + struct.pack("!H", length)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


async def _raw_client(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    host, port = host_port.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /ws HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: echo\r\n\r\n"
        ).encode()
    )
    status = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    assert status.startswith(b"HTTP/1.1 101"), status
    return reader, writer


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readexactly(2), TIMEOUT)
    length = head[1] & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    return head[0] & 0x0F, await reader.readexactly(length)


async def test_frames_split_across_reads_and_fragmented_messages_arrive_whole() -> None:
    async with served() as (url, _server):
        reader, writer = await _raw_client(url)
        try:
            # One frame dribbled out a few bytes at a time: the parser is only swapped
            # at a frame boundary, never halfway through one.
            data = _frame(0x1, b"x" * 300)
            for start in range(0, len(data), 7):
                writer.write(data[start : start + 7])
                await writer.drain()
                await asyncio.sleep(0.001)
            assert await _read_frame(reader) == (0x1, b"x" * 300)
            # A message in three fragments, and two messages in one write.
            writer.write(_frame(0x1, b"ab", fin=False) + _frame(0x0, b"cd", fin=False))
            await writer.drain()
            await asyncio.sleep(0.01)
            writer.write(_frame(0x0, b"ef") + _frame(0x1, b"gh") + _frame(0x1, b"ij"))
            await writer.drain()
            assert await _read_frame(reader) == (0x1, b"abcdef")
            assert await _read_frame(reader) == (0x1, b"gh")
            assert await _read_frame(reader) == (0x1, b"ij")
            # A ping is answered with a pong carrying its payload.
            writer.write(_frame(0x9, b"are you there"))
            await writer.drain()
            assert await _read_frame(reader) == (0xA, b"are you there")
        finally:
            writer.close()


async def test_close_codes_and_disconnects_pass_through() -> None:
    async with served() as (url, server):
        async with connect(url, subprotocols=["echo"]) as ws:  # type: ignore[list-item]
            await ws.send("close-4001")
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), TIMEOUT)
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "asked to")
        await until(lambda: not connections(server), "the server let the connection go")
        assert connections(server) == []


async def test_keepalive_pings_go_out_and_a_silent_peer_is_dropped() -> None:
    async with served(ws_ping_interval=0.2, ws_ping_timeout=0.5) as (url, server):
        # A client that answers pings stays connected, and its round trip is measured. Pings
        # wait for the wheel's next one-second bucket, so the third goes out well past the
        # first one's pong deadline: a pong that failed to cancel it would have closed us.
        reader, writer = await _raw_client(url)
        try:
            for _ in range(3):
                opcode, payload = await _read_frame(reader)
                assert opcode == 0x9
                writer.write(_frame(0xA, payload))
                await writer.drain()
            writer.write(_frame(0x1, b"still here"))
            await writer.drain()
            assert await _read_frame(reader) == (0x1, b"still here")
            (protocol,) = connections(server)
            assert protocol.last_ping_rtt > 0  # a ping went out and its pong came back
        finally:
            writer.close()

        # One that never answers is closed with 1011 once the pong is overdue.
        reader, writer = await _raw_client(url)
        try:
            opcode, payload = await _read_frame(reader)
            assert opcode == 0x9  # the server's ping, not answered
            opcode, payload = await asyncio.wait_for(_read_frame(reader), TIMEOUT)
            assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1011
        finally:
            writer.close()


async def test_server_shutdown_sends_1012_to_open_connections() -> None:
    async with served() as (url, server):
        reader, writer = await _raw_client(url)
        try:
            server.should_exit = True
            opcode, payload = await asyncio.wait_for(_read_frame(reader), TIMEOUT)
            assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1012
        finally:
            writer.close()
