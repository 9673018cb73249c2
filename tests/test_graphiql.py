"""GraphiQL on /graphql in development, from this server's own files: no CDN, no network.

The page in a real browser (offline, a query and a subscription) is
tests/clients/graphiql.test.mjs; this file checks what the server answers.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from datadiver_graph.api import graphiql
from datadiver_graph.app import create_app
from datadiver_graph.config import Settings
from datadiver_graph.storage import mongo as db
from tests.servers import serve_app
from tests.webhook_support import SECRET

ROOT = Path(__file__).parent.parent
HTML = {"accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
VENDOR = graphiql.STATIC_DIR / "vendor"


class Assets(HTMLParser):
    """Every URL the page makes the browser fetch: script src, link href, img src, ..."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                self.urls.append((tag, value))


def assets(page: str) -> list[tuple[str, str]]:
    parser = Assets()
    parser.feed(page)
    return parser.urls


async def test_development_serves_our_page_with_same_origin_assets(
    http: httpx.AsyncClient,
) -> None:
    response = await http.get("/graphql", headers=HTML)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "DataDiver Graph · GraphiQL" in page  # ours, not strawberry's template
    # No CDN and no absolute URL at all: everything comes from this origin.
    for needle in ("unpkg", "jsdelivr", "cdnjs", "esm.sh", "http://", "https://", "//"):
        assert needle not in page.replace("<!doctype html>", ""), needle
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self';" in csp
    assert "connect-src 'self'" in csp

    urls = assets(page)
    scripts = [url for tag, url in urls if tag == "script"]
    styles = [url for tag, url in urls if tag == "link" and url.endswith(".css")]
    # React, ReactDOM, GraphiQL, the explorer plugin and our set-up, in that order.
    assert [url.rsplit("/", 1)[-1] for url in scripts] == [
        "react.production.min.js",
        "react-dom.production.min.js",
        "graphiql.min.js",
        "plugin-explorer.umd.js",
        "page.js",
    ]
    assert len(styles) == 3
    for tag, url in urls:
        if url.startswith("data:"):
            continue
        assert url.startswith("/graphiql/static/"), url
        asset = await http.get(url)
        assert asset.status_code == 200, url
        content_type = asset.headers["content-type"]
        if tag == "script":
            assert "javascript" in content_type, (url, content_type)
        else:
            assert content_type.startswith("text/css"), (url, content_type)
        assert (
            asset.content
            == (graphiql.STATIC_DIR / url.removeprefix("/graphiql/static/")).read_bytes()
        )


async def test_the_page_sets_up_http_and_websocket_from_its_own_url(
    http: httpx.AsyncClient,
) -> None:
    script = (await http.get("/graphiql/static/page.js")).text
    assert "GraphiQL.createFetcher" in script
    assert "subscriptionUrl" in script
    assert "window.location" in script
    assert "http://" not in script and "https://" not in script


async def test_graphql_still_answers_json_and_get_queries(http: httpx.AsyncClient) -> None:
    """The page is only for a browser asking for HTML without a query."""
    response = await http.get("/graphql", params={"query": "{ __typename }"}, headers=HTML)
    assert response.status_code == 200
    assert response.json() == {"data": {"__typename": "Query"}}
    response = await http.get("/graphql", headers={"accept": "application/json"})
    assert not response.headers["content-type"].startswith("text/html")


async def test_a_path_outside_static_is_not_served(http: httpx.AsyncClient) -> None:
    for path in (
        "/graphiql/static/../__init__.py",
        "/graphiql/static/%2e%2e/__init__.py",
        "/graphiql/static/../page.html",
        "/graphiql/__init__.py",
    ):
        response = await http.get(path)
        assert response.status_code == 404, path


@pytest.fixture
def production(settings: Settings) -> Settings:
    return Settings(
        MONGODB_URI=settings.mongodb_uri,
        MONGODB_DB=settings.mongodb_db,
        DATA_DIR=str(settings.data_dir),
        DATADIVER_ENV="production",
        CLERK_ISSUER="https://clerk.example.com",
        CLERK_WEBHOOK_SECRET=SECRET,
    )


async def test_production_serves_no_page_and_no_assets(
    production: Settings, database: db.Database
) -> None:
    assert production.is_production
    async with (
        serve_app(create_app(production)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as http,
    ):
        response = await http.get("/graphql", headers=HTML)
        assert response.status_code == 404
        assert not response.headers["content-type"].startswith("text/html")
        assert "GraphiQL" not in response.text
        for path in ("/graphiql/static/page.js", "/graphiql/static/vendor/graphiql.min.js"):
            assert (await http.get(path)).status_code == 404, path


def test_each_vendored_package_has_its_licence_and_pinned_version() -> None:
    versions = (VENDOR / "VERSIONS.txt").read_text()
    listed = dict(re.findall(r"^(@?[\w./-]+)@([\d.]+) \(MIT\)$", versions, re.MULTILINE))
    pinned = json.loads((ROOT / "scripts/graphiql/package.json").read_text())["dependencies"]
    for name, version in pinned.items():
        assert listed.get(name) == version, (name, version, versions)
    lock = json.loads((ROOT / "scripts/graphiql/package-lock.json").read_text())
    for name, version in pinned.items():
        assert lock["packages"][f"node_modules/{name}"]["version"] == version
    licences = {path.name for path in (VENDOR / "licenses").iterdir()}
    for name in listed:
        assert f"{name.removeprefix('@').replace('/', '-')}.LICENSE" in licences, name
    for licence in (VENDOR / "licenses").iterdir():
        assert "MIT License" in licence.read_text() or "Permission is hereby granted" in (
            licence.read_text()
        ), licence


def test_vendored_builds_are_minified_and_small() -> None:
    files = [*VENDOR.glob("*.js"), *VENDOR.glob("*.css")]
    assert len(files) == 6
    assert sum(path.stat().st_size for path in files) < 2_500_000
    for path in VENDOR.glob("*.js"):
        lines = path.read_text(encoding="utf-8").count("\n") + 1
        assert path.stat().st_size / lines > 200, (path, lines)  # minified: long lines
