"""Everything that subclasses, patches or reads the private internals of graphql-core,
Strawberry, uvicorn or websockets, to answer faster or hold less per connection.

Each fast path gives the same answers as the stock path it shortcuts; only speed and
memory differ. `FAST_PATHS=false` turns them all off: requests then go through stock
Strawberry (the `GraphQL` view with public hooks only, its own WebSocket handlers and
executor) and uvicorn's own protocols. They are also off, with one warning at start-up,
when an installed library lies outside the versions they were tested on (versions.py)
or an internal they rely on has moved (each module's INTERNALS).

The rest of the package asks `enabled(settings)` and imports a fast-path module only when
it answers True, so a fast path broken by an upgrade cannot take the stock path down.
"""

from __future__ import annotations

import functools
import importlib
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datadiver_graph.config import Settings

log = logging.getLogger(__name__)

# Every fast-path module; each lists the internals it relies on in INTERNALS.
MODULES = (
    "strawberry_schema",
    "execution",
    "executor",
    "query_plans",
    "direct",
    "live_operation",
    "ws_handler",
    "view",
    "ws_transport",
    "ws_shortcut",
)


def enabled(settings: Settings) -> bool:
    """Whether this process runs the fast paths: FAST_PATHS, and libraries they fit."""
    return settings.fast_paths and usable()


@functools.cache
def usable() -> bool:
    """Checked once per process; the one warning says why the fast paths are off."""
    from datadiver_graph.fastpaths.versions import outside_tested

    problems = outside_tested()
    if not problems:
        try:
            problems = [
                problem
                for module in modules()
                for internal in getattr(module, "INTERNALS", ())
                if (problem := internal.problem()) is not None
            ]
        except Exception as exc:  # a fast path that no longer even imports
            problems = [f"a fast path failed to import: {exc!r}"]
    if problems:
        log.warning(
            "fast paths off, running stock Strawberry and uvicorn (as FAST_PATHS=false): %s",
            "; ".join(problems),
        )
        return False
    return True


def modules() -> list[Any]:
    return [importlib.import_module(f"{__name__}.{name}") for name in MODULES]


def uvicorn_protocols(settings: Settings) -> dict[str, Any]:
    """uvicorn's `ws` setting: ours, or (an empty dict) uvicorn's own."""
    if not enabled(settings):
        return {}
    from datadiver_graph.fastpaths.ws_transport import WS_PROTOCOL

    return {"ws": WS_PROTOCOL}
