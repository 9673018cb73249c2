"""Responses go out in one write (fastpaths/http_transport.py), whole, in order, before a close."""

from __future__ import annotations

import asyncio

import pytest

from datadiver_graph.app import create_app
from datadiver_graph.config import Settings
from datadiver_graph.fastpaths.http_transport import FLUSH_AT, JoiningTransport
from tests.servers import serve_app

# Tests a fast path's own internals: skipped under FAST_PATHS=false (conftest.py).
pytestmark = pytest.mark.fast_paths


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


async def test_writes_in_one_pass_of_the_loop_go_out_as_one() -> None:
    raw = RecordingTransport()
    joined = JoiningTransport(raw, asyncio.get_running_loop())
    joined.write(b"HTTP/1.1 200 OK\r\n\r\n")
    joined.write(b"hello")
    assert raw.writes == []
    await asyncio.sleep(0)
    assert raw.writes == [b"HTTP/1.1 200 OK\r\n\r\nhello"]
    joined.write(b"next")
    await asyncio.sleep(0)
    assert raw.writes[1:] == [b"next"]


async def test_close_sends_what_is_held_first_and_abort_drops_it() -> None:
    raw = RecordingTransport()
    joined = JoiningTransport(raw, asyncio.get_running_loop())
    joined.write(b"last words")
    joined.close()
    assert raw.writes == [b"last words"] and raw.closed
    await asyncio.sleep(0)  # the scheduled flush finds nothing more to send
    assert raw.writes == [b"last words"]

    raw = RecordingTransport()
    joined = JoiningTransport(raw, asyncio.get_running_loop())
    joined.write(b"never sent")
    joined.abort()
    await asyncio.sleep(0)
    assert raw.writes == [] and raw.aborted


async def test_a_large_body_goes_out_at_once_for_flow_control() -> None:
    raw = RecordingTransport()
    joined = JoiningTransport(raw, asyncio.get_running_loop())
    joined.write(b"headers\r\n\r\n")
    joined.write(b"x" * FLUSH_AT)
    assert raw.writes == [b"headers\r\n\r\n" + b"x" * FLUSH_AT]
    assert joined.get_extra_info("peername") == ("127.0.0.1", 1)  # the rest is the transport's


async def _exchange(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), timeout=10)  # until the server closes
    writer.close()
    return data


async def test_pipelined_requests_are_answered_whole_and_in_order(settings: Settings) -> None:
    async with serve_app(create_app(settings)) as url:
        port = int(url.rsplit(":", 1)[1])
        request = (
            b"GET /healthz HTTP/1.1\r\nhost: t\r\nx-request-id: first\r\n\r\n"
            b"GET /nope HTTP/1.1\r\nhost: t\r\nx-request-id: second\r\n\r\n"
            b"GET /healthz HTTP/1.1\r\nhost: t\r\nx-request-id: third\r\nconnection: close\r\n\r\n"
        )
        data = await _exchange(port, request)
    responses = data.split(b"HTTP/1.1 ")[1:]
    assert [r.split(b" ", 1)[0] for r in responses] == [b"200", b"404", b"200"]
    assert [r.split(b"x-request-id: ")[1].split(b"\r\n")[0] for r in responses] == [
        b"first",
        b"second",
        b"third",
    ]
    # The last answer is complete: it went out before the connection was closed.
    head, _, body = responses[-1].partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    assert len(body) == length and body.startswith(b"{")
