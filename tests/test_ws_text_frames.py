"""Every GraphQL WebSocket message is a text frame, on both protocols.

The protocols are text protocols: graphql-ws closes with 4004 on a binary frame, `gql`
raises, and a browser hands the page a Blob. `json.loads` accepts bytes, so a test that
only reads payloads cannot see the difference; these tests read the raw frames.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from tests.test_subscriptions import CURRENT_USER, Served, bearer, make_user, protocols, served
from tests.ws_client import LEGACY_WS, TRANSPORT_WS, ws_url

__all__ = ["served"]  # the fixture, re-used


async def raw_frame(ws: ClientConnection) -> str | bytes:
    async with asyncio.timeout(5):
        return await ws.recv()


async def text_message(ws: ClientConnection) -> dict[str, Any]:
    frame = await raw_frame(ws)
    assert isinstance(frame, str), f"binary frame: {frame!r}"
    message: dict[str, Any] = json.loads(frame)
    return message


@protocols
async def test_ack_results_errors_and_completion_are_text_frames(
    served: Served, protocol: str, token_for: Any
) -> None:
    await make_user(served.store, "user_frames")
    start, stop = ("subscribe", "complete") if protocol == TRANSPORT_WS else ("start", "stop")
    async with connect(ws_url(served.url), subprotocols=[protocol]) as ws:  # type: ignore[list-item]
        await ws.send(
            json.dumps({"type": "connection_init", "payload": bearer(token_for("user_frames"))})
        )
        kinds: list[str] = []
        ack = await text_message(ws)
        assert ack["type"] == "connection_ack"
        await ws.send(json.dumps({"id": "1", "type": start, "payload": {"query": CURRENT_USER}}))
        await ws.send(
            json.dumps({"id": "2", "type": start, "payload": {"query": "subscription { nope }"}})
        )
        if protocol == TRANSPORT_WS:
            await ws.send(json.dumps({"type": "ping"}))
        wanted = {"next", "error", "pong"} if protocol == TRANSPORT_WS else {"data", "error"}
        while not wanted <= set(kinds):
            message = await text_message(ws)
            kinds.append(message["type"])
        await ws.send(json.dumps({"id": "1", "type": stop}))
        if protocol == LEGACY_WS:
            while (await text_message(ws))["type"] != "complete":
                pass
        assert "connection_ack" not in kinds[1:]
