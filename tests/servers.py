"""Run an ASGI app under a real uvicorn server on a free loopback port, inside the test loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from starlette.types import ASGIApp

from datadiver_graph import fastpaths
from datadiver_graph.config import Settings
from datadiver_graph.storage.embedded import free_port


@asynccontextmanager
async def serve_app(app: ASGIApp, port: int | None = None) -> AsyncIterator[str]:
    """Yield the base URL (http://127.0.0.1:PORT) while the app serves; lifespan included."""
    port = port or free_port()
    # The app's own settings decide, as `serve` does; FAST_PATHS from the environment else.
    settings = getattr(getattr(app, "state", None), "settings", None) or Settings()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        ws_per_message_deflate=False,
        ws_max_size=settings.max_body_bytes,  # as `serve` sets it
        **fastpaths.uvicorn_protocols(settings),  # what `serve` runs
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()  # surfaces the start-up error
                raise RuntimeError("server exited during start-up")
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
