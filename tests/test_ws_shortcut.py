"""A /graphql WebSocket goes straight to the view (fastpaths/ws_shortcut.py); the rest is routed."""

from __future__ import annotations

import gc
import types
from collections.abc import Callable

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from datadiver_graph.app import create_app
from datadiver_graph.config import Settings
from tests.servers import serve_app
from tests.ws_client import TRANSPORT_WS, open_ws

# Tests a fast path's own internals: skipped under FAST_PATHS=false (conftest.py).
pytestmark = pytest.mark.fast_paths

HELD_BY_ROUTING = ("starlette/routing.py", "starlette/middleware/exceptions.py")


def suspended_in(files: tuple[str, ...]) -> list[str]:
    """Coroutines suspended in those files now (each keeps its frame while it waits)."""
    found: list[str] = []
    for obj in gc.get_objects():
        if type(obj) is not types.CoroutineType or obj.cr_frame is None:
            continue
        frame = obj.cr_frame
        if frame.f_code.co_filename.endswith(files):
            found.append(frame.f_code.co_qualname)
    return sorted(found)


async def test_open_subscriptions_hold_no_router_frames(
    clerk_settings: Settings, token_for: Callable[[str], str]
) -> None:
    token = token_for("user_ws_shortcut")
    async with serve_app(create_app(clerk_settings)) as url:
        before = suspended_in(HELD_BY_ROUTING)  # the lifespans of the servers in this process
        async with (
            open_ws(url, TRANSPORT_WS, {"authToken": token}) as first,
            open_ws(url, TRANSPORT_WS, {"authToken": token}) as second,
        ):
            for client in (first, second):
                op_id = await client.subscribe("subscription { currentUser { id } }")
                assert (await client.message(op_id)).kind == "next"
            assert suspended_in(HELD_BY_ROUTING) == before
        # HTTP on the same path still goes through the router.
        async with httpx.AsyncClient(base_url=url) as http:
            answer = await http.post("/graphql", json={"query": "{ __typename }"})
        assert answer.json() == {"data": {"__typename": "Query"}}


async def test_a_websocket_to_another_path_is_still_refused(settings: Settings) -> None:
    async with serve_app(create_app(settings)) as url:
        target = url.replace("http://", "ws://") + "/not-graphql"
        with pytest.raises(InvalidStatus) as refused:
            async with connect(target, subprotocols=[TRANSPORT_WS], open_timeout=5):  # type: ignore[list-item]
                pass
        assert refused.value.response.status_code == 403
