"""`import` of Convex snapshots and single-table files, `export` round trips, atomicity.

Real subprocesses of the installed command against the test database; the queries run
against the real app afterwards, as a user of the imported data would.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import os
import signal
import subprocess
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pymongo.database import Database

from datadiver_graph.config import Settings
from datadiver_graph.dev.keys import mint_dev_token
from datadiver_graph.domain.bulk import ImportMode
from datadiver_graph.domain.events import user_channel
from datadiver_graph.domain.importer import TableSource, run_import
from datadiver_graph.domain.store import Store
from datadiver_graph.domain.tables import get_table
from datadiver_graph.fanout import RESYNC
from datadiver_graph.storage import mongo as db
from datadiver_graph.storage.swap import JOURNAL, STAGING_PREFIX, Swap, recover
from tests.cli import assert_one_line_error, clean_env, executable, run
from tests.graphql_client import gql

TABLES = ("users", "sessions", "paymentAttempts")
ADA_ID = "jd7f3k2m9x1q8w4e5r6t7y8u9i0o1p2a"  # Convex ids: base32-ish strings
BOB_ID = "jd7bobbobbobbobbobbobbobbobbob12"


@pytest.fixture
def env(mongo_uri: str, db_name: str, data_dir: Path) -> dict[str, str]:
    return clean_env(MONGODB_URI=mongo_uri, MONGODB_DB=db_name, DATA_DIR=str(data_dir))


def lines(*docs: Any) -> bytes:
    return b"".join(orjson.dumps(doc) + b"\n" for doc in docs)


def int64(value: int) -> dict[str, str]:
    """Convex's internal JSON for an Int64 (`convexToJson`)."""
    return {"$integer": base64.b64encode(value.to_bytes(8, "little", signed=True)).decode()}


def convex_snapshot(path: Path, *, payments: list[dict[str, Any]] | None = None) -> Path:
    """A zip laid out as `npx convex export` writes it."""
    users = [
        {
            "_id": ADA_ID,
            "_creationTime": 1_700_000_000_123.5,
            "externalId": "user_ada",
            "name": "Ada",
            "email": "ada@example.com",
            "preferences": {"theme": "dark", "visits": int64(42), "avatar": {"$bytes": "AAEC"}},
        },
        {"_id": BOB_ID, "_creationTime": 1_700_000_000_200.0, "externalId": "user_bob"},
    ]
    sessions = [
        {
            "_id": "k17sess000000000000000000000001",
            "_creationTime": 1_700_000_001_000.0,
            "sessionId": "sess-ada",
            "userId": "user_ada",
            "metadata": {"doc": "a.pdf"},
            "active": True,
        }
    ]
    if payments is None:
        payments = [
            {
                "_id": "n57pay0000000000000000000000001",
                "_creationTime": 1_700_000_002_000.0,
                "payment_id": "pay_old",
                "userId": ADA_ID,  # v.id("users"): the user's Convex _id
                "status": "failed",
                "amount": "500",  # an Int64 in the export's json format
                "currency": "usd",
            },
            {
                "_id": "n57pay0000000000000000000000002",
                "_creationTime": 1_700_000_003_000.0,
                "payment_id": "pay_new",
                "userId": ADA_ID,
                "status": "paid",
                "amount": "1999",
                "currency": "usd",
            },
        ]
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("README.md", "This is a Convex snapshot export.")
        archive.writestr("_tables/documents.jsonl", lines(*({"name": t} for t in TABLES)))
        archive.writestr("_storage/documents.jsonl", lines({"_id": "kg2file"}))
        archive.writestr("_storage/kg2file", b"\x89PNG")
        archive.writestr("users/documents.jsonl", lines(*users))
        archive.writestr("users/generated_schema.jsonl", b'"{_creationTime: normalfloat64}"\n')
        archive.writestr("sessions/documents.jsonl", lines(*sessions))
        archive.writestr("paymentAttempts/documents.jsonl", lines(*payments))
        archive.writestr(
            "paymentAttempts/generated_schema.jsonl",
            b'"{_creationTime: normalfloat64, amount: int64, payment_id: string}"\n',
        )
        archive.writestr("messages/documents.jsonl", lines({"_id": "m1", "text": "hi"}))
    return path


def all_docs(mongo: Database[dict[str, Any]], table: str) -> list[dict[str, Any]]:
    return list(mongo[table].find({}).sort("_id", 1))


