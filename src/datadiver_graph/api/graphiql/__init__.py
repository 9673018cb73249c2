"""GraphiQL on `/graphql` in development, served entirely by this server (no CDN).

The page (page.html) loads only same-origin files: our own `static/page.*` and the GraphiQL,
React and explorer-plugin browser builds vendored in `static/vendor/` by
scripts/vendor-graphiql.sh (their licences beside them). Both the page and the static route
exist only outside production, like GraphiQL itself.
"""

from __future__ import annotations

import html
from pathlib import Path
from string import Template

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

STATIC_PATH = "/graphiql/static"
HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"

# Nothing but this origin: a page that tried to reach a CDN would fail here too.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",  # GraphiQL's components set inline styles
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",  # HTTP and WebSocket to /graphql
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)

_PAGE = Template((HERE / "page.html").read_text(encoding="utf-8"))


def render_page(request: Request) -> HTMLResponse:
    """The GraphiQL page; asset paths follow the app's root path (behind a path prefix)."""
    static = html.escape(request.scope.get("root_path", "").rstrip("/") + STATIC_PATH)
    return HTMLResponse(
        _PAGE.substitute(static=static),
        headers={
            "content-security-policy": CONTENT_SECURITY_POLICY,
            "x-content-type-options": "nosniff",
            "cache-control": "no-store",
        },
    )


def static_route() -> Mount:
    """Serves static/ (page.js, page.css, vendor/) under /graphiql/static."""
    return Mount(STATIC_PATH, app=StaticFiles(directory=STATIC_DIR), name="graphiql-static")
