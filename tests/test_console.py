"""The operator console (/console) over real HTTP: access, headers, CSRF, pages on a large
table, search, documents, the live feed and ending a session; and `datadiver-graph logs`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr
from websockets.sync.client import connect as ws_connect
from websockets.typing import Subprotocol

from datadiver_graph.app import create_app
from datadiver_graph.config import Settings, SettingsError, load_settings
from datadiver_graph.console import tables
from datadiver_graph.console.operations import OPERATIONS_LOGGER
from datadiver_graph.dev.keys import mint_dev_token
from datadiver_graph.storage import mongo as db
from datadiver_graph.storage.embedded import free_port
from tests.clerk_fixtures import SERVICE_KEY
from tests.cli import clean_env, executable
from tests.graphql_client import gql
from tests.mongo_commands import commands, plan_stages
from tests.redis_server import RedisServer
from tests.servers import serve_app
from tests.test_observability_serve import serving
from tests.webhook_support import sign, user_event

CONSOLE_TOKEN = "console-token-0123456789abcdef"
ADMIN = "user_admin"
PAGES = [
    "/console/",
    "/console/tables/users",
    "/console/tables/sessions",
    "/console/tables/payments",
    "/console/tables/subscriptions",
    "/console/tables/webhooks",
    "/console/events",
]
CREATE_SESSION = "mutation($id: String!) { createSession(sessionId: $id) { sessionId } }"
END_SESSION = "mutation($id: String!) { endSession(sessionId: $id) { active } }"


class Links(HTMLParser):
    """The hrefs of a page's links, and its hidden CSRF field."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.csrf: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "a" and found.get("href"):
            self.hrefs.append(str(found["href"]))
        if tag == "input" and found.get("name") == "csrf":
            self.csrf = found.get("value")


def links(html: str) -> Links:
    parser = Links()
    parser.feed(html)
    return parser


@contextlib.asynccontextmanager
async def console(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        serve_app(create_app(settings)) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        yield client


@pytest.fixture
def production(clerk_settings: Settings) -> Settings:
    return clerk_settings.model_copy(
        update={
            "datadiver_env": "production",
            "console_enabled": True,
            "console_token": SecretStr(CONSOLE_TOKEN),
            "console_admin_user_ids": [ADMIN],
        }
    )


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if getattr(record, "event", None) == "console_refused"
    ]


# -- access --------------------------------------------------------------------------------


async def test_development_opens_every_page_to_localhost_with_strict_headers(
    clerk_settings: Settings, database: db.Database
) -> None:
    async with console(clerk_settings) as client:
        for path in PAGES:
            response = await client.get(path)
            assert response.status_code == 200, path
            assert response.headers["content-type"].startswith("text/html")
            csp = response.headers["content-security-policy"]
            assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
            assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["cache-control"] == "no-store"
            # No inline script or style anywhere: the CSP would block it.
            assert not re.search(r"<script(?![^>]*\bsrc=)", response.text), path
            assert "<style" not in response.text and " style=" not in response.text
        static = await client.get("/console/static/htmx.min.js")
        assert static.status_code == 200 and "htmx" in static.text[:2000]


async def test_development_refuses_another_host_name_and_logs_it(
    clerk_settings: Settings, database: db.Database, caplog: pytest.LogCaptureFixture
) -> None:
    """A DNS-rebound page reaches 127.0.0.1 under its own host name: refused."""
    async with console(clerk_settings) as client:
        with caplog.at_level(logging.WARNING, logger="datadiver_graph.console"):
            response = await client.get("/console/", headers={"host": "evil.example.com"})
    assert response.status_code == 401
    assert "users" not in response.text.lower()
    assert refusals(caplog) == [
        "console access refused: development console is open to localhost only"
    ]


async def test_production_has_no_console_unless_enabled(
    clerk_settings: Settings, database: db.Database
) -> None:
    settings = clerk_settings.model_copy(
        update={"datadiver_env": "production", "console_token": SecretStr(CONSOLE_TOKEN)}
    )
    async with console(settings) as client:
        response = await client.get(
            "/console/", headers={"authorization": f"Bearer {CONSOLE_TOKEN}"}
        )
    assert response.status_code == 404