def everything(mongo: Database[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    return {table: all_docs(mongo, table) for table in TABLES}


async def run_async(args: list[str], env: dict[str, str], cwd: Path) -> Any:
    """The CLI in a thread, so a server in this event loop keeps answering meanwhile."""
    return await asyncio.to_thread(run, args, env, cwd)


# --- a Convex snapshot ------------------------------------------------------------------


async def test_a_convex_snapshot_imports_and_every_query_answers_for_its_users(
    mongo: Database[dict[str, Any]],
    env: dict[str, str],
    tmp_path: Path,
    http: httpx.AsyncClient,
    settings: Settings,
) -> None:
    snapshot = convex_snapshot(tmp_path / "snapshot.zip")
    result = await run_async(["import", str(snapshot)], env, tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    stderr = result.stderr.decode()
    assert "Traceback" not in stderr
    assert "skipped _storage/: file storage is not kept here (1 files)" in stderr
    assert "skipped messages/: no such table here" in stderr
    out = result.stdout.decode()
    assert "imported 2 documents into users" in out
    assert "imported 2 documents into paymentAttempts" in out

    ada = mongo.users.find_one({"externalId": "user_ada"})
    assert ada is not None
    assert ada["_id"] == ADA_ID  # Convex's _id kept
    assert ada["createdAt"] == 1_700_000_000_123  # from _creationTime
    assert ada["preferences"] == {"theme": "dark", "visits": 42, "avatar": "AAEC"}
    attempt = mongo.paymentAttempts.find_one({"payment_id": "pay_new"})
    assert attempt is not None
    assert attempt["userId"] == "user_ada"  # the v.id("users") resolved to the Clerk id
    assert attempt["amount"] == 1999  # Int64 from generated_schema.jsonl
    assert not [n for n in mongo.list_collection_names() if n.startswith(STAGING_PREFIX)]

    token = mint_dev_token(settings, "user_ada")
    answer = await gql(
        http,
        "{ getCurrentUser { externalId name } getLatestPayment { paymentId status amount }"
        " getPaymentAttempts(first: 5) { nodes { paymentId } }"
        " getUserSessions { nodes { sessionId } } }",
        token=token,
    )
    assert answer.errors == []
    assert answer.data == {
        "getCurrentUser": {"externalId": "user_ada", "name": "Ada"},
        "getLatestPayment": {"paymentId": "pay_new", "status": "paid", "amount": 1999},
        "getPaymentAttempts": {"nodes": [{"paymentId": "pay_new"}, {"paymentId": "pay_old"}]},
        "getUserSessions": {"nodes": [{"sessionId": "sess-ada"}]},
    }


BROKEN = {
    "_id": "n57pay0000000000000000000000009",
    "_creationTime": 1_700_000_004_000.0,
    "payment_id": "pay_orphan",
    "userId": "jd7nobodynobodynobodynobody00000",
    "status": "paid",
}


def test_a_broken_reference_names_its_line_and_writes_nothing(
    mongo: Database[dict[str, Any]], env: dict[str, str], tmp_path: Path
) -> None:
    good = {**BROKEN, "_id": "n57ok", "payment_id": "pay_ok", "userId": ADA_ID}
    snapshot = convex_snapshot(tmp_path / "s.zip", payments=[good, BROKEN])
    result = run(["import", str(snapshot)], env, tmp_path)
    # Notices come first; the failure is the last line, and the only error.
    stderr = result.stderr.decode()
    assert result.returncode == 1 and "Traceback" not in stderr
    error = stderr.strip().splitlines()[-1]
    assert error.startswith("error: "), stderr
    assert "paymentAttempts/documents.jsonl: line 2: userId" in error
    assert "jd7nobodynobodynobodynobody00000" in error
    assert everything(mongo) == {table: [] for table in TABLES}

    result = run(["import", "--skip-broken-refs", str(snapshot)], env, tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    assert "skipped (broken reference)" in result.stderr.decode()
    assert "line 2" in result.stderr.decode()
    assert [d["payment_id"] for d in all_docs(mongo, "paymentAttempts")] == ["pay_ok"]


# --- single tables: JSONL, JSON, CSV ------------------------------------------------------

USERS = [
    {"externalId": "user_1", "createdAt": 1000, "name": "One", "version": 3},
    {"externalId": "user_2", "createdAt": 2000, "email": "two@example.com"},
]


def as_jsonl(docs: list[dict[str, Any]]) -> bytes:
    return lines(*docs)


def as_json(docs: list[dict[str, Any]]) -> bytes:
    return b"[\n" + b",\n".join(orjson.dumps(doc) for doc in docs) + b"\n]\n"


def as_csv(docs: list[dict[str, Any]]) -> bytes:
    columns = sorted({key for doc in docs for key in doc})
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    for doc in docs:
        writer.writerow(doc)
    return out.getvalue().encode()


WRITERS = {"jsonl": as_jsonl, "json": as_json, "csv": as_csv}


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv"])
def test_a_single_table_imports_from_each_format(
    mongo: Database[dict[str, Any]], env: dict[str, str], tmp_path: Path, fmt: str
) -> None:
    path = tmp_path / f"users.{fmt}"
    path.write_bytes(WRITERS[fmt](USERS))
    result = run(["import", "--table", "users", str(path)], env, tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    stored = {doc["externalId"]: doc for doc in all_docs(mongo, "users")}
    assert stored["user_1"]["name"] == "One" and stored["user_1"]["version"] == 3
    assert stored["user_1"]["createdAt"] == 1000 and stored["user_1"]["updatedAt"] == 1000
    assert stored["user_2"]["email"] == "two@example.com"


def test_format_overrides_the_extension(
    mongo: Database[dict[str, Any]], env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "users.data"
    path.write_bytes(as_csv(USERS))
    result = run(["import", "--table", "users", str(path)], env, tmp_path)
    assert_one_line_error(result, "--format")
    result = run(["import", "--table", "users", "--format", "csv", str(path)], env, tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    assert mongo.users.count_documents({}) == 2


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv"])
def test_a_broken_entry_in_any_format_names_its_line_and_writes_nothing(
    mongo: Database[dict[str, Any]], env: dict[str, str], tmp_path: Path, fmt: str
) -> None:
    docs = [*USERS, {"externalId": "user_3", "createdAt": "yesterday"}]
    path = tmp_path / f"users.{fmt}"
    path.write_bytes(WRITERS[fmt](docs))
    # The bad entry's line: 3 in JSONL, 4 in the JSON array (after "["), 4 in CSV (header).
    line = {"jsonl": 3, "json": 4, "csv": 4}[fmt]
    result = run(["import", "--table", "users", str(path)], env, tmp_path)
    assert_one_line_error(result, f"users.{fmt}: line {line}", "createdAt")
    assert mongo.users.count_documents({}) == 0


def test_a_batch_larger_than_one_write_fails_as_a_whole(
    mongo: Database[dict[str, Any]], env: dict[str, str], tmp_path: Path
) -> None:
    """A repeat far past the first batch: the batches already staged are not kept."""
    docs = [{"externalId": f"user_{i}", "createdAt": i} for i in range(2500)]
    docs.append({"externalId": "user_7", "createdAt": 1})
    path = tmp_path / "users.jsonl"
    path.write_bytes(as_jsonl(docs))
    result = run(["import", "--table", "users", str(path)], env, tmp_path)
    assert_one_line_error(result, "line 2501", "externalId 'user_7' repeats line 8")
    assert mongo.users.count_documents({}) == 0
    assert not [n for n in mongo.list_collection_names() if n.startswith(STAGING_PREFIX)]


# --- export round trips -------------------------------------------------------------------


def seed(mongo: Database[dict[str, Any]]) -> None:
    mongo.users.insert_many(
        [
            {
                "_id": f"u{i}",
                "externalId": f"user_{i}",
                "name": f"U{i}",
                "email": None,
                "imageUrl": None,
                "preferences": {"n": i, "f": 0.25},
                "createdAt": 10 + i,
                "updatedAt": 20 + i,
                "clerkUpdatedAt": 15 if i else None,
                "version": i + 1,
            }
            for i in range(3)
        ]
    )
    mongo.sessions.insert_one(
        {
            "_id": "s1",
            "sessionId": "sess-1",
            "userId": "user_1",
            "active": False,
            "metadata": {"k": [1, None]},
            "createdAt": 1,
            "lastActivity": 2,
            "updatedAt": 3,
            "endedAt": 3,
            "version": 7,
        }
    )


@pytest.mark.parametrize("target", ["snap.zip", "out/"])
def test_export_then_replace_all_restores_exactly(
    mongo: Database[dict[str, Any]], env: dict[str, str], tmp_path: Path, target: str
) -> None:
    seed(mongo)
    before = everything(mongo)
    result = run(["export", "--path", f"{tmp_path}/{target}"], env, tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    snapshot = (
        tmp_path / target if target.endswith(".zip") else next((tmp_path / "out").glob("*.zip"))
    )
    mongo.users.delete_one({"_id": "u0"})
    mongo.users.update_one({"_id": "u1"}, {"$set": {"name": "changed"}, "$inc": {"version": 1}})
    mongo.paymentAttempts.insert_one(
        {"_id": "p9", "payment_id": "pay_9", "status": "paid", "createdAt": 5, "version": 1}
    )
    result = run(["import", "--replace-all", "--yes", str(snapshot)], env, tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    assert everything(mongo) == before  # _id, versions, timestamps; the extra payment gone
    # Indexes came along with the swap.
    assert "by_external_id" in mongo.users.index_information()


def test_export_of_one_table_into_a_directory(
    mongo: Database[dict[str, Any]], env: dict[str, str], tmp_path: Path
) -> None:
    seed(mongo)
    result = run(["export", "--table", "users", "--path", f"{tmp_path}/dir/"], env, tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    exported = [orjson.loads(x) for x in (tmp_path / "dir" / "users.jsonl").read_bytes().split()]
    assert exported == all_docs(mongo, "users")


def test_replace_keeps_tables_not_in_the_file_and_append_refuses_stored_keys(
    mongo: Database[dict[str, Any]], env: dict[str, str], tmp_path: Path
) -> None:
    seed(mongo)
    sessions_before = all_docs(mongo, "sessions")
    path = tmp_path / "users.jsonl"
    path.write_bytes(as_jsonl([{"externalId": "user_new", "createdAt": 1}]))
    result = run(["import", "--table", "users", "--replace", str(path)], env, tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    assert [d["externalId"] for d in all_docs(mongo, "users")] == ["user_new"]
    assert all_docs(mongo, "sessions") == sessions_before
    result = run(["import", "--table", "users", "--append", str(path)], env, tmp_path)
    assert_one_line_error(result, "line 1", "user_new", "nothing written")


# --- atomicity ------------------------------------------------------------------------------


def test_a_killed_replace_leaves_the_old_data(
    mongo: Database[dict[str, Any]], env: dict[str, str], tmp_path: Path
) -> None:
    seed(mongo)
    before = everything(mongo)
    path = tmp_path / "big.jsonl"
    with path.open("wb") as out:
        for i in range(300_000):
            out.write(orjson.dumps({"externalId": f"user_big_{i}", "createdAt": i}) + b"\n")
    process = subprocess.Popen(
        [executable(), "import", "--table", "users", "--replace", str(path)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # A few batches in: far from the commit (300,000 lines), however slow the machine.
        deadline = time.monotonic() + 90
        staged = 0
        while time.monotonic() < deadline and staged < 5_000:
            names = [n for n in mongo.list_collection_names() if n.startswith(STAGING_PREFIX)]
            staged = sum(mongo[n].estimated_document_count() for n in names)
            time.sleep(0.05)
        assert staged >= 5_000, "the import never got going"
        assert process.poll() is None, "the import ended before it was killed"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    assert everything(mongo) == before
    [entry] = list(mongo[JOURNAL].find({}))
    assert entry["state"] == "staging"  # it died before its commit point

    # Once its entry has gone stale, the next import drops the abandoned staging.
    mongo[JOURNAL].update_one({"_id": entry["_id"]}, {"$set": {"heartbeat": 0}})
    small = tmp_path / "one.jsonl"
    small.write_bytes(as_jsonl([{"sessionId": "sess-new", "userId": "user_1", "createdAt": 1}]))
    result = run(["import", "--table", "sessions", "--append", str(small)], env, tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    assert not [n for n in mongo.list_collection_names() if n.startswith(STAGING_PREFIX)]
    assert all_docs(mongo, "users") == before["users"]


async def test_a_swap_interrupted_after_its_commit_point_is_finished_by_recover(
    database: db.Database,
) -> None:
    await database.users.insert_one({"_id": "old", "externalId": "user_old"})
    await database.sessions.insert_one({"_id": "s-old", "sessionId": "keep"})
    swap = Swap(database)
    await swap.begin()
    users = await swap.stage("users", append=False)
    sessions = await swap.stage("sessions", append=True)
    await database.collection(users).insert_one({"_id": "new", "externalId": "user_new"})
    await database.collection(sessions).insert_one({"_id": "s-new", "sessionId": "added"})
    # The commit point written, then a crash before any move.
    await database.collection(JOURNAL).update_one(
        {"_id": swap.token}, {"$set": {"state": "committed"}}
    )
    await recover(database)
    assert [d["_id"] async for d in database.users.find({})] == ["new"]
    assert sorted([d["_id"] async for d in database.sessions.find({})]) == ["s-new", "s-old"]
    assert await database.collection(JOURNAL).count_documents({}) == 0
    names = await database.db.list_collection_names()
    assert not [n for n in names if n.startswith(STAGING_PREFIX)]
    await recover(database)  # finishing twice changes nothing
    assert await database.users.count_documents({}) == 1


# --- events -----------------------------------------------------------------------------------


async def test_an_import_tells_subscribers_to_re_read_with_one_message(
    store: Store, tmp_path: Path
) -> None:
    path = tmp_path / "users.jsonl"
    path.write_bytes(as_jsonl([{"externalId": f"user_{i}", "createdAt": i} for i in range(2500)]))
    source = TableSource(
        get_table("users"), str(path), "jsonl", path.stat().st_size, lambda: path.open("rb")
    )
    published = store.events.published
    async with (
        store.events.subscribe(user_channel("user_7")) as user,
        store.events.subscribe("session:sess-x") as session,
    ):
        await run_import(store, [source], ImportMode.EMPTY_ONLY)
        item = await asyncio.wait_for(user.next(), 5)
        assert item is RESYNC
        assert session.queued == 0  # sessions were not imported
    # One re-read message (and the operators' one-line summary of it), not one per document.
    assert store.events.published - published <= 2
