"""Snapshots: a folder per table holding `documents.jsonl`, in a zip (or a directory).

Both our own export and `npx convex export` write this layout. Convex's adds
`<table>/generated_schema.jsonl` (read for its Int64 hints), `_tables/` (its table list),
`_storage/` (file storage), a README, and sometimes `_components/`: what this service does
not store is skipped with a notice. Exports are written to a temporary name and moved into
place, so an interrupted export never leaves a truncated snapshot under the final name.
"""

from __future__ import annotations

import zipfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import orjson

from datadiver_graph.domain import sources
from datadiver_graph.domain.convex_format import GeneratedSchema
from datadiver_graph.domain.errors import InvalidInput
from datadiver_graph.domain.importer import TableSource
from datadiver_graph.domain.store import Store
from datadiver_graph.domain.tables import TABLES, Table, get_table

DOCUMENTS = "documents.jsonl"
SCHEMA = "generated_schema.jsonl"


@dataclass(slots=True)
class Plan:
    """What an import will read, and what it skips (told to the user)."""

    sources: list[TableSource] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)


def plan_file(path: Path, table_name: str, fmt: str | None) -> Plan:
    """One table from one file (`--table`)."""
    table = get_table(table_name)
    chosen = sources.format_for(path.name, fmt)
    if chosen is None:
        raise InvalidInput(
            f"{path}: cannot tell the format from the name; pass --format jsonl, json or csv"
        )

    def open_file() -> AbstractContextManager[IO[bytes]]:
        return path.open("rb")

    return Plan([TableSource(table, str(path), chosen, path.stat().st_size, open_file)])


def plan_snapshot(path: Path) -> Plan:
    """Every table in a snapshot zip, or a directory laid out the same way."""
    if path.is_dir():
        names = [str(p.relative_to(path)) for p in sorted(path.rglob("*")) if p.is_file()]
        return _plan(str(path), names, _dir_opener(path), _dir_size(path))
    try:
        with zipfile.ZipFile(path) as archive:
            names = [info.filename for info in archive.infolist() if not info.is_dir()]
            sizes = {info.filename: info.file_size for info in archive.infolist()}
    except zipfile.BadZipFile:
        raise InvalidInput(f"{path}: not a zip file (a single table needs --table)") from None
    return _plan(str(path), names, _zip_opener(path), sizes.__getitem__)


Opener = Callable[[str], AbstractContextManager[IO[bytes]]]


def _zip_opener(path: Path) -> Opener:
    @contextmanager
    def open_member(name: str) -> Iterator[IO[bytes]]:
        with zipfile.ZipFile(path) as archive, archive.open(name) as member:
            yield member

    return open_member


def _dir_opener(root: Path) -> Opener:
    def open_member(name: str) -> AbstractContextManager[IO[bytes]]:
        return (root / name).open("rb")

    return open_member


def _dir_size(root: Path) -> Callable[[str], int]:
    return lambda name: (root / name).stat().st_size


def _plan(label: str, names: list[str], opener: Opener, size: Callable[[str], int]) -> Plan:
    plan = Plan()
    folders: dict[str, list[str]] = {}
    for name in names:
        top, _, rest = name.partition("/")
        folders.setdefault(top if rest else "", []).append(rest or top)
    convex = "_tables" in folders or any(SCHEMA in files for files in folders.values())
    for folder, files in sorted(folders.items()):
        if folder == "":
            continue  # README.md and the like
        if folder == "_storage":
            stored = sum(1 for f in files if f != DOCUMENTS)
            plan.notices.append(
                f"skipped _storage/: file storage is not kept here ({stored} files)"
            )
            continue
        if folder.startswith("_"):
            if folder != "_tables":  # Convex's table list: we read the folders themselves
                plan.notices.append(f"skipped {folder}/: a Convex system folder")
            continue
        if folder not in TABLES:
            plan.notices.append(f"skipped {folder}/: no such table here")
            continue
        if DOCUMENTS not in files:
            plan.notices.append(f"skipped {folder}/: it has no {DOCUMENTS}")
            continue
        member = f"{folder}/{DOCUMENTS}"
        schema = None
        if SCHEMA in files:
            with opener(f"{folder}/{SCHEMA}") as stream:
                schema = GeneratedSchema.parse(stream)

        def open_member(member: str = member) -> AbstractContextManager[IO[bytes]]:
            return opener(member)

        plan.sources.append(
            TableSource(
                get_table(folder),
                f"{label}:{member}",
                "jsonl",
                size(member),
                open_member,
                schema=schema,
                convex=convex,
            )
        )
    if not plan.sources:
        raise InvalidInput(f"{label}: no table to import (expected <table>/{DOCUMENTS})")
    return plan


# --- export -------------------------------------------------------------------------------


class ExportProgress(Protocol):
    """Told about each table and its documents as they are written."""

    def start_table(self, name: str, total: int) -> None: ...

    def advance(self, documents: int) -> None: ...

    def end_table(self) -> None: ...


class NoExportProgress:
    def start_table(self, name: str, total: int) -> None:
        return None

    def advance(self, documents: int) -> None:
        return None

    def end_table(self) -> None:
        return None


def _encode(doc: dict[str, Any]) -> bytes:
    # Stored values are JSON already; `str` only guards against foreign BSON types.
    return orjson.dumps(doc, default=str) + b"\n"


async def _documents(store: Store, table: Table) -> AsyncIterator[dict[str, Any]]:
    """Every stored document, in `_id` order, streamed in the driver's batches.

    The hint names the `_id` index, which mongod would pick anyway: SecantusDB otherwise
    plans a collection scan and an in-memory sort, which at 1M users held the server
    about 30 s before the first batch instead of about 17 s.
    """
    found = store.db.table(table.name).find({}).sort("_id", 1).hint([("_id", 1)])
    async for doc in found.batch_size(1000):
        yield doc


async def write_table(
    store: Store, table: Table, out: IO[bytes], progress: ExportProgress | None = None
) -> int:
    progress = progress or NoExportProgress()
    progress.start_table(table.name, await store.db.table(table.name).estimated_document_count())
    count = 0
    chunk: list[bytes] = []
    async for doc in _documents(store, table):
        chunk.append(_encode(doc))
        count += 1
        if len(chunk) == 1000:
            out.write(b"".join(chunk))
            chunk = []
            progress.advance(count)
    out.write(b"".join(chunk))
    progress.advance(count)
    progress.end_table()
    return count


async def write_zip(
    store: Store, tables: list[Table], path: Path, progress: ExportProgress | None = None
) -> dict[str, int]:
    """`<table>/documents.jsonl` for each table in one zip, each member streamed."""
    counts: dict[str, int] = {}
    with (
        atomic_file(path) as partial,
        zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive,
    ):
        for table in tables:
            with archive.open(f"{table.name}/{DOCUMENTS}", "w", force_zip64=True) as member:
                counts[table.name] = await write_table(store, table, member, progress)
    return counts


@contextmanager
def atomic_file(target: Path) -> Iterator[Path]:
    """A temporary path beside `target`, moved onto it only when the block succeeds."""
    partial = target.with_name(target.name + ".partial")
    try:
        yield partial
        partial.replace(target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
