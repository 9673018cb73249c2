"""Crash-safe swap of staging collections into live tables, driven by a journal.

An import writes into staging collections (`_staging.<token>.<table>`) that nothing reads,
then commits by marking its journal entry `committed` (one majority-journaled write: the
commit point). Only then are the staging collections moved in:

- `replace`: `renameCollection` with `dropTarget`, atomic per collection;
- `append`: the staged documents are inserted into the table in batches, each batch then
  deleted from staging, so a repeat after a crash inserts nothing twice.

A crash before the commit point leaves the tables untouched (the staging collections are
dropped later: `recover`). A crash after it is rolled forward by `recover`, which every
start of the server or of an import runs. Either way no half-applied import is left.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pymongo.errors import BulkWriteError, OperationFailure

from datadiver_graph.storage.mongo import DUPLICATE_KEY, INDEXES, Database

log = logging.getLogger(__name__)

JOURNAL = "importJournal"
STAGING_PREFIX = "_staging."
# An import refreshes its journal entry at least this often while staging; an older entry
# belongs to a process that died, and its staging collections may be dropped.
STALE_AFTER_S = 120
MOVE_BATCH = 1000
_NAMESPACE_NOT_FOUND = 26


@dataclass(frozen=True, slots=True)
class Move:
    """One table's staged contents and how they go in: replace the table, or add to it."""

    table: str
    staging: str
    append: bool

    def as_doc(self) -> dict[str, Any]:
        return {"table": self.table, "staging": self.staging, "append": self.append}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Move:
        return cls(table=doc["table"], staging=doc["staging"], append=bool(doc["append"]))


class Swap:
    """One import's journal entry and staging collections."""

    def __init__(self, database: Database, token: str | None = None) -> None:
        self.database = database
        self.token = token or uuid.uuid4().hex[:16]
        self.moves: dict[str, Move] = {}
        self._beat = 0.0

    def staging_name(self, table: str) -> str:
        return f"{STAGING_PREFIX}{self.token}.{table}"

    async def begin(self) -> None:
        await self.database.collection(JOURNAL).insert_one(
            {"_id": self.token, "state": "staging", "moves": [], "heartbeat": time.time()}
        )

    async def stage(self, table: str, *, append: bool) -> str:
        """Create the (empty) staging collection of `table`, with the table's indexes, so
        that the unique ones catch repeats while staging and survive the rename."""
        name = self.staging_name(table)
        collection = self.database.collection(name)
        await collection.drop()
        await self.database.db.create_collection(name)
        models = INDEXES.get(table)
        if models:
            await collection.create_indexes(models)
        move = Move(table, name, append)
        self.moves[table] = move
        await self.database.collection(JOURNAL).update_one(
            {"_id": self.token},
            {"$push": {"moves": move.as_doc()}, "$set": {"heartbeat": time.time()}},
        )
        return name

    async def heartbeat(self) -> None:
        """Keep the entry fresh so no other process takes this import for dead."""
        now = time.time()
        if now - self._beat < STALE_AFTER_S / 4:
            return
        self._beat = now
        await self.database.collection(JOURNAL).update_one(
            {"_id": self.token}, {"$set": {"heartbeat": now}}
        )

    async def commit(self) -> list[str]:
        """The commit point, then every move. Returns what was not applied (see
        `apply_moves`)."""
        await self.database.collection(JOURNAL).update_one(
            {"_id": self.token, "state": "staging"}, {"$set": {"state": "committed"}}
        )
        return await apply_moves(self.database, self.token, list(self.moves.values()))

    async def abort(self) -> None:
        await drop_staging(self.database, self.token, self.moves.values())


async def apply_moves(database: Database, token: str, moves: Iterable[Move]) -> list[str]:
    """Move every staged table in; idempotent, so a repeat after a crash finishes the job.

    Returns a line per appended document that a concurrent writer had already taken the
    key of between validation and commit (it stays out; everything else goes in).
    """
    refused: list[str] = []
    for move in moves:
        if move.append:
            refused += await _append(database, move)
        else:
            try:
                await database.client.admin.command(
                    "renameCollection",
                    f"{database.db.name}.{move.staging}",
                    to=f"{database.db.name}.{move.table}",
                    dropTarget=True,
                )
            except OperationFailure as exc:
                if exc.code != _NAMESPACE_NOT_FOUND:  # renamed before a crash: done
                    raise
    await database.collection(JOURNAL).delete_one({"_id": token})
    return refused


async def _append(database: Database, move: Move) -> list[str]:
    staging = database.collection(move.staging)
    target = database.collection(move.table)
    refused: list[str] = []
    while True:
        batch = await staging.find({}).sort("_id", 1).limit(MOVE_BATCH).to_list()
        if not batch:
            break
        try:
            await target.insert_many(batch, ordered=False)
        except BulkWriteError as exc:
            for error in exc.details.get("writeErrors", []):
                if error.get("code") != DUPLICATE_KEY:
                    raise
                doc = batch[error["index"]]
                stored = await target.find_one({"_id": doc["_id"]})
                if stored != doc:  # not our own insert from before a crash
                    refused.append(f"{move.table} {doc['_id']}: {error.get('keyValue')}")
        await staging.delete_many({"_id": {"$in": [doc["_id"] for doc in batch]}})
    await staging.drop()
    return refused


async def drop_staging(database: Database, token: str, moves: Iterable[Move]) -> None:
    for move in moves:
        await database.collection(move.staging).drop()
    await database.collection(JOURNAL).delete_one({"_id": token})


async def recover(database: Database) -> None:
    """Finish committed imports a crash interrupted; drop the staging of dead ones."""
    journal = database.collection(JOURNAL)
    async for entry in journal.find({}):
        moves = [Move.from_doc(doc) for doc in entry.get("moves", [])]
        if entry.get("state") == "committed":
            log.warning("finishing the import %s a crash interrupted", entry["_id"])
            refused = await apply_moves(database, entry["_id"], moves)
            for line in refused:
                log.warning("import %s: not appended, key taken meanwhile: %s", entry["_id"], line)
        elif time.time() - float(entry.get("heartbeat", 0)) > STALE_AFTER_S:
            log.warning("dropping the staging of the abandoned import %s", entry["_id"])
            await drop_staging(database, entry["_id"], moves)
    # Staging collections whose journal entry never made it (a crash inside `stage`).
    live = {doc["_id"] async for doc in journal.find({}, {"_id": 1})}
    for name in await database.db.list_collection_names():
        if name.startswith(STAGING_PREFIX) and name.split(".")[1] not in live:
            await database.collection(name).drop()
