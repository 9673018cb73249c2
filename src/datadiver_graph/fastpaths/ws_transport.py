"""uvicorn's sans-I/O WebSocket protocol, keeping less per open connection.

A server holding thousands of idle subscriptions keeps one of these for each, and
uvicorn's own keeps things an idle connection never uses again (sizes in bench/RESULTS.md):

- an asyncio.Queue for incoming messages (four deques and an Event), although reading
  pauses after each message, so it seldom holds more than one or two;
- an asyncio.Event for write flow control;
- the parsed handshake request and the prepared response with their headers, needed
  only until the handshake is answered. The request is also held by the parser
  generator of websockets' ServerProtocol, suspended in its frame loop for the life of
  the connection, as is the last frame received; so once the handshake is answered, and
  after each message, that generator is swapped for a fresh frame parser (the same code
  the handshake parser continues into) when it waits at a frame boundary;
- its ~40 attributes in an instance dict: declared here as __slots__, the same
  attributes take a pointer each. (An attribute a later uvicorn adds still works: it
  lands in the instance dict, as before.)
- a timer of its own for the next keepalive ping (a TimerHandle and a libuv timer):
  here the connections of one event loop wait for their pings in one-second
  buckets under one timer (`PingWheel`), so a ping goes out up to a second later.

Behaviour is uvicorn's `websockets-sansio` protocol (what `ws="auto"` picks): only those
containers change. `fastpaths.uvicorn_protocols` selects it. It leans on uvicorn's and
websockets' internals (INTERNALS below, versions.py): tests/test_fastpath_guards.py and
tests/test_ws_transport.py check them, so an upgrade that moves one fails there, not in
production.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from typing import Any, Generic, TypeVar

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import OPEN, Protocol
from websockets.server import ServerProtocol
from websockets.streams import StreamReader

from datadiver_graph.fastpaths.internals import Internal

T = TypeVar("T")

WS_PROTOCOL = "datadiver_graph.fastpaths.ws_transport:LeanWebSocketProtocol"


def _wake_one(waiters: list[asyncio.Future[None]] | None) -> None:
    for waiter in waiters or ():
        if not waiter.done():
            waiter.set_result(None)
            return


class LeanQueue(Generic[T]):
    """What uvicorn uses of asyncio.Queue (unbounded): put_nowait, get, empty."""

    __slots__ = ("_items", "_waiters")

    def __init__(self) -> None:
        self._items: list[T] = []
        self._waiters: list[asyncio.Future[None]] | None = None

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)

    def put_nowait(self, item: T) -> None:
        self._items.append(item)
        _wake_one(self._waiters)

    async def get(self) -> T:
        while not self._items:
            waiter = asyncio.get_running_loop().create_future()
            waiters = self._waiters if self._waiters is not None else []
            self._waiters = waiters
            waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                waiter.cancel()
                if self._items and not waiter.cancelled():
                    # Woken but cancelled before taking the item: wake the next reader.
                    _wake_one([w for w in waiters if w is not waiter])
                raise
            finally:
                waiters.remove(waiter)
                if not waiters and self._waiters is waiters:
                    self._waiters = None
        return self._items.pop(0)


class LeanEvent:
    """asyncio.Event without its deque: wait, set, clear, is_set."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        for waiter in self._waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
            return True
        finally:
            self._waiters.remove(waiter)
            if not self._waiters:
                self._waiters = None


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    # Every attribute uvicorn 0.54's protocol sets on itself (the base class has no
    # __slots__, so these slots, found first on the type, take the assignments).
    __slots__ = (
        "app",
        "app_state",
        "asgi_version",
        "client",
        "close_sent",
        "close_timeout",
        "close_timer",
        "config",
        "conn",
        "connections",
        "curr_msg_data_type",
        "default_headers",
        "disconnected",
        "frames",
        "handshake_complete",
        "handshake_initiated",
        "initial_response",
        "last_ping_rtt",
        "logger",
        "loop",
        "pending_ping_payload",
        "ping_interval",
        "ping_sent_at",
        "ping_timeout",
        "ping_timer",
        "pong_timer",
        "queue",
        "read_paused",
        "request",
        "response",
        "root_path",
        "scheme",
        "scope",
        "server",
        "tasks",
        "transport",
        "writable",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = LeanQueue()  # type: ignore[assignment]
        self.writable = LeanEvent()  # type: ignore[assignment]
        self.writable.set()

    def schedule_ping(self) -> None:
        assert self.ping_interval is not None
        delay = max(0.0, self.ping_interval - self.last_ping_rtt)
        self.ping_timer = PingWheel.of(self.loop).add(self, delay)  # type: ignore[assignment]

    def handle_events(self) -> None:
        super().handle_events()
        if self.handshake_complete:
            restart_frame_parser(self.conn)

    async def send(self, message: Any) -> None:
        await super().send(message)
        if self.handshake_complete and getattr(self, "response", None) is not None:
            # Answered: the handshake's request and response are not used again.
            self.request = None  # type: ignore[assignment]
            self.response = None  # type: ignore[assignment]
            restart_frame_parser(self.conn)


# The parser waiting for the first byte of a frame: the handshake parser gone on into the
# frame loop, or a frame parser (one started here).
_AT_FRAME_BOUNDARY = (
    (ServerProtocol.parse.__code__, Protocol.parse.__code__, StreamReader.at_eof.__code__),
    (Protocol.parse.__code__, StreamReader.at_eof.__code__),
)


def restart_frame_parser(conn: ServerProtocol) -> bool:
    """Give an open connection a frame parser that holds neither the handshake request
    nor the last frame received.

    Only at a frame boundary, with nothing buffered. Anything else (a frame half received,
    a closing connection discarding input) keeps the parser it has.
    """
    if conn.state is not OPEN or conn.reader.buffer:
        return False
    codes = []
    generator: Any = conn.parser
    while generator is not None:
        codes.append(getattr(generator, "gi_code", None))
        generator = getattr(generator, "gi_yieldfrom", None)
    if tuple(codes) not in _AT_FRAME_BOUNDARY:
        return False
    fresh = Protocol.parse(conn)
    next(fresh)  # start it: it waits for data, like the parser it replaces
    conn.parser = fresh
    return True


class PingWheel:
    """The next keepalive ping of every connection of one event loop, under one timer."""

    RESOLUTION = 1.0  # seconds: the width of a bucket

    __slots__ = ("_armed_for", "_buckets", "_loop", "_timer")

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> PingWheel:
        wheel = _wheels.get(loop)
        if wheel is None:
            wheel = _wheels[loop] = cls(loop)
        return wheel

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weakly: the wheel is the loop's value in `_wheels`, and must not keep it alive.
        self._loop = weakref.ref(loop)
        self._buckets: dict[int, set[LeanWebSocketProtocol]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for: int | None = None

    def add(self, protocol: LeanWebSocketProtocol, delay: float) -> PingEntry:
        """`protocol.send_keepalive_ping()` in `delay` seconds (at most a bucket later)."""
        loop = self._loop()
        assert loop is not None  # a connection of this loop is asking
        bucket = math.ceil((loop.time() + delay) / self.RESOLUTION)
        self._buckets.setdefault(bucket, set()).add(protocol)
        if self._armed_for is None or bucket < self._armed_for:
            self._arm(bucket)
        return PingEntry(self, bucket, protocol)

    def remove(self, bucket: int, protocol: LeanWebSocketProtocol) -> None:
        waiting = self._buckets.get(bucket)
        if waiting is not None:
            waiting.discard(protocol)
            if not waiting:
                del self._buckets[bucket]

    def _arm(self, bucket: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        loop = self._loop()
        if loop is None:
            return
        self._armed_for = bucket
        self._timer = loop.call_at(bucket * self.RESOLUTION, self._tick)

    def _tick(self) -> None:
        self._timer = self._armed_for = None
        loop = self._loop()
        if loop is None:
            return
        now = loop.time()
        for bucket in sorted(b for b in self._buckets if b * self.RESOLUTION <= now):
            for protocol in self._buckets.pop(bucket):
                try:
                    protocol.send_keepalive_ping()
                except Exception as exc:  # as the loop reports a failing timer callback
                    loop.call_exception_handler(
                        {"message": "keepalive ping failed", "exception": exc, "protocol": protocol}
                    )
        if self._buckets:
            self._arm(min(self._buckets))


_wheels: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, PingWheel] = (
    weakref.WeakKeyDictionary()
)


class PingEntry:
    """A connection's place in the PingWheel: what uvicorn keeps as `ping_timer`."""

    __slots__ = ("_bucket", "_protocol", "_wheel")

    def __init__(self, wheel: PingWheel, bucket: int, protocol: LeanWebSocketProtocol) -> None:
        self._wheel = wheel
        self._bucket = bucket
        self._protocol = protocol

    def cancel(self) -> None:
        self._wheel.remove(self._bucket, self._protocol)


_UVICORN = "uvicorn.protocols.websockets.websockets_sansio_impl:WebSocketsSansIOProtocol"
INTERNALS = (
    # Every attribute declared as a slot above must still be one uvicorn sets.
    *(
        Internal("uvicorn", _UVICORN, name, "ws_transport.py", instance=True)
        for name in LeanWebSocketProtocol.__slots__
    ),
    *(
        Internal("uvicorn", _UVICORN, name, "ws_transport.py")
        for name in ("schedule_ping", "handle_events", "send_keepalive_ping")
    ),
    Internal("uvicorn", _UVICORN, "send", "ws_transport.py", parameters=("message",)),
    # The parser generators restart_frame_parser recognises and replaces.
    Internal("websockets", "websockets.server:ServerProtocol", "parse", "ws_transport.py"),
    Internal("websockets", "websockets.protocol:Protocol", "parse", "ws_transport.py"),
    Internal("websockets", "websockets.streams:StreamReader", "at_eof", "ws_transport.py"),
    Internal(
        "websockets", "websockets.streams:StreamReader", "buffer", "ws_transport.py", instance=True
    ),
    *(
        Internal(
            "websockets", "websockets.protocol:Protocol", name, "ws_transport.py", instance=True
        )
        for name in ("parser", "reader", "state")
    ),
    Internal("websockets", "websockets.protocol", "OPEN", "ws_transport.py"),
)
