"""`datadiver-graph sync-clerk` against a local server shaped like Clerk's Backend API.

Clerk itself is out of reach here, so a Starlette app serves `GET /v1/users` as Clerk
does: a JSON array per page (`limit`, `offset`, `order_by`), a bearer secret key, and one
429 with `Retry-After` part way through; and `GET /v1/users/{id}`: the user, or a 404 once
Clerk deleted it. A user it leaves out of the list stands for one an offset shift skipped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo.database import Database
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from datadiver_graph.app import create_app
from datadiver_graph.config import Settings
from datadiver_graph.domain import clerk_sync, events, users
from datadiver_graph.domain.store import Store
from datadiver_graph.storage.mongo import Database as StoreDatabase
from tests.clerk_fixtures import SERVICE_KEY
from tests.cli import assert_one_line_error, clean_env, run, run_on_terminal
from tests.graphql_client import gql
from tests.servers import serve_app

SECRET = "sk_test_local"
COUNT = 1_203  # three pages of Clerk's largest size (500)


def clerk_user(i: int, *, updated_at: int = 2_000, first_name: str | None = None) -> dict[str, Any]:
    return {
        "id": f"user_{i:05d}",
        "object": "user",
        "first_name": first_name or f"First{i}",
        "last_name": "Clerk",
        "image_url": f"https://img.clerk.com/{i}.png",
        "primary_email_address_id": f"idn_{i}",
        "email_addresses": [
            {"id": f"idn_other_{i}", "email_address": f"other{i}@example.com"},
            {"id": f"idn_{i}", "email_address": f"u{i}@example.com"},
        ],
        "created_at": 1_000 + i,
        "updated_at": updated_at,
    }


@dataclass
class FakeClerk:
    users: list[dict[str, Any]]
    requests: list[dict[str, str]] = field(default_factory=list)
    throttle_at_offset: int | None = 500  # answer 429 once when this page is asked for
    throttled_at: float | None = None
    retried_at: float | None = None
    unlisted: set[str] = field(default_factory=set)  # in Clerk, but left out of the list
    lookups: list[str] = field(default_factory=list)
    throttle_lookup: bool = False  # answer the first `GET /v1/users/{id}` 429 once
    lookup_throttled_at: float | None = None
    lookup_retried_at: float | None = None

    async def list_users(self, request: Request) -> JSONResponse:
        if request.headers.get("authorization") != f"Bearer {SECRET}":
            return JSONResponse({"errors": [{"code": "authentication_invalid"}]}, 401)
        params = dict(request.query_params)
        self.requests.append(params)
        offset, limit = int(params.get("offset", 0)), int(params.get("limit", 10))
        if offset == self.throttle_at_offset:
            if self.throttled_at is None:
                self.throttled_at = time.monotonic()
                return JSONResponse(
                    {"errors": [{"code": "too_many_requests"}]}, 429, {"Retry-After": "1"}
                )
            self.retried_at = self.retried_at or time.monotonic()
        listed = [user for user in self.users if user["id"] not in self.unlisted]
        ordered = sorted(listed, key=lambda u: u["created_at"])
        return JSONResponse(ordered[offset : offset + min(limit, 500)])

    async def get_user(self, request: Request) -> JSONResponse:
        if request.headers.get("authorization") != f"Bearer {SECRET}":
            return JSONResponse({"errors": [{"code": "authentication_invalid"}]}, 401)
        user_id = request.path_params["user_id"]
        self.lookups.append(user_id)
        if self.throttle_lookup:
            if self.lookup_throttled_at is None:
                self.lookup_throttled_at = time.monotonic()
                return JSONResponse(
                    {"errors": [{"code": "too_many_requests"}]}, 429, {"Retry-After": "1"}
                )
            self.lookup_retried_at = self.lookup_retried_at or time.monotonic()
        for user in self.users:
            if user["id"] == user_id:
                return JSONResponse(user)
        return JSONResponse({"errors": [{"code": "resource_not_found"}]}, 404)


@pytest.fixture
def clerk() -> FakeClerk:
    users = [clerk_user(i) for i in range(COUNT)]
    users[2] = clerk_user(2, updated_at=2_000, first_name="Newer")  # older here: updated
    return FakeClerk(users)


@pytest.fixture
async def clerk_url(clerk: FakeClerk) -> AsyncIterator[str]:
    app = Starlette(
        routes=[
            Route("/v1/users", clerk.list_users),
            Route("/v1/users/{user_id}", clerk.get_user),
        ]
    )
    async with serve_app(app) as url:
        yield f"{url}/v1"


@pytest.fixture
def env(mongo_uri: str, db_name: str, data_dir: Path, clerk_url: str) -> dict[str, str]:
    return clean_env(
        MONGODB_URI=mongo_uri,
        MONGODB_DB=db_name,
        DATA_DIR=str(data_dir),
        CLERK_SECRET_KEY=SECRET,
        CLERK_API_URL=clerk_url,
    )


def stored_user(i: int, *, clerk_updated_at: int, name: str) -> dict[str, Any]:
    return {
        "_id": f"here{i}",
        "externalId": f"user_{i:05d}",
        "name": name,
        "email": f"u{i}@example.com",
        "imageUrl": f"https://img.clerk.com/{i}.png",
        "preferences": {"kept": True},
        "createdAt": 1_000 + i,
        "updatedAt": 9_999,
        "clerkUpdatedAt": clerk_updated_at,
        "version": 4,
    }


def seed_here(mongo: Database[dict[str, Any]]) -> None:
    mongo.users.insert_many(
        [
            stored_user(1, clerk_updated_at=2_000, name="First1 Clerk"),  # unchanged
            stored_user(2, clerk_updated_at=1_500, name="Old Name"),  # older here: updated
            stored_user(3, clerk_updated_at=3_000, name="Renamed Here"),  # newer here: skipped
        ]
    )
    # Deleted here by a user.deleted webhook that reached us; Clerk's list still has it.
    mongo.userTombstones.insert_one({"_id": "user_00004", "deletedAt": 5})


async def sync(args: list[str], env: dict[str, str], cwd: Path) -> Any:
    # In a thread: the fake Clerk answers from this test's event loop meanwhile. An empty
    # stdin, not a terminal: nothing is asked.
    return await asyncio.to_thread(run, ["sync-clerk", *args], env, cwd, stdin=b"", timeout=120)


async def test_dry_run_reports_the_drift_and_writes_nothing(
    mongo: Database[dict[str, Any]], env: dict[str, str], tmp_path: Path, clerk: FakeClerk
) -> None:
    seed_here(mongo)
    before = list(mongo.users.find({}).sort("_id", 1))
    result = await sync(["--dry-run"], env, tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    assert (
        f"users: {COUNT - 4} would be created, 1 would be updated, 1 unchanged, 2 skipped"
        in result.stdout.decode()
    )
    assert list(mongo.users.find({}).sort("_id", 1)) == before


async def test_sync_pages_waits_out_a_429_and_applies_like_the_webhooks(
    mongo: Database[dict[str, Any]], env: dict[str, str], tmp_path: Path, clerk: FakeClerk
) -> None:
    seed_here(mongo)
    result = await sync([], env, tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    assert (
        f"users: {COUNT - 4} created, 1 updated, 1 unchanged, 2 skipped" in result.stdout.decode()
    )
    stderr = result.stderr.decode()
    assert "user_00003: newer here than in Clerk" in stderr
    assert "user_00004: deleted here (stays deleted)" in stderr

    # Paged by offset at Clerk's largest page size, in creation order.
    offsets = [int(r["offset"]) for r in clerk.requests]
    assert offsets == [0, 500, 500, 1000]
    assert {r["limit"] for r in clerk.requests} == {"500"}
    assert {r["order_by"] for r in clerk.requests} == {"+created_at"}
    # The 429's Retry-After was honoured.
    assert clerk.throttled_at is not None and clerk.retried_at is not None
    assert clerk.retried_at - clerk.throttled_at >= 0.9

    assert mongo.users.count_documents({}) == COUNT - 1  # every user but the deleted one
    new = mongo.users.find_one({"externalId": "user_00010"})
    assert new is not None
    # The webhook mapping: full name, the primary address (not the first), Clerk's times.
    assert new["name"] == "First10 Clerk" and new["email"] == "u10@example.com"
    assert new["createdAt"] == 1_010 and new["clerkUpdatedAt"] == 2_000
    updated = mongo.users.find_one({"externalId": "user_00002"})
    assert updated is not None
    assert updated["name"] == "Newer Clerk" and updated["version"] == 5
    assert updated["preferences"] == {"kept": True}  # ours, untouched by Clerk
    newer_here = mongo.users.find_one({"externalId": "user_00003"})
    assert newer_here is not None and newer_here["name"] == "Renamed Here"
    assert mongo.users.find_one({"externalId": "user_00004"}) is None  # stays deleted

    clerk.throttle_at_offset = None
    again = await sync([], env, tmp_path)
    assert again.returncode == 0, again.stderr.decode()
    assert f"users: 0 created, 0 updated, {COUNT - 2} unchanged, 2 skipped" in (
        again.stdout.decode()
    )


async def test_a_refused_key_and_a_missing_key_are_one_line(
    env: dict[str, str], tmp_path: Path
) -> None:
    result = await sync([], {**env, "CLERK_SECRET_KEY": "sk_wrong"}, tmp_path)
    assert_one_line_error(result, "refused CLERK_SECRET_KEY")
    without = {key: value for key, value in env.items() if key != "CLERK_SECRET_KEY"}
    result = await sync([], without, tmp_path)
    assert_one_line_error(result, "CLERK_SECRET_KEY")


# --- users here that Clerk no longer has ----------------------------------------------------

GONE = [f"user_{i:05d}" for i in range(100, 153)]  # 53: more than the 50 lines listed


def seed_gone(mongo: Database[dict[str, Any]], clerk: FakeClerk) -> None:
    """Clerk has users 0-5 but lists only 0-4; here are 1, 5, the 53 Clerk deleted while
    its webhooks were missed, and one deleted here already (its tombstone beside a
    document a late upsert left)."""
    clerk.users = [clerk_user(i) for i in range(6)]
    clerk.throttle_at_offset = None
    clerk.unlisted = {"user_00005"}
    mongo.users.insert_many(
        [
            stored_user(1, clerk_updated_at=2_000, name="First1 Clerk"),  # unchanged
            stored_user(5, clerk_updated_at=1_500, name="Old Name"),  # updated by lookup
            stored_user(99, clerk_updated_at=2_000, name="Deleted Here"),
            *(stored_user(int(i[5:]), clerk_updated_at=2_000, name="Gone") for i in GONE),
        ]
    )
    mongo.userTombstones.insert_one({"_id": "user_00099", "deletedAt": 5})


def gone_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "gone from Clerk" in line]


def stored_ids(mongo: Database[dict[str, Any]]) -> set[str]:
    return {doc["externalId"] for doc in mongo.users.find({}, {"externalId": 1})}


async def test_users_gone_from_clerk_are_looked_up_reported_and_kept(
    mongo: Database[dict[str, Any]], env: dict[str, str], tmp_path: Path, clerk: FakeClerk
) -> None:
    seed_gone(mongo, clerk)
    clerk.throttle_lookup = True
    result = await sync([], env, tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    assert (
        "users: 4 created, 1 updated, 1 unchanged, 0 skipped, "
        "53 gone from Clerk (kept; --delete-missing deletes them)"
    ) in result.stdout.decode()
    assert gone_lines(result.stderr.decode()) == [
        *(f"gone from Clerk: {i}" for i in GONE[:50]),
        "... and 3 more gone from Clerk",
    ]
    # Only users no page listed were asked for, one by one; the 429 was waited out.
    assert clerk.lookups == ["user_00005", "user_00005", *GONE]
    assert clerk.lookup_throttled_at is not None and clerk.lookup_retried_at is not None
    assert clerk.lookup_retried_at - clerk.lookup_throttled_at >= 0.9
    # Kept: nothing deleted, nothing tombstoned. The unlisted user still in Clerk applied.
    assert stored_ids(mongo) >= set(GONE)
    assert mongo.userTombstones.count_documents({}) == 1
    unlisted = mongo.users.find_one({"externalId": "user_00005"})
    assert unlisted is not None and unlisted["name"] == "First5 Clerk"


@pytest.fixture
async def api(settings: Settings, database: StoreDatabase) -> AsyncIterator[httpx.AsyncClient]:
    served = settings.model_copy(update={"service_api_keys": [SERVICE_KEY]})
    async with (
        serve_app(create_app(served)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        yield client


async def get_user(api: httpx.AsyncClient, user_id: str) -> Any:
    query = "query($userId: String!) { getUser(userId: $userId) { externalId name } }"
    result = await gql(api, query, {"userId": user_id}, service_key=SERVICE_KEY)
    assert result.errors == [], result.errors
    return result.data["getUser"]


async def test_delete_missing_deletes_them_for_good(
    mongo: Database[dict[str, Any]],
    env: dict[str, str],
    tmp_path: Path,
    clerk: FakeClerk,
    api: httpx.AsyncClient,
) -> None:
    seed_gone(mongo, clerk)
    assert await get_user(api, "user_00100") == {"externalId": "user_00100", "name": "Gone"}
    result = await sync(["--delete-missing"], env, tmp_path)  # not a terminal: not asked
    assert result.returncode == 0, result.stderr.decode()
    assert (
        "users: 4 created, 1 updated, 1 unchanged, 0 skipped, 53 gone from Clerk (53 deleted)"
    ) in result.stdout.decode()
    assert "[y/N]" not in result.stderr.decode()
    assert len(gone_lines(result.stderr.decode())) == 51
    assert stored_ids(mongo).isdisjoint(GONE)
    assert {doc["_id"] for doc in mongo.userTombstones.find({})} == {"user_00099", *GONE}
    assert await get_user(api, "user_00100") is None
    assert await get_user(api, "user_00005") == {"externalId": "user_00005", "name": "First5 Clerk"}

    # A later list that has one of them again (stale, or a 404 in error) brings none back.
    clerk.users.append(clerk_user(100))
    again = await sync(["--delete-missing"], env, tmp_path)
    assert again.returncode == 0, again.stderr.decode()
    assert (
        again.stdout.decode()
        == "users: 0 created, 0 updated, 6 unchanged, 1 skipped, 0 gone from Clerk\n"
    )
    assert "skipped: user_00100: deleted here (stays deleted)" in again.stderr.decode()
    assert "user_00100" not in stored_ids(mongo)
    assert await get_user(api, "user_00100") is None


async def test_a_key_of_another_instance_deletes_nothing(
    mongo: Database[dict[str, Any]], env: dict[str, str], tmp_path: Path, clerk: FakeClerk
) -> None:
    """Clerk lists none of the users stored here (a development key against production
    data, say) and answers 404 for each: --delete-missing refuses instead of deleting all."""
    seed_gone(mongo, clerk)
    clerk.users = [clerk_user(i) for i in range(200, 203)]
    clerk.unlisted = set()
    mongo.users.delete_many({"externalId": {"$in": ["user_00001", "user_00005"]}})
    before = stored_ids(mongo)
    result = await sync(["--delete-missing", "--yes"], env, tmp_path)
    stderr = result.stderr.decode()
    assert result.returncode == 1 and "Traceback" not in stderr, stderr
    last = stderr.splitlines()[-1]  # after the users it would have deleted
    assert last.startswith("error: refusing to delete") and "CLERK_SECRET_KEY" in last, stderr
    assert stored_ids(mongo) - {"user_00200", "user_00201", "user_00202"} == before
    assert {doc["_id"] for doc in mongo.userTombstones.find({})} == {"user_00099"}


async def test_dry_run_delete_missing_reports_and_writes_nothing(
    mongo: Database[dict[str, Any]], env: dict[str, str], tmp_path: Path, clerk: FakeClerk
) -> None:
    seed_gone(mongo, clerk)
    before = list(mongo.users.find({}).sort("_id", 1))
    result = await sync(["--dry-run", "--delete-missing"], env, tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    assert (
        "users: 4 would be created, 1 would be updated, 1 unchanged, 0 skipped, "
        "53 gone from Clerk (would be deleted)"
    ) in result.stdout.decode()
    assert len(gone_lines(result.stderr.decode())) == 51
    assert list(mongo.users.find({}).sort("_id", 1)) == before
    assert mongo.userTombstones.count_documents({}) == 1


async def test_on_a_terminal_delete_missing_asks_first_unless_yes(
    mongo: Database[dict[str, Any]], env: dict[str, str], tmp_path: Path, clerk: FakeClerk
) -> None:
    seed_gone(mongo, clerk)
    declined = await asyncio.to_thread(
        run_on_terminal, ["sync-clerk", "--delete-missing"], env, tmp_path, b"n\n"
    )
    assert declined.returncode == 0, declined.terminal
    assert "Delete the 53 users gone from Clerk here too? [y/N]" in declined.terminal
    assert "53 gone from Clerk (kept; deleting was not confirmed)" in declined.stdout.decode()
    assert stored_ids(mongo) >= set(GONE)

    agreed = await asyncio.to_thread(
        run_on_terminal, ["sync-clerk", "--delete-missing", "--yes"], env, tmp_path, b""
    )
    assert agreed.returncode == 0, agreed.terminal
    assert "[y/N]" not in agreed.terminal
    assert "53 gone from Clerk (53 deleted)" in agreed.stdout.decode()
    assert stored_ids(mongo).isdisjoint(GONE)


async def test_deleting_publishes_what_the_user_deleted_webhook_does(
    store: Store, clerk: FakeClerk, clerk_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(clerk_sync, "STORED_BATCH", 2)  # stored ids read over three queries
    clerk.users = [clerk_user(1)]
    clerk.throttle_at_offset = None
    gone = GONE[:3]
    for external_id in ["user_00001", *gone]:
        profile = users.ClerkProfile(external_id, "Gone", None, None, 1_000, 1_000)
        await users.upsert_from_clerk(store, profile)
    channels = [events.user_channel(external_id) for external_id in gone]
    async with store.events.subscribe(*channels) as stream, httpx.AsyncClient() as client:
        report = await clerk_sync.sync_users(store, client, SECRET, base_url=clerk_url)
        assert report.gone == gone
        await clerk_sync.delete_gone(store, report)
        published = [await asyncio.wait_for(anext(stream), 5) for _ in gone]
    assert [(e.kind, e.record["externalId"], e.record["name"]) for e in published] == [
        ("user.deleted", external_id, "Gone") for external_id in gone
    ]
    assert report.deleted == 3 and report.updated == 1  # user_00001, from Clerk's list
    for external_id in gone:
        assert await users.get_unless_deleted(store, external_id) is None
        assert await users.is_deleted(store, external_id)
