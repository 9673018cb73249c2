"""uvicorn's httptools HTTP protocol, sending each response in one system call.

uvicorn writes a response's status line and headers, then its body, as two transport writes:
two `send` system calls and two TCP segments (TCP_NODELAY) for every answer, when nearly
all of ours fit in one, and py-spy found those writes a large share of the webhook
server's CPU (bench/RESULTS.md). Here the writes made during one pass of the event loop
are joined and sent together at the end of that pass (`loop.call_soon`), so a response
goes out as one write, a little later than the first of the two would have.

Order is kept (every write of the connection goes through the same buffer), a close sends
what is buffered first, and more than FLUSH_AT bytes are sent at once, so the transport's
flow control still sees a large body. A connection upgraded to a WebSocket gets the plain
transport back: WebSocket frames are sent as they come, and an idle subscriber keeps no
extra object.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from datadiver_graph.fastpaths.internals import Internal

HTTP_PROTOCOL = "datadiver_graph.fastpaths.http_transport:OneWriteHttpToolsProtocol"
# Past this much buffered the data goes out at once: the transport's high-water mark
# (uvicorn's flow control) must see a large body as it is written.
FLUSH_AT = 64 * 1024


class JoiningTransport:
    """A transport whose writes in one event-loop pass go out as one write."""

    __slots__ = ("_held", "_loop", "transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._held is None:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._held += data
        if len(self._held) > FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        held, self._held = self._held, None
        if held and not self.transport.is_closing():
            self.transport.write(held)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def abort(self) -> None:
        self._held = None
        self.transport.abort()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        # get_extra_info, pause_reading, set_protocol...: the transport's own.
        return getattr(self.transport, name)


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = JoiningTransport(transport, self.loop)  # type: ignore[assignment]

    def handle_websocket_upgrade(self) -> None:
        joined = self.transport
        if isinstance(joined, JoiningTransport):
            joined.flush()
            self.transport = joined.transport
        super().handle_websocket_upgrade()


_HTTPTOOLS = "uvicorn.protocols.http.httptools_impl:HttpToolsProtocol"
INTERNALS = (
    Internal(
        "uvicorn", _HTTPTOOLS, "connection_made", "http_transport.py", parameters=("transport",)
    ),
    Internal("uvicorn", _HTTPTOOLS, "handle_websocket_upgrade", "http_transport.py"),
    *(
        Internal("uvicorn", _HTTPTOOLS, name, "http_transport.py", instance=True)
        for name in ("transport", "loop")
    ),
)
