"""Merges by top-level key never conflict: concurrent writers of distinct keys all succeed
and every key is stored (sessions' metadata, users' preferences, Clerk user.updated)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx
import orjson
import pytest
from pydantic import SecretStr

from datadiver_graph.app import create_app
from datadiver_graph.config import Settings
from datadiver_graph.dev.keys import mint_dev_token
from datadiver_graph.domain import sessions
from datadiver_graph.domain.errors import InvalidInput
from datadiver_graph.domain.json_values import MAX_OBJECT_BYTES
from datadiver_graph.domain.store import Store
from datadiver_graph.storage.mongo import Database
from tests.graphql_client import gql
from tests.servers import serve_app
from tests.webhook_support import SECRET, T0, USER_CREATED, sign, user_event

WRITERS = 50


@pytest.fixture
async def client(settings: Settings, database: Database) -> AsyncIterator[httpx.AsyncClient]:
    configured = settings.model_copy(
        update={"clerk_webhook_secret": SecretStr(SECRET), "rate_limit_per_minute": 0}
    )
    async with (
        serve_app(create_app(configured)) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        yield http


@pytest.fixture
def token(settings: Settings) -> Callable[[str], str]:
    return lambda user: mint_dev_token(settings, user)


async def test_concurrent_distinct_key_metadata_merges_all_succeed(
    client: httpx.AsyncClient, database: Database, token: Callable[[str], str]
) -> None:
    ada = token("user_ada")
    created = await gql(
        client,
        'mutation { createSession(sessionId: "s", metadata: {keep: 1}) { version } }',
        token=ada,
    )
    assert created.errors == []
    update = 'mutation($m: JSON) { updateSession(sessionId: "s", metadata: $m) { version } }'
    results = await asyncio.gather(
        *(gql(client, update, {"m": {f"k{i}": i}}, token=ada) for i in range(WRITERS))
    )
    assert [r.codes for r in results if r.errors] == []
    stored = await database.sessions.find_one({"sessionId": "s"})
    assert stored is not None
    assert stored["metadata"] == {"keep": 1, **{f"k{i}": i for i in range(WRITERS)}}
    assert stored["version"] == 1 + WRITERS
    # Each writer saw its own write: versions 2..51, each once.
    versions = sorted(r.data["updateSession"]["version"] for r in results)
    assert versions == list(range(2, 2 + WRITERS))


async def test_a_null_removes_its_key_among_concurrent_merges(
    client: httpx.AsyncClient, database: Database, token: Callable[[str], str]
) -> None:
    ada = token("user_ada")
    await gql(
        client,
        'mutation { createSession(sessionId: "s", metadata: {gone: 1, stays: 2}) { id } }',
        token=ada,
    )
    update = 'mutation($m: JSON) { updateSession(sessionId: "s", metadata: $m) { version } }'
    patches = [{"gone": None}, *({f"k{i}": i} for i in range(20))]
    results = await asyncio.gather(*(gql(client, update, {"m": p}, token=ada) for p in patches))
    assert [r.codes for r in results if r.errors] == []
    stored = await database.sessions.find_one({"sessionId": "s"})
    assert stored is not None
    assert stored["metadata"] == {"stays": 2, **{f"k{i}": i for i in range(20)}}


async def test_concurrent_distinct_key_preference_merges_all_succeed(
    client: httpx.AsyncClient, database: Database, token: Callable[[str], str]
) -> None:
    body, headers = sign(user_event("user.created", "user_ada"))
    assert (await client.post("/webhooks/clerk", content=body, headers=headers)).status_code == 200
    ada = token("user_ada")
    update = "mutation($p: JSON) { updateUser(preferences: $p) { version } }"
    results = await asyncio.gather(
        *(gql(client, update, {"p": {f"k{i}": i}}, token=ada) for i in range(WRITERS))
    )
    assert [r.codes for r in results if r.errors] == []
    stored = await database.users.find_one({"externalId": "user_ada"})
    assert stored is not None
    assert stored["preferences"] == {f"k{i}": i for i in range(WRITERS)}


async def test_concurrent_user_updated_webhooks_and_merges_all_apply(
    client: httpx.AsyncClient, database: Database, token: Callable[[str], str]
) -> None:
    """Clerk's deliveries and the user's own preference writes, at the same time on one
    user: every delivery answers 200, every merge succeeds, the newest profile wins."""
    body, headers = sign(user_event("user.created", "user_ada", updated_at=T0))
    assert (await client.post("/webhooks/clerk", content=body, headers=headers)).status_code == 200
    deliveries = [
        sign(user_event("user.updated", "user_ada", updated_at=T0 + i, first_name=f"N{i}"))
        for i in range(1, 11)
    ]
    ada = token("user_ada")
    update = "mutation($p: JSON) { updateUser(preferences: $p) { version } }"
    hooks = [client.post("/webhooks/clerk", content=b, headers=h) for b, h in deliveries]
    merges = [gql(client, update, {"p": {f"k{i}": i}}, token=ada) for i in range(20)]
    answers = await asyncio.gather(*hooks, *merges)
    statuses = [a.status_code for a in answers[:10]]  # type: ignore[union-attr]
    assert statuses == [200] * 10, [a.text for a in answers[:10]]  # type: ignore[union-attr]
    assert [r.codes for r in answers[10:] if r.errors] == []  # type: ignore[union-attr]
    stored = await database.users.find_one({"externalId": "user_ada"})
    assert stored is not None
    assert stored["name"] == f"N10 {USER_CREATED['data']['last_name']}"
    assert stored["preferences"] == {f"k{i}": i for i in range(20)}


async def test_user_updated_webhooks_on_two_instances_all_apply(
    settings: Settings, database: Database, token: Callable[[str], str]
) -> None:
    """Two instances (as `serve --workers 2`) each group-commit their own deliveries; with
    preference merges landing meanwhile, every delivery still answers 200 and applies."""
    configured = settings.model_copy(
        update={"clerk_webhook_secret": SecretStr(SECRET), "rate_limit_per_minute": 0}
    )
    async with (
        serve_app(create_app(configured)) as one,
        serve_app(create_app(configured)) as two,
        httpx.AsyncClient(timeout=30) as http,
    ):
        body, headers = sign(user_event("user.created", "user_ada", updated_at=T0))
        assert (await http.post(f"{one}/webhooks/clerk", content=body, headers=headers)).is_success
        hooks = []
        for i in range(1, 31):
            body, headers = sign(
                user_event("user.updated", "user_ada", updated_at=T0 + i, first_name=f"N{i}")
            )
            url = (one, two)[i % 2]
            hooks.append(http.post(f"{url}/webhooks/clerk", content=body, headers=headers))
        update = "mutation($p: JSON) { updateUser(preferences: $p) { version } }"
        ada = token("user_ada")
        merges = []
        for i in range(30):
            client = httpx.AsyncClient(base_url=(one, two)[i % 2], timeout=30)
            merges.append(gql(client, update, {"p": {f"k{i}": i}}, token=ada))
        answers = await asyncio.gather(*hooks, *merges)
    assert [a.status_code for a in answers[:30]] == [200] * 30  # type: ignore[union-attr]
    assert [r.codes for r in answers[30:] if r.errors] == []  # type: ignore[union-attr]
    stored = await database.users.find_one({"externalId": "user_ada"})
    assert stored is not None
    assert stored["name"] == f"N30 {USER_CREATED['data']['last_name']}"
    assert stored["preferences"] == {f"k{i}": i for i in range(30)}


async def test_the_size_limit_holds_for_merges_of_a_large_object(store: Store) -> None:
    """Past what a merge unseen may add, the merge reads and checks the whole object: the
    limit is never passed, and what fits is merged."""
    big = {f"k{i}": "x" * 1_000 for i in range(15)}  # 15 KB of the 16 KiB allowed
    await sessions.create(store, "user_ada", big, session_id="s")
    fits = await sessions.update(store, "s", metadata={"small": 1, "k0": None})
    assert fits.metadata == {**{k: v for k, v in big.items() if k != "k0"}, "small": 1}
    with pytest.raises(InvalidInput, match="the limit is"):
        await sessions.update(store, "s", metadata={"k0": "y" * 3_000})
    stored = await store.db.sessions.find_one({"sessionId": "s"})
    assert stored is not None and "k0" not in stored["metadata"]
    assert len(orjson.dumps(stored["metadata"])) <= MAX_OBJECT_BYTES


async def test_escaped_characters_cannot_pass_the_limit_through_a_merge(store: Store) -> None:
    """A control character is one byte stored and six as JSON: the merge unseen allows for it."""
    await sessions.create(store, "user_ada", {"a": "\x01" * 2_700}, session_id="s")
    with pytest.raises(InvalidInput, match="the limit is"):
        await sessions.update(store, "s", metadata={"b": "\x01" * 100})
    stored = await store.db.sessions.find_one({"sessionId": "s"})
    assert stored is not None and set(stored["metadata"]) == {"a"}
