"""The console's pages: server-rendered templates, htmx for the live parts, no build step.

Read-only, except ending a session, which goes through `domain.sessions.end` as the API's
`endSession` does, so it is stored, versioned and published like any other change.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Receive, Scope, Send

from datadiver_graph.console import feed, security, tables
from datadiver_graph.console.access import SESSION_COOKIE, ConsoleAccess, refused
from datadiver_graph.console.health import HealthPanel
from datadiver_graph.domain import sessions
from datadiver_graph.domain.errors import DomainError
from datadiver_graph.domain.events import change_source
from datadiver_graph.domain.store import Store
from datadiver_graph.storage.mongo import Document

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
# Deliveries an operator sees at a glance on the webhook page (the newest ones).
GLANCE_ROWS = 100


def _iso(value: Any) -> str:
    """Epoch milliseconds or a BSON date as ISO-8601 UTC; anything else as it is."""
    if isinstance(value, datetime):
        stamp = value if value.tzinfo else value.replace(tzinfo=UTC)
        return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, int) and not isinstance(value, bool) and value > 10**11:
        return _iso(datetime.fromtimestamp(value / 1000, UTC))
    return "" if value is None else str(value)


def _json(doc: Document) -> str:
    return orjson.dumps(doc, default=_iso, option=orjson.OPT_INDENT_2).decode()


templates.env.filters["iso"] = _iso


def _render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    token, new = security.csrf_token(request)
    response = templates.TemplateResponse(
        request,
        name,
        {
            "csrf": token,
            "tables": tables.TABLES,
            "grant": request.scope.get("console_grant"),
            **context,
        },
        status_code=status,
    )
    if new:
        security.set_csrf_cookie(response.headers, token, request.url.scheme == "https")
    return response


@dataclass(frozen=True, slots=True)
class ConsoleState:
    """What the console keeps per app: who may enter, the health panel's last reading (for
    rates) and the cached row estimates."""

    access: ConsoleAccess
    health: HealthPanel = field(default_factory=HealthPanel)
    counts: tables.RowCounts = field(default_factory=tables.RowCounts)


def _state(request: Request) -> ConsoleState:
    state: ConsoleState = request.scope["console_state"]
    return state


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


async def overview(request: Request) -> Response:
    return _render(request, "overview.html", {"health": await _health(request)})


async def health_fragment(request: Request) -> Response:
    return _render(request, "_health.html", {"health": await _health(request)})


async def _health(request: Request) -> Any:
    return await _state(request).health.read(request.app.state.metrics, _store(request))


async def table_page(request: Request) -> Response:
    table = tables.TABLES.get(request.path_params["name"])
    if table is None:
        return _render(request, "error.html", {"message": "no such table"}, 404)
    search = table.search(request.query_params.get("by")) or (
        table.searches[0] if table.searches else None
    )
    text = request.query_params.get("q", "").strip()
    active = search if search is not None and (text or search.value is not None) else None
    try:
        page = await tables.read_page(
            _store(request).db, table, search, text, request.query_params.get("after")
        )
    except tables.BadCursor as exc:
        return _render(request, "error.html", {"message": str(exc)}, 400)
    counts = _state(request).counts
    context: dict[str, Any] = {
        "table": table,
        "search": search,
        "active": active,
        "text": text,
        "page": page,
        "estimate": await counts.estimate(_store(request).db, table.collection),
    }
    if table.name == "webhooks":
        context["glance"] = await _webhook_glance(_store(request))
    return _render(request, "table.html", context)


async def _webhook_glance(store: Store) -> dict[str, Any]:
    """The newest deliveries, for "is Clerk still delivering, and is it working?"."""
    rows = (
        await store.db.collection(tables.TABLES["webhooks"].collection)
        .find({})
        .sort([("at", -1)])
        .limit(GLANCE_ROWS)
        .to_list()
    )
    refused = sum(1 for row in rows if row.get("refused"))
    last = rows[0] if rows else None
    last_ok = next((row for row in rows if not row.get("refused")), None)
    age = None
    if last is not None and isinstance(last.get("receivedAt"), datetime):
        received = last["receivedAt"]
        received = received if received.tzinfo else received.replace(tzinfo=UTC)
        age = max(0, int(time.time() - received.timestamp()))
    return {"rows": len(rows), "refused": refused, "last": last, "last_ok": last_ok, "age": age}


async def document_page(request: Request) -> Response:
    table = tables.TABLES.get(request.path_params["name"])
    key = request.query_params.get("key", "")
    if table is None or not key:
        return _render(request, "error.html", {"message": "no such document"}, 404)
    doc = await tables.find_document(_store(request).db, table, key)
    if doc is None:
        return _render(request, "error.html", {"message": f"no {table.key} {key!r}"}, 404)
    return _render(
        request, "document.html", {"table": table, "key": key, "doc": doc, "json": _json(doc)}
    )


async def end_session(request: Request) -> Response:
    problem = await security.csrf_problem(request)
    if problem is not None:
        refused(request, f"end session: {problem}")
        return PlainTextResponse(f"refused: {problem}", status_code=403)
    session_id = (await security.form_fields(request)).get("sessionId")
    if not isinstance(session_id, str) or not session_id:
        return PlainTextResponse("sessionId is required", status_code=400)
    change_source.set("console")
    try:
        await sessions.end(_store(request), session_id)
    except DomainError as exc:
        return PlainTextResponse(exc.message, status_code=404)
    return RedirectResponse(
        "/console/tables/sessions/doc?" + urlencode({"key": session_id}), status_code=303
    )


def _filter(request: Request) -> feed.Filter:
    query = request.query_params
    return feed.Filter.of(
        query.get("user"), query.get("type"), query.get("operations"), query.get("errors")
    )


async def events_page(request: Request) -> Response:
    where = _filter(request)
    return _render(request, "events.html", {"where": where})


async def events_stream(request: Request) -> Response:
    where = _filter(request)
    return StreamingResponse(
        feed.stream(_store(request).events, where),
        media_type="text/event-stream",
        headers={"x-accel-buffering": "no"},
    )


async def login(request: Request) -> Response:
    access = _state(request).access
    if request.method == "GET":
        return _render(request, "login.html", {"has_token": access.has_token, "error": None})
    problem = await security.csrf_problem(request)
    presented = (await security.form_fields(request)).get("token")
    if problem is None and isinstance(presented, str) and access.token_matches(presented):
        response = RedirectResponse("/console/", status_code=303)
        secure = "; Secure" if request.url.scheme == "https" else ""
        response.headers.append(
            "set-cookie",
            f"{SESSION_COOKIE}={access.session_value()}; Path=/console; HttpOnly; "
            f"SameSite=Strict; Max-Age=43200{secure}",
        )
        return response
    refused(request, f"login: {problem or 'wrong token'}")
    return _render(
        request, "login.html", {"has_token": access.has_token, "error": "refused"}, status=401
    )


async def logout(request: Request) -> Response:
    problem = await security.csrf_problem(request)
    if problem is not None:
        return PlainTextResponse(f"refused: {problem}", status_code=403)
    response = RedirectResponse("/console/login", status_code=303)
    response.headers.append(
        "set-cookie", f"{SESSION_COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0"
    )
    return response


class Gate:
    """Lets a request through to the console's routes only with a grant (`access.py`);
    the login page and the static files (public code) are reachable without one."""

    def __init__(self, app: ASGIApp, state: ConsoleState) -> None:
        self.app = app
        self.state = state
        self.access = state.access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope["console_state"] = self.state
        path = scope["path"]
        if not path.startswith(("/console/static/", "/console/login")):
            request = Request(scope)
            grant = await self.access.check(request)
            if grant is None:
                await _refusal(self.access)(scope, receive, send)
                return
            scope["console_grant"] = grant.via
        await self.app(scope, receive, send)


def _refusal(access: ConsoleAccess) -> Response:
    body = "<!doctype html><title>Console</title><p>An admin credential is required."
    if access.has_token:
        body += ' <a href="/console/login">Sign in with the console token</a>.'
    return HTMLResponse(body, status_code=401)


def mount(access: ConsoleAccess) -> Mount:
    """`/console`: its routes behind the gate, every response with the security headers."""
    inner: list[BaseRoute] = [
        Route("/", overview, name="console"),
        Route("/health", health_fragment),
        Route("/tables/{name}", table_page, name="console-table"),
        Route("/tables/{name}/doc", document_page, name="console-document"),
        Route("/sessions/end", end_session, methods=["POST"]),
        Route("/events", events_page),
        Route("/events/stream", events_stream),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="console-static"),
    ]
    app = security.SecurityHeaders(Gate(Router(inner), ConsoleState(access)))
    return Mount("/console", app=app)
