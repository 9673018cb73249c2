"""`datadiver-graph import` / `export` run as real subprocesses against the test database."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from pymongo.database import Database

from datadiver_graph.domain import payments, sessions, snapshot, users
from datadiver_graph.domain.store import Store
from datadiver_graph.domain.tables import TABLES as TABLE_SPECS
from datadiver_graph.storage import mongo as db
from tests.cli import assert_one_line_error, clean_env, run, run_on_terminal
from tests.mongo_commands import commands, plan_stages

TABLES = ("users", "sessions", "paymentAttempts")


@pytest.fixture
def env(mongo_uri: str, db_name: str, tmp_path: Path) -> dict[str, str]:
    return clean_env(MONGODB_URI=mongo_uri, MONGODB_DB=db_name, DATA_DIR=str(tmp_path / "data"))


def jsonl(path: Path, *docs: Any) -> Path:
    path.write_bytes(b"".join(orjson.dumps(doc) + b"\n" for doc in docs))
    return path


def session_line(session_id: str, **extra: Any) -> dict[str, Any]:
    return {"sessionId": session_id, "userId": "user_a", "createdAt": 1_000, **extra}


def all_docs(mongo: Database[dict[str, Any]], table: str) -> list[dict[str, Any]]:
    return list(mongo[table].find({}).sort("_id", 1))


def parse_jsonl(data: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in data.splitlines() if line.strip()]


def seed(mongo: Database[dict[str, Any]]) -> None:
    """Documents shaped exactly as the domain stores them, with every kind of field."""
    user_docs = [
        users.User(
            id=f"u{i}",
            external_id=f"user_{i}",
            name=f"User {i}",
            email=f"u{i}@example.com",
            image_url="https://img.example.com/a.png" if i else None,
            preferences={"theme": "dark", "n": i, "ratio": 0.5, "tags": ["a", {"b": None}]},
            created_at=1_700_000_000_000 + i,
            updated_at=1_700_000_000_500 + i,
            clerk_updated_at=1_700_000_000_400 if i else None,
            version=i + 1,
        ).to_doc()
        for i in range(3)
    ]
    session_docs = [
        sessions.Session(
            id=f"s{i}",
            session_id=f"sess-{i}",
            user_id=f"user_{i % 2}",
            active=i != 1,
            metadata={"doc": f"file{i}.pdf", "unicode": "żółw ✓"},
            created_at=1_000 + i,
            last_activity=2_000 + i,
            updated_at=2_000 + i,
            ended_at=3_000 if i == 1 else None,
            version=2,
        ).to_doc()
        for i in range(4)
    ]
    payment_docs = [
        payments.new_attempt(
            id=f"p{i}",
            payment_id=f"pay_{i}",
            user_id="user_0" if i else None,
            status=["paid", "failed", "pending"][i],
            amount=1999 * i,
            currency="usd",
            created_at=5_000 + i,
            payer={"user_id": "user_0", "email": "u0@example.com"},
            totals={"grand_total": {"amount": 1999, "currency": "USD"}},
            subscription_items=[{"plan": {"slug": "pro"}}],
            failed_reason={"code": "card_declined"} if i == 1 else None,
            paid_at=5_100 if i == 0 else None,
            charge_type="recurring",
            updated_at=5_200,
        ).to_doc()
        for i in range(3)
    ]
    mongo.users.insert_many(user_docs)
    mongo.sessions.insert_many(session_docs)
    mongo.paymentAttempts.insert_many(payment_docs)


# --- export -------------------------------------------------------------------------------


def test_export_a_table_to_stdout(
    mongo: Database[dict[str, Any]], env: dict[str, str], tmp_path: Path
) -> None:
    seed(mongo)
    result = run(["export", "--table", "sessions"], env, tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    assert parse_jsonl(result.stdout) == all_docs(mongo, "sessions")
    assert "exported 4 documents from sessions" in result.stderr.decode()


def test_export_a_table_to_a_file(
    mongo: Database[dict[str, Any]], env: dict[str, str], tmp_path: Path
) -> None:
    seed(mongo)
    target = tmp_path / "users.jsonl"
    result = run(["export", "--table", "users", "--path", str(target)], env, tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b""
    assert parse_jsonl(target.read_bytes()) == all_docs(mongo, "users")
    assert not (tmp_path / "users.jsonl.partial").exists()


def test_export_of_an_empty_table_is_an_empty_file(
    mongo: Database[dict[str, Any]], env: dict[str, str], tmp_path: Path
) -> None:
    target = tmp_path / "empty.jsonl"
    result = run(["export", "--table", "paymentAttempts", "--path", str(target)], env, tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    assert target.read_bytes() == b""


def test_export_snapshot_zip_holds_every_table(
    mongo: Database[dict[str, Any]], env: dict[str, str], tmp_path: Path
) -> None:
    seed(mongo)
    target = tmp_path / "snapshot.zip"
    result = run(["export", "--path", str(target)], env, tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    with zipfile.ZipFile(target) as archive:
        assert sorted(archive.namelist()) == sorted(f"{t}/documents.jsonl" for t in TABLES)
        for table in TABLES:
            exported = parse_jsonl(archive.read(f"{table}/documents.jsonl"))
            assert exported == all_docs(mongo, table)
            assert exported  # the seed put documents in every table


@pytest.mark.parametrize("table", TABLES)
async def test_export_reads_each_table_in_id_index_order_without_a_sort(
    mongo: Database[dict[str, Any]], store: Store, database: db.Database, table: str
) -> None:
    """One streamed read per table along the `_id` index: an in-memory sort of a large
    table held the embedded server long enough for the driver to cancel the export."""
    seed(mongo)
    out = io.BytesIO()
    with commands() as sent:
        count = await snapshot.write_table(store, TABLE_SPECS[table], out)
    assert count == len(all_docs(mongo, table)) == len(parse_jsonl(out.getvalue()))
    finds = [c for name, c in sent if name == "find" and c.get("find") == table]
    assert len(finds) == 1 and finds[0]["hint"] == {"_id": 1}
    plan = (
        await database.collection(table)
        .find(finds[0]["filter"])
        .sort(list(finds[0]["sort"].items()))
        .hint(list(finds[0]["hint"].items()))
        .explain()
    )
    assert plan_stages(plan["queryPlanner"]["winningPlan"]) == ["FETCH", "IXSCAN(_id_)"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["export", "--table", "users", "--path", "{tmp}/missing-dir/u.jsonl"], "missing-dir"),
        (["export", "--path", "{tmp}/missing-dir/s.zip"], "missing-dir"),
        (["export", "--path", "{tmp}/every-table.jsonl"], ".zip"),
        (["export"], "--path"),
    ],
)
def test_export_to_an_unusable_path_is_one_line(
    mongo: Database[dict[str, Any]],
    env: dict[str, str],
    tmp_path: Path,
    args: list[str],
    needle: str,
) -> None:
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    result = run(args, env, tmp_path)
    assert_one_line_error(result, needle)
    assert not list(tmp_path.glob("*.partial"))


# --- import -------------------------------------------------------------------------------


def test_import_into_an_empty_table(
    mongo: Database[dict[str, Any]], env: dict[str, str], tmp_path: Path
) -> None:
    path = jsonl(
        tmp_path / "s.jsonl",
        session_line("a", metadata={"k": [1, 2.5, None, True]}),
        session_line("b", active=False, endedAt=1_500),
    )
    result = run(["import", "--table", "sessions", str(path)], env, tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    assert "imported 2 documents into sessions" in result.stdout.decode()
    docs = {doc["sessionId"]: doc for doc in all_docs(mongo, "sessions")}
    assert set(docs) == {"a", "b"}
    assert docs["a"]["metadata"] == {"k": [1, 2.5, None, True]}
    assert docs["a"]["active"] is True
    # Fields an older export lacks are derived from the ones it has.
    assert docs["a"]["lastActivity"] == docs["a"]["updatedAt"] == 1_000
    assert docs["a"]["version"] == 1
    assert isinstance(docs["a"]["_id"], str) and docs["a"]["_id"]
    assert docs["b"]["active"] is False and docs["b"]["endedAt"] == 1_500


def test_import_into_a_non_empty_table_needs_append_or_replace(
    mongo: Database[dict[str, Any]], env: dict[str, str], tmp_path: Path
) -> None:
    seed(mongo)
    before = all_docs(mongo, "sessions")
    path = jsonl(tmp_path / "s.jsonl", session_line("new"))
    result = run(["import", "--table", "sessions", str(path)], env, tmp_path)
    assert_one_line_error(result, "sessions", "--append", "--replace")
    assert all_docs(mongo, "sessions") == before


def test_on_a_terminal_replace_asks_first_and_both_commands_show_progress(
    mongo: Database[dict[str, Any]], env: dict[str, str], tmp_path: Path
) -> None:
    """What an operator sees: the question before documents are deleted (no means nothing
    is written), and a progress display with documents and a rate on the terminal."""
    seed(mongo)
    before = all_docs(mongo, "sessions")
    path = jsonl(tmp_path / "s.jsonl", *(session_line(f"t-{i}") for i in range(3)))
    args = ["import", "--table", "sessions", "--replace", str(path)]

    declined = run_on_terminal(args, env, tmp_path, b"n\n")
    assert declined.returncode == 1
    assert f"This import deletes {len(before)} documents in sessions. Continue? [y/N]" in (
        declined.terminal
    )
    assert "error: import cancelled; nothing written" in declined.terminal
    assert all_docs(mongo, "sessions") == before

    agreed = run_on_terminal(args, env, tmp_path, b"y\n")
    assert agreed.returncode == 0, agreed.terminal
    assert "importing sessions" in agreed.terminal and "3 docs" in agreed.terminal
    assert "Traceback" not in agreed.terminal
    assert {doc["sessionId"] for doc in all_docs(mongo, "sessions")} == {"t-0", "t-1", "t-2"}

    exported = run_on_terminal(
        ["export", "--table", "sessions", "--path", str(tmp_path / "out.jsonl")], env, tmp_path, b""
    )
    assert exported.returncode == 0, exported.terminal
    assert "exporting sessions" in exported.terminal and "3 docs" in exported.terminal
    assert len(parse_jsonl((tmp_path / "out.jsonl").read_bytes())) == 3


def test_import_append_adds_to_the_stored_documents(
    mongo: Database[dict[str, Any]], env: dict[str, str], tmp_path: Path
) -> None:
    seed(mongo)
    before = all_docs(mongo, "sessions")
    path = jsonl(tmp_path / "s.jsonl", session_line("new-1"), session_line("new-2"))
    result = run(["import", "--table", "sessions", "--append", str(path)], env, tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    after = all_docs(mongo, "sessions")
    assert len(after) == len(before) + 2
    assert [doc for doc in after if doc["sessionId"] not in {"new-1", "new-2"}] == before


def test_import_replace_replaces_the_stored_documents(
    mongo: Database[dict[str, Any]], env: dict[str, str], tmp_path: Path
) -> None:
    seed(mongo)
    users_before = all_docs(mongo, "users")
    path = jsonl(tmp_path / "s.jsonl", session_line("sess-0"), session_line("only"))
    result = run(["import", "--table", "sessions", "--replace", str(path)], env, tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    assert sorted(doc["sessionId"] for doc in all_docs(mongo, "sessions")) == ["only", "sess-0"]
    assert all_docs(mongo, "users") == users_before  # other tables untouched


def test_append_and_replace_are_exclusive(
    mongo: Database[dict[str, Any]], env: dict[str, str], tmp_path: Path
) -> None:
    path = jsonl(tmp_path / "s.jsonl", session_line("a"))
    result = run(
        ["import", "--table", "sessions", "--append", "--replace", str(path)], env, tmp_path
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr.decode()
    assert mongo.sessions.count_documents({}) == 0


GOOD_1 = orjson.dumps(session_line("one"))
GOOD_3 = orjson.dumps(session_line("three"))


@pytest.mark.parametrize(
    ("bad_line", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b'["a", "list"]', "JSON object"),
        (orjson.dumps(session_line("two", createdAt="yesterday")), "createdAt"),
        (orjson.dumps(session_line("two", active="yes")), "active"),
        (orjson.dumps({"sessionId": "two", "createdAt": 1}), "userId"),
        (orjson.dumps(session_line("two", colour="red")), "unknown field(s): colour"),
        (orjson.dumps(session_line("two", metadata={"$where": "1"})), "'$where'"),
        (orjson.dumps(session_line("two", metadata={"a": {"$gt": 1}})), "'$gt'"),
        (orjson.dumps(session_line("two", metadata={"a.b": 1})), "'.'"),
        (orjson.dumps(session_line("two", metadata={"big": "x" * 17_000})), "16384"),
        (orjson.dumps(session_line("has space")), "sessionId"),
        (orjson.dumps(session_line("one")), "sessionId 'one' repeats line 1"),
    ],
)
@pytest.mark.parametrize("mode", [[], ["--append"], ["--replace"]])
def test_a_bad_line_fails_naming_it_and_writes_nothing(
    mongo: Database[dict[str, Any]],
    env: dict[str, str],
    tmp_path: Path,
    bad_line: bytes,
    needle: str,
    mode: list[str],
) -> None:
    if mode:
        seed(mongo)
    before = all_docs(mongo, "sessions")
    path = tmp_path / "bad.jsonl"
    path.write_bytes(GOOD_1 + b"\n" + bad_line + b"\n" + GOOD_3 + b"\n")
    result = run(["import", "--table", "sessions", *mode, str(path)], env, tmp_path)
    assert_one_line_error(result, "line 2", needle)
    assert all_docs(mongo, "sessions") == before


def test_line_numbers_count_blank_lines(
    mongo: Database[dict[str, Any]], env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(GOOD_1 + b"\n\n   \n" + b"{oops\n")
    result = run(["import", "--table", "sessions", str(path)], env, tmp_path)
    assert_one_line_error(result, "line 4")
    assert mongo.sessions.count_documents({}) == 0


def test_a_key_already_stored_fails_with_append_and_writes_nothing(
    mongo: Database[dict[str, Any]], env: dict[str, str], tmp_path: Path
) -> None:
    seed(mongo)
    before = all_docs(mongo, "sessions")
    path = tmp_path / "dup.jsonl"
    # The collision is on the third document, which sits on line 4 (a blank line precedes it).
    path.write_bytes(
        orjson.dumps(session_line("fresh-1"))
        + b"\n"
        + orjson.dumps(session_line("fresh-2"))
        + b"\n\n"
        + orjson.dumps(session_line("sess-2"))
        + b"\n"
    )
    result = run(["import", "--table", "sessions", "--append", str(path)], env, tmp_path)
    assert_one_line_error(result, "line 4", "sess-2", "nothing written")
    assert all_docs(mongo, "sessions") == before


def test_an_id_already_stored_fails_with_append_and_writes_nothing(
    mongo: Database[dict[str, Any]], env: dict[str, str], tmp_path: Path
) -> None:
    seed(mongo)
    before = all_docs(mongo, "users")
    path = jsonl(
        tmp_path / "u.jsonl",
        {"externalId": "user_new", "createdAt": 1, "_id": "fresh"},
        {"externalId": "user_other", "createdAt": 1, "_id": "u1"},
    )
    result = run(["import", "--table", "users", "--append", str(path)], env, tmp_path)
    assert_one_line_error(result, "line 2", "u1")
    assert all_docs(mongo, "users") == before


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda tmp: tmp / "absent.jsonl", "no such file"),
        (lambda tmp: tmp, "not a file"),
    ],
)
def test_an_unreadable_file_is_one_line(
    mongo: Database[dict[str, Any]], env: dict[str, str], tmp_path: Path, make: Any, needle: str
) -> None:
    result = run(["import", "--table", "users", str(make(tmp_path))], env, tmp_path)
    assert_one_line_error(result, needle)


def test_an_unknown_table_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    path = jsonl(tmp_path / "x.jsonl", {"a": 1})
    result = run(["import", "--table", "secrets", str(path)], env, tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr.decode()
    assert "secrets" in result.stderr.decode()


def test_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "s.jsonl", session_line("a"))
    env = clean_env(
        MONGODB_URI="mongodb://127.0.0.1:9/?directConnection=true&serverSelectionTimeoutMS=300",
        MONGODB_DB="x",
    )
    result = run(["import", "--table", "sessions", str(path)], env, tmp_path)
    assert_one_line_error(result, "MongoDB")


def test_convex_style_lines_import(
    mongo: Database[dict[str, Any]], env: dict[str, str], tmp_path: Path
) -> None:
    users_file = jsonl(
        tmp_path / "users.jsonl",
        {
            "_creationTime": 1_700_000_000_123.456,
            "externalId": "user_convex",
            "name": "Convex User",
            "email": "c@example.com",
            "preferences": {"theme": "dark"},
        },
        {"_id": "jd7abc123", "_creationTime": 1_700_000_000_999.0, "externalId": "user_two"},
    )
    sessions_file = jsonl(
        tmp_path / "sessions.jsonl",
        {
            "_creationTime": 1_700_000_001_000.5,
            "sessionId": "convex-session",
            "userId": "user_convex",
            "metadata": {"doc": "a.pdf"},
            "active": True,
        },
    )
    payments_file = jsonl(
        tmp_path / "payments.jsonl",
        {
            "_creationTime": 1_700_000_002_000.25,
            "payment_id": "cpay_1",
            "userId": "user_convex",
            "status": "paid",
            "amount": 500,
        },
    )
    for table, path in [
        ("users", users_file),
        ("sessions", sessions_file),
        ("paymentAttempts", payments_file),
    ]:
        result = run(["import", "--table", table, str(path)], env, tmp_path)
        assert result.returncode == 0, result.stderr.decode()

    convex_user = mongo.users.find_one({"externalId": "user_convex"})
    assert convex_user is not None
    assert "_creationTime" not in convex_user
    assert isinstance(convex_user["_id"], str) and convex_user["_id"]
    assert convex_user["createdAt"] == convex_user["updatedAt"] == 1_700_000_000_123
    assert convex_user["preferences"] == {"theme": "dark"}
    assert convex_user["version"] == 1
    second = mongo.users.find_one({"externalId": "user_two"})
    assert second is not None and second["_id"] == "jd7abc123"
    assert second["createdAt"] == 1_700_000_000_999

    session = mongo.sessions.find_one({"sessionId": "convex-session"})
    assert session is not None
    assert session["createdAt"] == session["lastActivity"] == 1_700_000_001_000
    assert "_creationTime" not in session

    attempt = mongo.paymentAttempts.find_one({"payment_id": "cpay_1"})
    assert attempt is not None and attempt["createdAt"] == 1_700_000_002_000


def test_a_byte_order_mark_is_accepted(
    mongo: Database[dict[str, Any]], env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD_1 + b"\r\n" + GOOD_3 + b"\r\n")
    result = run(["import", "--table", "sessions", str(path)], env, tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    assert mongo.sessions.count_documents({}) == 2


# --- round trip ---------------------------------------------------------------------------


def test_export_drop_import_reproduces_every_table_exactly(
    mongo: Database[dict[str, Any]], env: dict[str, str], tmp_path: Path
) -> None:
    seed(mongo)
    before = {table: all_docs(mongo, table) for table in TABLES}
    files = {}
    for table in TABLES:
        files[table] = tmp_path / f"{table}.jsonl"
        result = run(["export", "--table", table, "--path", str(files[table])], env, tmp_path)
        assert result.returncode == 0, result.stderr.decode()

    mongo.client.drop_database(mongo.name)
    assert all(mongo[table].count_documents({}) == 0 for table in TABLES)

    for table in TABLES:
        result = run(["import", "--table", table, str(files[table])], env, tmp_path)
        assert result.returncode == 0, result.stderr.decode()
    assert {table: all_docs(mongo, table) for table in TABLES} == before


def test_snapshot_files_import_back_exactly(
    mongo: Database[dict[str, Any]], env: dict[str, str], tmp_path: Path
) -> None:
    seed(mongo)
    before = {table: all_docs(mongo, table) for table in TABLES}
    snapshot = tmp_path / "snapshot.zip"
    assert run(["export", "--path", str(snapshot)], env, tmp_path).returncode == 0
    with zipfile.ZipFile(snapshot) as archive:
        archive.extractall(tmp_path / "unpacked")
    for table in TABLES:
        path = tmp_path / "unpacked" / table / "documents.jsonl"
        result = run(["import", "--table", table, "--replace", str(path)], env, tmp_path)
        assert result.returncode == 0, result.stderr.decode()
    assert {table: all_docs(mongo, table) for table in TABLES} == before
