"""The operator console (`/console`) and the admin channel `datadiver-graph logs` follows.

Server-rendered pages (Jinja2 templates, a vendored htmx for the live parts, no build step,
no CDN): the tables, one document's JSON, the live feed of every published change, the
Clerk webhook log and the health panel. See access.py for who may open it.
"""

from __future__ import annotations

from starlette.routing import BaseRoute

from datadiver_graph.auth.identity import TokenVerifier
from datadiver_graph.config import Settings


def routes(settings: Settings, verifier: TokenVerifier) -> list[BaseRoute]:
    """The console's routes, or none when it is off (production without CONSOLE_ENABLED)."""
    if not settings.console_on:
        return []
    from datadiver_graph.console.access import ConsoleAccess
    from datadiver_graph.console.pages import mount

    return [mount(ConsoleAccess(settings, verifier))]