def test_production_refuses_to_enable_the_console_without_a_credential(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATADIVER_ENV", "production")
    monkeypatch.setenv("CONSOLE_ENABLED", "true")
    with pytest.raises(SettingsError, match="CONSOLE_TOKEN or CONSOLE_ADMIN_USER_IDS"):
        load_settings()
    monkeypatch.setenv("CONSOLE_TOKEN", "short")
    with pytest.raises(SettingsError, match=r"CONSOLE_TOKEN: .*at least 24"):
        load_settings()


async def test_production_refuses_users_service_keys_and_no_credential_and_logs_each(
    production: Settings,
    database: db.Database,
    token_for: Callable[[str], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    user = token_for("user_ordinary")
    attempts: list[dict[str, str]] = [
        {},
        {"authorization": f"Bearer {user}"},
        {"cookie": f"__session={user}"},
        {"x-service-key": SERVICE_KEY},
        {"authorization": f"Bearer {SERVICE_KEY}"},
        {"authorization": f"Bearer {CONSOLE_TOKEN}x"},
    ]
    async with console(production) as client:
        with caplog.at_level(logging.WARNING, logger="datadiver_graph.console"):
            for headers in attempts:
                for path in ["/console/", "/console/tables/users", "/console/events/stream"]:
                    response = await client.get(path, headers=headers)
                    assert response.status_code == 401, (path, headers)
                    assert "externalId" not in response.text
            # The service key works where it belongs, so it was a valid one.
            ok = await gql(
                client, '{ getSession(sessionId: "x") { sessionId } }', service_key=SERVICE_KEY
            )
            assert ok.status == 200 and ok.errors == []
    logged = refusals(caplog)
    assert len(logged) == len(attempts) * 3
    assert all(CONSOLE_TOKEN not in line and user not in line for line in logged)
    assert "console access refused: no admin credential" in logged
    assert any("not an admin" in line for line in logged)


async def test_production_admits_the_console_token_and_admin_users(
    production: Settings, database: db.Database, token_for: Callable[[str], str]
) -> None:
    admin = token_for(ADMIN)
    async with console(production) as client:
        for headers in (
            {"authorization": f"Bearer {CONSOLE_TOKEN}"},
            {"authorization": f"Bearer {admin}"},
            {"cookie": f"__session={admin}"},
        ):
            response = await client.get("/console/tables/users", headers=headers)
            assert response.status_code == 200, headers


async def test_signing_in_with_the_token_sets_a_cookie_derived_from_it(
    production: Settings, database: db.Database
) -> None:
    async with console(production) as client:
        form = await client.get("/console/login")
        assert form.status_code == 200
        csrf = links(form.text).csrf
        assert csrf
        wrong = await client.post("/console/login", data={"csrf": csrf, "token": "nope"})
        assert wrong.status_code == 401
        signed_in = await client.post("/console/login", data={"csrf": csrf, "token": CONSOLE_TOKEN})
        assert signed_in.status_code == 303
        cookie = client.cookies.get("ddg_console")
        assert cookie and CONSOLE_TOKEN not in cookie
        assert "HttpOnly" in signed_in.headers["set-cookie"]
        assert "SameSite=Strict" in signed_in.headers["set-cookie"]
        assert (await client.get("/console/")).status_code == 200


# -- CSRF and ending a session ---------------------------------------------------------------


async def test_ending_a_session_needs_the_csrf_token_and_publishes_like_the_api(
    clerk_settings: Settings, database: db.Database, token_for: Callable[[str], str]
) -> None:
    async with console(clerk_settings) as client:
        created = await gql(client, CREATE_SESSION, {"id": "sess_end"}, token=token_for("user_e"))
        assert created.errors == []
        page = await client.get("/console/tables/sessions/doc", params={"key": "sess_end"})
        csrf = links(page.text).csrf
        assert csrf and "End this session" in page.text

        async def end(data: dict[str, str], headers: dict[str, str] | None = None) -> int:
            response = await client.post("/console/sessions/end", data=data, headers=headers)
            return response.status_code

        assert await end({"sessionId": "sess_end"}) == 403
        assert await end({"sessionId": "sess_end", "csrf": "x" * 43}) == 403
        assert (
            await end({"sessionId": "sess_end", "csrf": csrf}, {"origin": "https://evil.example"})
            == 403
        )
        assert (
            await end({"sessionId": "sess_end", "csrf": csrf}, {"sec-fetch-site": "cross-site"})
            == 403
        )
        # Another site's form post carries no cookie (SameSite=Strict): the token alone fails.
        bare = httpx.AsyncClient(base_url=str(client.base_url))
        async with bare:
            response = await bare.post(
                "/console/sessions/end", data={"sessionId": "sess_end", "csrf": csrf}
            )
            assert response.status_code == 403
        stored = await database.sessions.find_one({"sessionId": "sess_end"})
        assert stored is not None and stored["active"] is True

        async with watch(client, {"type": "session."}) as changes:
            assert await end({"sessionId": "sess_end", "csrf": csrf}) == 303
            change = await changes.get_within(1.0)
        assert change["type"] == "session.ended"
        assert change["sessionId"] == "sess_end" and change["userId"] == "user_e"
        assert change["source"] == "console" and change["version"] == 2
        stored = await database.sessions.find_one({"sessionId": "sess_end"})
        assert stored is not None and stored["active"] is False and stored["version"] == 2


# -- the live feed -----------------------------------------------------------------------------


class Changes:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def get_within(self, seconds: float) -> dict[str, Any]:
        return await asyncio.wait_for(self.queue.get(), seconds)

    def pending(self) -> list[dict[str, Any]]:
        found = []
        while not self.queue.empty():
            found.append(self.queue.get_nowait())
        return found


@contextlib.asynccontextmanager
async def watch(
    client: httpx.AsyncClient, params: dict[str, str], headers: dict[str, str] | None = None
) -> AsyncIterator[Changes]:
    """The feed's `change` events, from once the stream said `ready`."""
    changes = Changes()
    ready = asyncio.Event()

    async def read() -> None:
        async with client.stream(
            "GET", "/console/events/stream", params=params, headers=headers, timeout=None
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            event = ""
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    if event == "ready":
                        ready.set()
                    elif event == "change":
                        changes.queue.put_nowait(orjson.loads(line[5:]))

    task = asyncio.create_task(read())
    try:
        await asyncio.wait_for(ready.wait(), 5)
        yield changes
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_feed_shows_each_change_with_ids_version_time_and_source_filtered(
    clerk_settings: Settings, database: db.Database, token_for: Callable[[str], str]
) -> None:
    async with (
        console(clerk_settings) as client,
        watch(client, {}) as everything,
        watch(client, {"user": "user_a", "type": "session.created"}) as filtered,
    ):
        before = int(time.time() * 1000)
        await gql(client, CREATE_SESSION, {"id": "s_b"}, token=token_for("user_b"))
        await gql(client, CREATE_SESSION, {"id": "s_a"}, token=token_for("user_a"))
        await gql(client, END_SESSION, {"id": "s_a"}, token=token_for("user_a"))
        body, headers = sign(user_event("user.created", "user_a"))
        assert (
            await client.post("/webhooks/clerk", content=body, headers=headers)
        ).status_code == 200
        seen = [await everything.get_within(1.0) for _ in range(4)]
        assert [(c["type"], c["userId"], c["source"]) for c in seen] == [
            ("session.created", "user_b", "graphql"),
            ("session.created", "user_a", "graphql"),
            ("session.ended", "user_a", "graphql"),
            ("user.created", "user_a", "webhook"),
        ]
        first = seen[1]
        assert first["sessionId"] == "s_a" and first["version"] == 1 and first["id"]
        assert before <= first["time"] <= int(time.time() * 1000)
        assert first["requestId"] and ":" in first["process"]
        # Ids only: no names, emails or metadata in the feed.
        assert "email" not in seen[3] and "name" not in seen[3]
        only = await filtered.get_within(1.0)
        assert (only["type"], only["sessionId"]) == ("session.created", "s_a")
        await asyncio.sleep(0.2)
        assert filtered.pending() == []


async def test_the_feed_carries_changes_from_every_process_sharing_broadcast_url(
    clerk_settings: Settings,
    database: db.Database,
    token_for: Callable[[str], str],
    tmp_path: Path,
) -> None:
    """Two servers on one Redis: a mutation on one shows on the other's feed."""
    with RedisServer(tmp_path / "redis") as redis:
        shared = clerk_settings.model_copy(update={"broadcast_url": redis.url})
        async with (
            console(shared) as watching,
            console(shared) as writing,
            watch(watching, {"type": "session.created"}) as changes,
        ):
            await gql(writing, CREATE_SESSION, {"id": "s_far"}, token=token_for("user_far"))
            change = await changes.get_within(1.0)
    assert (change["sessionId"], change["userId"]) == ("s_far", "user_far")


async def test_an_import_shows_as_one_reread_change(
    clerk_settings: Settings, database: db.Database
) -> None:
    app = create_app(clerk_settings)
    async with (
        serve_app(app) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
        watch(client, {"type": "reread"}) as changes,
    ):
        await app.state.store.announce_reread(("user:", "user-sessions:"))
        change = await changes.get_within(1.0)
    assert change["type"] == "reread" and change["channels"] == ["user:", "user-sessions:"]


# -- tables: pages, search, documents ------------------------------------------------------------


USERS = 2_000  # 40 pages: enough to page through, light on a loaded CI machine


async def test_pages_of_a_large_table_read_one_index_range_and_never_count(
    clerk_settings: Settings, database: db.Database
) -> None:
    await database.users.insert_many(
        [
            {
                "_id": f"id{i:06d}",
                "externalId": f"user_{i:06d}",
                "email": f"u{i}@example.com",
                "version": 1,
                "createdAt": 0,
                "updatedAt": 0,
                "preferences": {},
            }
            for i in range(USERS)
        ]
    )
    async with console(clerk_settings) as client:
        await client.get("/console/tables/users")  # warm the row estimate
        path = "/console/tables/users"
        shown: list[str] = []
        for _ in range(3):
            with commands() as sent:
                response = await client.get(path)
            assert response.status_code == 200
            shown += re.findall(r">(user_\d{6})</a>", response.text)
            finds = [c for name, c in sent if name == "find" and c.get("find") == "users"]
            assert len(finds) == 1 and finds[0]["limit"] == tables.PAGE_SIZE + 1
            assert [
                name for name, _ in sent if name in ("count", "aggregate", "countDocuments")
            ] == []
            plan = (
                await database.users.find(finds[0]["filter"])
                .sort(list(finds[0]["sort"].items()))
                .limit(finds[0]["limit"])
                .explain()
            )
            assert plan_stages(plan["queryPlanner"]["winningPlan"]) == [
                "LIMIT",
                "FETCH",
                "IXSCAN(by_external_id)",
            ]
            path = next(href for href in links(response.text).hrefs if "after=" in href)
        assert shown == [f"user_{i:06d}" for i in range(3 * tables.PAGE_SIZE)]
        assert f"about {USERS} rows" in response.text


@pytest.mark.parametrize(
    ("table", "search"),
    [(t.name, s.name if s else None) for t in tables.TABLES.values() for s in (None, *t.searches)],
)
async def test_every_page_and_search_is_an_index_range(
    database: db.Database, table: str, search: str | None
) -> None:
    """First and later pages of each listing and search, planned on the real database: an
    index scan, never a collection scan; a sort only after an equality (one key's rows)."""
    spec = tables.TABLES[table]
    found = spec.search(search)
    orders = found.order if found is not None and found.order else ((spec.key, spec.direction),)
    sample = [5 if name in ("lastActivity", "createdAt") else "k" for name, _ in orders]
    for after in (None, tables.encode_cursor(sample)):
        if found is not None and found.match == "exact" and not found.order and after:
            continue  # a few rows at most: never paged
        for query in tables.page_queries(spec, found, "abc", after):
            plan = (
                await database.collection(spec.collection)
                .find(query.filter)
                .sort(query.sort)
                .limit(query.limit)
                .explain()
            )
            stages = plan_stages(plan["queryPlanner"]["winningPlan"])
            assert "COLLSCAN" not in stages, (query, stages)
            assert any(stage.startswith("IXSCAN") for stage in stages), (query, stages)
            if "SORT" in stages:
                assert found is not None and found.match == "exact", (query, stages)


async def test_search_by_the_obvious_keys_and_a_document_as_json(
    clerk_settings: Settings, database: db.Database, token_for: Callable[[str], str]
) -> None:
    async with console(clerk_settings) as client:
        body, headers = sign(user_event("user.created", "user_find", first_name="<b>Ada</b>"))
        assert (
            await client.post("/webhooks/clerk", content=body, headers=headers)
        ).status_code == 200
        for i in range(3):
            await gql(client, CREATE_SESSION, {"id": f"find_{i}"}, token=token_for("user_find"))
        await gql(client, CREATE_SESSION, {"id": "other_0"}, token=token_for("user_other"))
        user = await database.users.find_one({"externalId": "user_find"})
        assert user is not None

        async def search(table: str, by: str, q: str) -> str:
            response = await client.get(f"/console/tables/{table}", params={"by": by, "q": q})
            assert response.status_code == 200
            return response.text

        assert "user_find" in await search("users", "externalId", "user_f")
        assert "user_find" not in await search("users", "externalId", "user_x")
        assert "user_find" in await search("users", "email", user["email"])
        by_user = await search("sessions", "userId", "user_find")
        assert re.findall(r">(find_\d)</a>", by_user) == ["find_2", "find_1", "find_0"]
        assert "other_0" not in by_user
        assert re.findall(r">(\w+_0)</a>", await search("sessions", "sessionId", "oth")) == [
            "other_0"
        ]

        document = await client.get("/console/tables/users/doc", params={"key": "user_find"})
        assert document.status_code == 200
        pre = re.search(r'<pre id="document">(.*)</pre>', document.text, re.S)
        assert pre is not None
        assert "&lt;b&gt;Ada&lt;/b&gt;" in pre.group(1) and "<b>" not in pre.group(1)
        shown = orjson.loads(
            pre.group(1)
            .replace("&#34;", '"')
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
            .replace("&#39;", "'")
        )
        assert shown["externalId"] == "user_find" and shown["version"] == user["version"]
        missing = await client.get("/console/tables/users/doc", params={"key": "nobody"})
        assert missing.status_code == 404


async def test_webhook_log_shows_each_outcome_and_the_error(
    clerk_settings: Settings, database: db.Database
) -> None:
    async with console(clerk_settings) as client:
        body, headers = sign(user_event("user.created", "user_hook"), msg_id="msg_applied")
        for _ in range(2):  # applied, then duplicate
            await client.post("/webhooks/clerk", content=body, headers=headers)
        _, bad = sign(
            user_event("user.created", "user_hook"), msg_id="msg_forged", secret="whsec_" + "A" * 32
        )
        for _ in range(3):  # anyone can send these: counted, one row per minute
            assert (
                await client.post("/webhooks/clerk", content=body, headers=bad)
            ).status_code == 400
        rows: list[dict[str, Any]] = []
        for _ in range(50):  # written after each answer went out
            rows = await database.collection(db.WEBHOOK_LOG).find({}).sort("at", 1).to_list()
            if sum(row["count"] for row in rows) == 5:
                break
            await asyncio.sleep(0.05)
        outcomes = [(r["svixId"], r["outcome"], r["error"], r["count"]) for r in rows]
        assert outcomes == [
            ("msg_applied", "applied", None, 1),
            ("msg_applied", "duplicate", None, 1),
            (None, "invalid_signature", "invalid signature", 3),
        ]
        page = await client.get("/console/tables/webhooks")
        assert page.status_code == 200
        assert "Refused among the last 3: <strong>1</strong>" in page.text
        assert "invalid_signature" in page.text and "duplicate" in page.text
        refused = await client.get("/console/tables/webhooks", params={"by": "refused"})
        assert "invalid_signature" in refused.text and "duplicate" not in refused.text


async def test_health_is_read_from_the_services_own_metrics(
    clerk_settings: Settings, database: db.Database
) -> None:
    async with console(clerk_settings) as client:
        for _ in range(3):
            await client.get("/healthz")
        scraped = (await client.get("/metrics")).text
        total = sum(
            float(line.rsplit(" ", 1)[1])
            for line in scraped.splitlines()
            if line.startswith("datadiver_http_requests_total{")
        )
        panel = await client.get("/console/health")
        assert panel.status_code == 200
        assert '<div class="card ok"><h2>Database</h2><p>up</p>' in panel.text
        assert '<div class="card ok"><h2>Fan-out</h2><p>up</p>' in panel.text
        # The metrics' own count at the scrape, plus the scrape itself and nothing else.
        assert f"{int(total) + 1} total" in panel.text
        again = await client.get("/console/health")
        assert re.search(r"<p>\d+\.\d/s</p><small>\d+ total", again.text)


# -- datadiver-graph logs ------------------------------------------------------------------------


class LogsProcess:
    def __init__(self, url: str, *args: str, env: dict[str, str | None] | None = None) -> None:
        self.process = subprocess.Popen(
            [executable(), "logs", "--url", url, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=clean_env(**(env or {})),
        )
        self.lines: asyncio.Queue[str] = asyncio.Queue()
        self.errors: asyncio.Queue[str] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        assert self.process.stdout is not None and self.process.stderr is not None
        self._partial: dict[int, bytes] = {}
        for stream, queue in (
            (self.process.stdout, self.lines),
            (self.process.stderr, self.errors),
        ):
            loop.add_reader(stream.fileno(), self._read, stream.fileno(), queue)

    def _read(self, fd: int, queue: asyncio.Queue[str]) -> None:
        # Raw reads: a buffered readline() would keep a second line where no reader sees it.
        chunk = os.read(fd, 65536)
        if not chunk:
            asyncio.get_running_loop().remove_reader(fd)
            return
        *lines, rest = (self._partial.get(fd, b"") + chunk).split(b"\n")
        self._partial[fd] = rest
        for line in lines:
            queue.put_nowait(line.decode())

    async def stderr_line(self, seconds: float = 15.0) -> str:
        return await asyncio.wait_for(self.errors.get(), seconds)

    async def line(self, seconds: float) -> str:
        return await asyncio.wait_for(self.lines.get(), seconds)

    def stop(self) -> None:
        loop = asyncio.get_running_loop()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                loop.remove_reader(stream.fileno())
                stream.close()
        self.process.terminate()
        self.process.wait(10)


async def next_line(
    process: LogsProcess, wanted: Callable[[str], bool], seconds: float = 1.0
) -> str:
    """The first line `wanted` accepts within `seconds`, skipping the others."""
    deadline = time.monotonic() + seconds
    while True:
        line = await process.line(max(0.0, deadline - time.monotonic()))
        if wanted(line):
            return line


def json_type(kind: str) -> Callable[[str], bool]:
    return lambda line: orjson.loads(line)["type"] == kind


async def test_logs_streams_a_mutation_within_a_second_with_filters(
    clerk_settings: Settings,
    database: db.Database,
    token_for: Callable[[str], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=OPERATIONS_LOGGER)  # operation lines are made
    async with serve_app(create_app(clerk_settings)) as url:
        everything = LogsProcess(url, "--json")
        mine = LogsProcess(url, "--user", "user_l", "--type", "session.ended")
        plain = LogsProcess(url)
        failures = LogsProcess(url, "--errors-only", "--json")
        processes = (everything, mine, plain, failures)
        try:
            for process in processes:
                assert (await process.stderr_line()).startswith("following http://127.0.0.1:")
            async with httpx.AsyncClient(base_url=url) as client:
                started = time.monotonic()
                await gql(client, CREATE_SESSION, {"id": "log_other"}, token=token_for("user_m"))
                # The change, and the mutation's own log line (the line may come first: it
                # does not travel through the fan-out).
                pair = [orjson.loads(await everything.line(1.0)) for _ in range(2)]
                assert time.monotonic() - started < 1.0
                change, operation = sorted(pair, key=lambda line: line["type"] != "session.created")
                assert (change["type"], change["sessionId"], change["userId"]) == (
                    "session.created",
                    "log_other",
                    "user_m",
                )
                assert operation["type"] == "operation.mutation"
                assert (operation["userId"], operation["outcome"], operation["errorCodes"]) == (
                    "user_m",
                    "ok",
                    [],
                )
                assert operation["requestId"] == change["requestId"]
                assert operation["durationMs"] > 0
                texts = sorted([await plain.line(1.0), await plain.line(1.0)])
                text = next(line for line in texts if "session.created" in line)
                assert "user=user_m session=log_other v1" in text
                assert any(" ok " in line and "operation.mutation" in line for line in texts)
                assert all("\x1b[" not in line for line in texts)  # no colour: not a terminal
                await gql(client, CREATE_SESSION, {"id": "log_l"}, token=token_for("user_l"))
                await gql(client, END_SESSION, {"id": "log_other"}, token=token_for("user_m"))
                await gql(client, END_SESSION, {"id": "log_l"}, token=token_for("user_l"))
                failed = await gql(client, END_SESSION, {"id": "nope"}, token=token_for("user_l"))
                assert failed.codes == ["NOT_FOUND"]
                shown = await mine.line(1.0)
                assert "session.ended" in shown and "session=log_l" in shown
                error = orjson.loads(await failures.line(1.0))
                assert (error["type"], error["outcome"], error["errorCodes"]) == (
                    "operation.mutation",
                    "error",
                    ["NOT_FOUND"],
                )
                lines = [orjson.loads(await everything.line(1.0)) for _ in range(7)]
                changes = [(line["type"], line["sessionId"]) for line in lines if "version" in line]
                assert changes == [
                    ("session.created", "log_l"),
                    ("session.ended", "log_other"),
                    ("session.ended", "log_l"),
                ]
                outcomes = [line["outcome"] for line in lines if "outcome" in line]
                assert outcomes == ["ok", "ok", "ok", "error"]
                await asyncio.sleep(0.3)
                assert mine.lines.empty() and failures.lines.empty()
        finally:
            for process in processes:
                process.stop()


async def test_logs_needs_the_console_token_in_production(
    production: Settings, database: db.Database, token_for: Callable[[str], str]
) -> None:
    async with serve_app(create_app(production)) as url:
        refused = await asyncio.to_thread(
            subprocess.run,
            [executable(), "logs", "--url", url],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert refused.returncode == 1
        assert "answered 401" in refused.stderr and "CONSOLE_TOKEN" in refused.stderr
        logs = LogsProcess(url, "--json", env={"CONSOLE_TOKEN": CONSOLE_TOKEN})
        try:
            assert (await logs.stderr_line()).startswith("following")
            async with httpx.AsyncClient(base_url=url) as client:
                await gql(client, CREATE_SESSION, {"id": "prod_s"}, token=token_for("user_p"))
            change = orjson.loads(await next_line(logs, json_type("session.created")))
            assert change["sessionId"] == "prod_s"
            assert CONSOLE_TOKEN not in orjson.dumps(change).decode()
        finally:
            logs.stop()


def start_serve(port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [executable(), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_logs_reconnects_by_itself_when_the_service_restarts(
    mongo_uri: str, db_name: str, database: db.Database, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = clean_env(
        MONGODB_URI=mongo_uri,
        MONGODB_DB=db_name,
        DATA_DIR=str(tmp_path / "data"),
        DATADIVER_ENV="development",
        LOG_LEVEL="WARNING",
    )

    async def serve() -> subprocess.Popen[bytes]:
        server = start_serve(port, env)
        async with httpx.AsyncClient() as client:
            for _ in range(300):
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{url}/readyz")).status_code == 200:
                        return server
                await asyncio.sleep(0.1)
        server.kill()
        raise AssertionError("serve did not become ready")

    server = await serve()
    logs = LogsProcess(url, "--json", "--type", "session.")
    try:
        assert (await logs.stderr_line()).startswith("following")
        server.kill()  # a crash: no goodbye to the stream
        server.wait(10)
        assert (await logs.stderr_line()).startswith("connection lost")
        server = await serve()
        while not (line := await logs.stderr_line()).startswith("reconnected to"):
            assert line.startswith("connection lost"), line
        token = mint_dev_token(Settings(DATA_DIR=str(tmp_path / "data")), "user_r")
        async with httpx.AsyncClient(base_url=url) as client:
            created = await gql(client, CREATE_SESSION, {"id": "after_restart"}, token=token)
            assert created.errors == []
        change = orjson.loads(await logs.line(1.0))
        assert (change["type"], change["sessionId"]) == ("session.created", "after_restart")
    finally:
        logs.stop()
        server.terminate()
        server.wait(20)


def test_health_shows_all_workers_and_this_workers_share(
    mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    """`serve --workers 2`: one WebSocket open on one worker; every health panel counts it
    in the total, and each worker's own share tells which worker holds it."""
    env = clean_env(MONGODB_URI=mongo_uri, MONGODB_DB=db_name, DATA_DIR=str(tmp_path / "data"))
    with serving(env, tmp_path, "--workers", "2") as (_, url, _log):
        ws_url = url.replace("http", "ws") + "/graphql"
        with ws_connect(ws_url, subprotocols=[Subprotocol("graphql-transport-ws")]):
            shares: set[str] = set()
            for _ in range(60):  # a new connection each time: either worker may answer
                panel = httpx.get(f"{url}/console/health", timeout=10).text
                found = re.search(r'id="ws-connections">(\d+)</p><small>this worker (\d)', panel)
                assert found is not None, panel
                assert found.group(1) == "1"
                shares.add(found.group(2))
                if shares == {"0", "1"}:
                    break
            assert shares == {"0", "1"}
