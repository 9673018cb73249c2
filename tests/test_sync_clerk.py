"""`datadiver-graph sync-clerk` against a local server shaped like Clerk's Backend API.

Clerk itself is out of reach here, so a Starlette app serves `GET /v1/users` as Clerk
does: a JSON array per page (`limit`, `offset`, `order_by`), a bearer secret key, and one
429 with `Retry-After` part way through.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.cli import assert_one_line_error, clean_env, run
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
        ordered = sorted(self.users, key=lambda u: u["created_at"])
        return JSONResponse(ordered[offset : offset + min(limit, 500)])


@pytest.fixture
def clerk() -> FakeClerk:
    users = [clerk_user(i) for i in range(COUNT)]
    users[2] = clerk_user(2, updated_at=2_000, first_name="Newer")  # older here: updated
    return FakeClerk(users)


@pytest.fixture
async def clerk_url(clerk: FakeClerk) -> AsyncIterator[str]:
    app = Starlette(routes=[Route("/v1/users", clerk.list_users)])
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
    # In a thread: the fake Clerk answers from this test's event loop meanwhile.
    return await asyncio.to_thread(run, ["sync-clerk", *args], env, cwd, timeout=120)


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
    assert "user_00004: deleted here (by webhook)" in stderr

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
