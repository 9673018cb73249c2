"""Persisted documents over real HTTP and WebSocket: Apollo's APQ protocol and trusted
documents (client-preset's manifest, TRUSTED_DOCUMENTS_ONLY).

tests/clients/apq.test.mjs and trusted-documents.test.mjs drive the same rules with the real
Apollo link and a real codegen manifest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from datadiver_graph.api import http as http_view
from datadiver_graph.api.persisted_documents import LruStore, PersistedDocuments
from datadiver_graph.app import create_app
from datadiver_graph.config import Settings, SettingsError, load_settings
from datadiver_graph.storage.mongo import Database
from tests.clerk_fixtures import SERVICE_KEY
from tests.servers import serve_app
from tests.ws_client import LEGACY_WS, PROTOCOLS, TRANSPORT_WS, open_ws

TYPENAME = "{ __typename }"
NOT_FOUND = {
    "errors": [
        {"message": "PersistedQueryNotFound", "extensions": {"code": "PERSISTED_QUERY_NOT_FOUND"}}
    ]
}
JSON = {"accept": "application/json"}
GRAPHQL_JSON = {"accept": "application/graphql-response+json"}

# The trusted manifest, as client-preset writes it: {sha256(document): document}.
ME = "query Me { getCurrentUser { name } }"
SESSIONS = 'subscription Live { userSessions(userId: "user_ada") { sessionId } }'
STALE = "query Stale { noSuchField }"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def apq(digest: str, version: int = 1) -> dict[str, Any]:
    return {"persistedQuery": {"version": version, "sha256Hash": digest}}


def codes(response: httpx.Response) -> list[str]:
    return [error["extensions"]["code"] for error in response.json()["errors"]]


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "persisted-documents.json"
    path.write_text(json.dumps({sha(text): text for text in (ME, SESSIONS, STALE)}))
    return path


@asynccontextmanager
async def server(settings: Settings, **update: Any) -> AsyncIterator[httpx.AsyncClient]:
    configured = settings.model_copy(update={"service_api_keys": [SERVICE_KEY], **update})
    async with (
        serve_app(create_app(configured)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        yield client


@pytest.fixture
async def api(settings: Settings, database: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with server(settings) as client:
        yield client


# -- APQ -------------------------------------------------------------------------------------


async def test_unknown_hash_answers_persisted_query_not_found_as_apollo_expects(
    api: httpx.AsyncClient,
) -> None:
    body = {"extensions": apq(sha(TYPENAME))}
    legacy = await api.post("/graphql", json=body, headers=JSON)
    # As Apollo Server: a 200 every client reads, not cached on the way.
    assert legacy.status_code == 200 and legacy.json() == NOT_FOUND
    assert legacy.headers["cache-control"] == "private, no-cache, must-revalidate"
    assert legacy.headers["content-type"] == "application/json"
    # A request error under the GraphQL media type: 4xx, no data entry.
    modern = await api.post("/graphql", json=body, headers=GRAPHQL_JSON)
    assert modern.status_code == 404 and modern.json() == NOT_FOUND
    assert modern.headers["content-type"] == "application/graphql-response+json"


async def test_registers_then_runs_by_hash_on_the_direct_path(
    api: httpx.AsyncClient, direct_runs: list[str]
) -> None:
    query = "query Name { getCurrentUser { name } }"
    digest = sha(query)
    registered = await api.post("/graphql", json={"query": query, "extensions": apq(digest)})
    assert registered.status_code == 200
    assert registered.json() == {"data": {"getCurrentUser": None}}
    by_hash = await api.post(
        "/graphql",
        # Apollo Client 4 adds clientLibrary to the extensions.
        json={"extensions": {**apq(digest), "clientLibrary": {"name": "@apollo/client"}}},
    )
    assert by_hash.status_code == 200 and by_hash.json() == {"data": {"getCurrentUser": None}}
    assert direct_runs == ["query", "query"]


async def test_a_wrong_hash_with_a_query_is_refused_and_not_stored(
    api: httpx.AsyncClient,
) -> None:
    wrong = sha("something else")
    refused = await api.post("/graphql", json={"query": TYPENAME, "extensions": apq(wrong)})
    assert refused.status_code == 400 and codes(refused) == ["PERSISTED_QUERY_HASH_MISMATCH"]
    assert "data" not in refused.json()
    after = await api.post("/graphql", json={"extensions": apq(wrong)}, headers=JSON)
    assert after.json() == NOT_FOUND


@pytest.mark.parametrize(
    ("query", "code"),
    [("{ noSuchField }", "GRAPHQL_VALIDATION_FAILED"), ("{ __typename", "GRAPHQL_PARSE_FAILED")],
)
async def test_only_documents_that_parse_and_validate_are_stored(
    api: httpx.AsyncClient, query: str, code: str
) -> None:
    digest = sha(query)
    first = await api.post(
        "/graphql", json={"query": query, "extensions": apq(digest)}, headers=GRAPHQL_JSON
    )
    assert first.status_code == 400 and codes(first) == [code]
    again = await api.post("/graphql", json={"extensions": apq(digest)}, headers=JSON)
    assert again.json() == NOT_FOUND


@pytest.mark.parametrize(
    "persisted",
    [
        {"version": 2, "sha256Hash": sha(TYPENAME)},
        {"version": True, "sha256Hash": sha(TYPENAME)},
        {"sha256Hash": sha(TYPENAME)},
        {"version": 1, "sha256Hash": "abc"},
        {"version": 1},
        "not an object",
    ],
)
async def test_malformed_persisted_query_extensions_are_bad_requests(
    api: httpx.AsyncClient, persisted: object
) -> None:
    body = {"query": TYPENAME, "extensions": {"persistedQuery": persisted}}
    response = await api.post("/graphql", json=body)
    assert response.status_code == 400 and codes(response) == ["BAD_REQUEST"]


async def test_get_with_extensions_never_serves_the_graphiql_page(
    api: httpx.AsyncClient, direct_runs: list[str]
) -> None:
    digest = sha(TYPENAME)
    params = {"extensions": json.dumps(apq(digest))}
    for accept in ("text/html", "*/*", "application/json"):
        missing = await api.get("/graphql", params=params, headers={"accept": accept})
        assert missing.status_code == 200 and missing.json() == NOT_FOUND, accept
        assert missing.headers["content-type"] == "application/json"
    # An extension the direct path leaves to strawberry: still no page.
    other = {"extensions": json.dumps({**apq(digest), "tracing": True})}
    page = await api.get("/graphql", params=other, headers={"accept": "text/html"})
    assert page.status_code == 200 and page.json() == NOT_FOUND
    register = {"query": TYPENAME, **params}
    assert (await api.get("/graphql", params=register)).json() == {"data": {"__typename": "Query"}}
    hit = await api.get("/graphql", params=params, headers={"accept": "text/html"})
    assert hit.status_code == 200 and hit.json() == {"data": {"__typename": "Query"}}
    assert direct_runs == ["query", "query"]


async def test_a_mutation_by_hash_never_runs_over_get(
    api: httpx.AsyncClient, database: Database
) -> None:
    mutation = "mutation { createSession { sessionId } }"
    digest = sha(mutation)
    stored = await api.post(
        "/graphql",
        json={"query": mutation, "extensions": apq(digest)},
        headers={"x-service-key": SERVICE_KEY},
    )
    assert stored.status_code == 200  # valid, so kept (it fails for want of a userId)
    response = await api.get(
        "/graphql",
        params={"extensions": json.dumps(apq(digest))},
        headers={"x-service-key": SERVICE_KEY},
    )
    assert response.status_code in (400, 405)
    assert await database.sessions.count_documents({}) == 0


async def test_the_apq_store_is_bounded(settings: Settings, database: Database) -> None:
    async with server(settings, apq_cache_size=2) as api:
        queries = [f"{{ a{i}: __typename }}" for i in range(3)]
        for query in queries:
            body = {"query": query, "extensions": apq(sha(query))}
            assert (await api.post("/graphql", json=body)).status_code == 200
        evicted = await api.post("/graphql", json={"extensions": apq(sha(queries[0]))})
        assert evicted.json() == NOT_FOUND
        kept = await api.post("/graphql", json={"extensions": apq(sha(queries[2]))})
        assert kept.json() == {"data": {"a2": "Query"}}


async def test_apq_off_answers_not_supported(settings: Settings, database: Database) -> None:
    async with server(settings, apq_cache_size=0) as api:
        response = await api.post("/graphql", json={"extensions": apq(sha(TYPENAME))})
        assert response.status_code == 200 and codes(response) == ["PERSISTED_QUERY_NOT_SUPPORTED"]
        assert response.json()["errors"][0]["message"] == "PersistedQueryNotSupported"
        plain = await api.post("/graphql", json={"query": TYPENAME})
        assert plain.json() == {"data": {"__typename": "Query"}}


def test_lru_store_drops_the_least_recently_used() -> None:
    store = LruStore(2)
    store.put("a", "A")
    store.put("b", "B")
    assert store.get("a") == "A"  # now b is the oldest
    store.put("c", "C")
    assert (store.get("a"), store.get("b"), store.get("c"), len(store)) == ("A", None, "C", 2)


# -- trusted documents ----------------------------------------------------------------------


async def test_trusted_documents_by_document_id_and_by_hash(
    settings: Settings, database: Database, manifest: Path, direct_runs: list[str]
) -> None:
    async with server(settings, trusted_documents_path=manifest) as api:
        by_id = await api.post("/graphql", json={"documentId": sha(ME)})
        assert by_id.status_code == 200 and by_id.json() == {"data": {"getCurrentUser": None}}
        prefixed = await api.post("/graphql", json={"documentId": f"sha256:{sha(ME)}"})
        assert prefixed.json() == {"data": {"getCurrentUser": None}}
        by_get = await api.get(
            "/graphql", params={"documentId": sha(ME)}, headers={"accept": "text/html"}
        )
        assert by_get.json() == {"data": {"getCurrentUser": None}}
        by_hash = await api.post("/graphql", json={"extensions": apq(sha(ME))})
        assert by_hash.json() == {"data": {"getCurrentUser": None}}
        assert direct_runs == ["query"] * 4
        unknown = await api.post("/graphql", json={"documentId": sha("nope")}, headers=JSON)
        assert unknown.status_code == 200 and codes(unknown) == ["PERSISTED_QUERY_NOT_FOUND"]
        both = await api.post("/graphql", json={"documentId": sha(ME), "query": ME})
        assert both.status_code == 400 and codes(both) == ["BAD_REQUEST"]
        # Without TRUSTED_DOCUMENTS_ONLY, free text still runs.
        free = await api.post("/graphql", json={"query": TYPENAME})
        assert free.json() == {"data": {"__typename": "Query"}}


async def test_trusted_documents_only_refuses_everything_else(
    settings: Settings, database: Database, manifest: Path
) -> None:
    async with server(
        settings, trusted_documents_path=manifest, trusted_documents_only=True
    ) as api:
        prepare = http_view.build_schema(settings).prepare
        misses = prepare.cache_info().misses  # type: ignore[attr-defined]
        known = await api.post("/graphql", json={"documentId": sha(ME)})
        assert known.json() == {"data": {"getCurrentUser": None}}
        # Parsed and validated at start-up: the request parsed nothing.
        assert prepare.cache_info().misses == misses  # type: ignore[attr-defined]
        # The full text of a trusted document is that document.
        assert (await api.post("/graphql", json={"query": ME})).status_code == 200

        refused = [
            await api.post("/graphql", json={"query": TYPENAME}),
            await api.get("/graphql", params={"query": TYPENAME}),
            await api.post("/graphql", json=[{"query": ME}, {"query": TYPENAME}]),
            # APQ registration of an unknown document
            await api.post("/graphql", json={"query": TYPENAME, "extensions": apq(sha(TYPENAME))}),
        ]
        for response in refused:
            assert response.status_code == 400, response.text
            assert codes(response) == ["TRUSTED_DOCUMENT_REQUIRED"], response.text
            assert "data" not in response.json()
        # An unknown hash: not found (Apollo's link then sends the text, which is refused).
        unknown = await api.post("/graphql", json={"extensions": apq(sha(TYPENAME))})
        assert unknown.json() == NOT_FOUND
        stale = await api.post("/graphql", json={"documentId": sha(STALE)})
        assert codes(stale) == ["GRAPHQL_VALIDATION_FAILED"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_trusted_documents_only_applies_to_websocket_subscriptions(
    settings: Settings, database: Database, manifest: Path, protocol: str
) -> None:
    async with (
        server(settings, trusted_documents_path=manifest, trusted_documents_only=True) as api,
        open_ws(str(api.base_url), protocol, {"serviceKey": SERVICE_KEY}) as ws,
    ):
        kind = "subscribe" if protocol == TRANSPORT_WS else "start"
        free = 'subscription { userSessions(userId: "user_ada") { sessionId } }'
        await ws.subscribe(free, id="free")
        refused = await ws.message("free")
        assert refused.kind == "error" and refused.error_codes == ["TRUSTED_DOCUMENT_REQUIRED"]
        await ws.send({"id": "doc", "type": kind, "payload": {"documentId": sha(SESSIONS)}})
        assert await ws.data("doc") == {"userSessions": []}
        by_hash = {"query": None, "extensions": apq(sha(SESSIONS))}
        await ws.send({"id": "apq", "type": kind, "payload": by_hash})
        assert await ws.data("apq") == {"userSessions": []}
    assert protocol in (TRANSPORT_WS, LEGACY_WS)


# -- settings ---------------------------------------------------------------------------------


def test_bad_manifest_settings_fail_naming_the_variable(tmp_path: Path) -> None:
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{ not json")
    not_a_map = tmp_path / "list.json"
    not_a_map.write_text('["query { a }"]')
    cases: list[tuple[dict[str, object], str]] = [
        ({"TRUSTED_DOCUMENTS_PATH": str(tmp_path / "missing.json")}, "cannot read"),
        ({"TRUSTED_DOCUMENTS_PATH": str(bad_json)}, "not valid JSON"),
        ({"TRUSTED_DOCUMENTS_PATH": str(not_a_map)}, "JSON object"),
        ({"TRUSTED_DOCUMENTS_ONLY": "true"}, "needs TRUSTED_DOCUMENTS_PATH"),
        ({"APQ_CACHE_SIZE": "-1"}, "APQ_CACHE_SIZE"),
    ]
    for overrides, text in cases:
        with pytest.raises(SettingsError) as raised:
            load_settings(**overrides)
        message = str(raised.value)
        assert next(iter(overrides)) + ":" in message and text in message, message


def test_apollo_manifest_format_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    operations = [{"id": "abc", "name": "Me", "type": "query", "body": ME}]
    apollo = {"format": "apollo-persisted-query-manifest", "version": 1, "operations": operations}
    path.write_text(json.dumps(apollo))
    settings = load_settings(TRUSTED_DOCUMENTS_PATH=str(path))
    assert settings.trusted_documents_path == path


def test_resolve_passes_ordinary_requests_through() -> None:
    documents = PersistedDocuments()
    assert documents.resolve(TYPENAME) == TYPENAME
    assert not documents.active
    check: Callable[[str], bool] = lambda _text: False  # noqa: E731
    refusing = PersistedDocuments(validate=check)
    assert refusing.resolve(TYPENAME, apq(sha(TYPENAME))) == TYPENAME
    assert refusing.apq is not None and len(refusing.apq) == 0
