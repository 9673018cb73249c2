"""GET /.well-known/jwks.json: the development key's public JWKS (404 outside dev mode)."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse

from datadiver_graph.config import Settings
from datadiver_graph.dev.keys import dev_jwks, dev_mode


async def jwks_endpoint(request: Request) -> JSONResponse:
    settings: Settings = request.app.state.settings
    if not dev_mode(settings):
        return JSONResponse({"error": "not found"}, status_code=404)
    # The first call may generate an RSA key and touches the disk: keep it off the loop.
    jwks = await asyncio.to_thread(dev_jwks, settings)
    return JSONResponse(jwks, headers={"Cache-Control": "public, max-age=300"})
