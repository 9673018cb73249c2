"""`import`, `export` and `sync-clerk`: arguments, confirmation and progress.

The work is in `domain` (importer, snapshot, clerk_sync); this module only turns command
lines into calls, asks before deleting on a terminal (import, sync-clerk), and shows
progress there with `rich` (plain lines otherwise, so logs and pipes stay readable).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Coroutine
from contextlib import AbstractAsyncContextManager, nullcontext
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.status import Status
from rich.text import Text

from datadiver_graph.config import Settings
from datadiver_graph.domain.bulk import ImportMode
from datadiver_graph.domain.errors import InvalidInput
from datadiver_graph.domain.store import Store
from datadiver_graph.domain.tables import TABLES, get_table


def add_bulk_parsers(sub: Any) -> None:
    imp = sub.add_parser(
        "import",
        help="import a table (JSONL, JSON array, CSV) or a snapshot zip",
        description="Import like `npx convex import`: one table with --table, or a snapshot "
        "zip (ours or Convex's) without it. All of it lands or none.",
    )
    imp.add_argument("path", metavar="PATH", help="file.jsonl|.json|.csv, snapshot.zip or dir/")
    imp.add_argument("--table", choices=list(TABLES), help="destination table (single file)")
    imp.add_argument(
        "--format",
        choices=["jsonl", "json", "csv", "zip", "jsonLines", "jsonArray"],
        help="when the extension does not tell",
    )
    how = imp.add_mutually_exclusive_group()
    how.add_argument("--append", action="store_true", help="add to tables holding documents")
    how.add_argument("--replace", action="store_true", help="replace the imported tables")
    how.add_argument(
        "--replace-all", action="store_true", help="replace every table (others are emptied)"
    )
    imp.add_argument("-y", "--yes", action="store_true", help="do not ask before deleting")
    imp.add_argument(
        "--skip-broken-refs",
        action="store_true",
        help="leave out documents whose reference names no document, and list them",
    )

    exp = sub.add_parser(
        "export", help="export tables as JSONL, or a snapshot zip that `import` restores"
    )
    exp.add_argument("--table", choices=list(TABLES), help="one table (default: all)")
    exp.add_argument("--path", help="FILE.jsonl, FILE.zip or DIR/ (default: stdout for one table)")

    sync = sub.add_parser(
        "sync-clerk", help="backfill users from Clerk's Backend API (CLERK_SECRET_KEY)"
    )
    sync.add_argument("--dry-run", action="store_true", help="report the drift, write nothing")
    sync.add_argument(
        "--delete-missing",
        action="store_true",
        help="delete users Clerk no longer has, as its user.deleted webhook would",
    )
    sync.add_argument("-y", "--yes", action="store_true", help="do not ask before deleting")


# --- progress ----------------------------------------------------------------------------


class _RateColumn(ProgressColumn):
    """Documents per second, from the documents field (the bar itself counts bytes)."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        docs = int(task.fields.get("docs", 0))
        rate = docs / elapsed if elapsed > 0 else 0.0
        return Text(f"{docs:,} docs  {rate:,.0f}/s")


class _Shown:
    """Progress for import and export: a rich bar on a terminal, one line per table
    otherwise (on stderr, leaving stdout to the result)."""

    def __init__(self, verb: str) -> None:
        self.verb = verb
        self.tty = sys.stderr.isatty()
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        self.name = ""
        self.docs = 0
        self.started = 0.0

    def __enter__(self) -> _Shown:
        if self.tty:
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                _RateColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self.progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.progress is not None:
            self.progress.stop()

    def start_table(self, name: str, total: int) -> None:
        self.name, self.docs, self.started = name, 0, time.monotonic()
        if self.progress is not None:
            self.task = self.progress.add_task(f"{self.verb} {name}", total=total or None, docs=0)

    def advance(self, documents: int, position: int | None = None) -> None:
        self.docs = documents
        if self.progress is not None and self.task is not None:
            completed = position if position is not None else documents
            self.progress.update(self.task, completed=completed, docs=documents)

    def end_table(self) -> None:
        if self.progress is None:
            seconds = max(time.monotonic() - self.started, 1e-6)
            print(
                f"{self.verb} {self.name}: {self.docs} documents ({self.docs / seconds:,.0f}/s)",
                file=sys.stderr,
            )


# --- import ------------------------------------------------------------------------------


def _mode(args: argparse.Namespace) -> ImportMode:
    if args.replace_all:
        return ImportMode.REPLACE_ALL
    if args.replace:
        return ImportMode.REPLACE
    if args.append:
        return ImportMode.APPEND
    return ImportMode.EMPTY_ONLY


def _plan(args: argparse.Namespace) -> Any:
    from datadiver_graph.domain import snapshot

    path = Path(args.path)
    if not path.exists():
        raise InvalidInput(f"{path}: no such file")
    is_zip = args.format == "zip" or (args.format is None and path.suffix.lower() == ".zip")
    if args.table is not None:
        if is_zip or path.is_dir():
            raise InvalidInput(
                f"{path}: not a file (--table imports one file; a snapshot imports without it)"
            )
        return snapshot.plan_file(path, args.table, args.format)
    if not (is_zip or path.is_dir()):
        raise InvalidInput(f"{path}: a single table needs --table (a snapshot is a .zip)")
    return snapshot.plan_snapshot(path)


def _confirm(question: str) -> bool:
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


def cmd_import(args: argparse.Namespace, settings: Settings) -> Coroutine[Any, Any, None]:
    from datadiver_graph.domain import importer

    plan = _plan(args)  # a bad path or layout costs no database start
    for notice in plan.notices:
        print(f"notice: {notice}", file=sys.stderr)
    mode = _mode(args)

    async def run() -> None:
        async with _store(settings) as store:
            names = [source.table.name for source in plan.sources]
            if mode in (ImportMode.REPLACE, ImportMode.REPLACE_ALL) and not args.yes:
                counts = await importer.existing_counts(
                    store, importer.affected_tables(mode, names)
                )
                doomed = {name: n for name, n in counts.items() if n}
                if doomed and sys.stdin.isatty():
                    listed = ", ".join(f"{n} documents in {name}" for name, n in doomed.items())
                    if not _confirm(f"This import deletes {listed}. Continue?"):
                        raise InvalidInput("import cancelled; nothing written")
            with _Shown("importing") as shown:
                result = await importer.run_import(
                    store,
                    plan.sources,
                    mode,
                    skip_broken_refs=args.skip_broken_refs,
                    progress=_ImportProgress(shown),
                )
        for line in result.broken:
            print(f"skipped (broken reference): {line}", file=sys.stderr)
        for line in result.refused:
            print(f"not appended (stored meanwhile): {line}", file=sys.stderr)
        for name, count in result.counts.items():
            print(f"imported {count} documents into {name}")

    return run()


class _ImportProgress:
    def __init__(self, shown: _Shown) -> None:
        self.shown = shown

    def start_table(self, name: str, total_bytes: int) -> None:
        self.shown.start_table(name, total_bytes)

    def advance(self, documents: int, position: int) -> None:
        self.shown.advance(documents, position)

    def end_table(self) -> None:
        self.shown.end_table()


def _store(settings: Settings) -> AbstractAsyncContextManager[Store]:
    from datadiver_graph.cli import _open_store

    return _open_store(settings)


# --- export ------------------------------------------------------------------------------


def _export_target(args: argparse.Namespace) -> tuple[str, Path | None]:
    """("stdout" | "jsonl" | "zip", path)."""
    if args.path is None:
        if args.table is None:
            raise InvalidInput("export of every table needs --path snapshot.zip or DIR/")
        return "stdout", None
    path = Path(args.path)
    if args.path.endswith(("/", os.sep)) or path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        if args.table is not None:
            return "jsonl", path / f"{args.table}.jsonl"
        return "zip", path / f"snapshot_{time.strftime('%Y%m%dT%H%M%S')}.zip"
    if not path.parent.is_dir():
        raise InvalidInput(f"{path.parent}: no such directory")
    if path.suffix.lower() == ".zip":
        return "zip", path
    if args.table is None:
        raise InvalidInput(f"{path}: every table goes into a .zip (or DIR/); or pass --table")
    return "jsonl", path


async def cmd_export(args: argparse.Namespace, settings: Settings) -> None:
    from datadiver_graph.domain import snapshot

    kind, path = _export_target(args)
    tables = [get_table(args.table)] if args.table else list(TABLES.values())
    async with _store(settings) as store:
        with _Shown("exporting") as shown:
            progress = _ExportProgress(shown)
            if kind == "stdout":
                out: IO[bytes] = sys.stdout.buffer
                count = await snapshot.write_table(store, tables[0], out, progress)
                out.flush()
                counts = {tables[0].name: count}
            elif kind == "jsonl":
                assert path is not None
                with snapshot.atomic_file(path) as partial, partial.open("wb") as file:
                    counts = {
                        tables[0].name: await snapshot.write_table(store, tables[0], file, progress)
                    }
            else:
                assert path is not None
                counts = await snapshot.write_zip(store, tables, path, progress)
    where = f" to {path}" if path is not None else ""
    for name, count in counts.items():
        print(f"exported {count} documents from {name}{where}", file=sys.stderr)


class _ExportProgress:
    def __init__(self, shown: _Shown) -> None:
        self.shown = shown

    def start_table(self, name: str, total: int) -> None:
        self.shown.start_table(name, total)

    def advance(self, documents: int) -> None:
        self.shown.advance(documents)

    def end_table(self) -> None:
        self.shown.end_table()


# --- sync-clerk --------------------------------------------------------------------------


GONE_LINES = 50  # users gone from Clerk listed one per line; the rest are counted


async def cmd_sync_clerk(args: argparse.Namespace, settings: Settings) -> None:
    import httpx

    from datadiver_graph.domain import clerk_sync

    key = settings.clerk_secret_key
    secret = key.get_secret_value().strip() if key is not None else ""
    if not secret:
        raise InvalidInput("CLERK_SECRET_KEY is not set (Clerk dashboard > API keys)")
    base_url = settings.clerk_api_url
    console = Console(stderr=True)
    tty = sys.stderr.isatty()
    status = console.status("reading Clerk's users") if tty else nullcontext()
    async with _store(settings) as store, httpx.AsyncClient(timeout=30) as client:

        def on_page(report: clerk_sync.SyncReport) -> None:
            if isinstance(status, Status):
                if report.looked_up:
                    shown = f"{report.looked_up:,} users not in Clerk's list looked up"
                else:
                    seen = report.created + report.updated + report.unchanged + report.skipped
                    shown = f"{seen:,} of Clerk's users read"
                status.update(shown)

        with status:
            report = await clerk_sync.sync_users(
                store, client, secret, base_url=base_url, dry_run=args.dry_run, on_page=on_page
            )
        for reason in report.reasons:
            print(f"skipped: {reason}", file=sys.stderr)
        for external_id in report.gone[:GONE_LINES]:
            print(f"gone from Clerk: {external_id}", file=sys.stderr)
        if len(report.gone) > GONE_LINES:
            print(f"... and {len(report.gone) - GONE_LINES} more gone from Clerk", file=sys.stderr)
        gone = f"{len(report.gone)} gone from Clerk"
        if report.gone and not args.delete_missing:
            gone += " (kept; --delete-missing deletes them)"
        elif report.gone and args.dry_run:
            gone += " (would be deleted)"
        elif report.gone:
            clerk_sync.refuse_unrelated_instance(report)
            question = f"Delete the {len(report.gone)} users gone from Clerk here too?"
            if args.yes or not sys.stdin.isatty() or _confirm(question):
                deleting = console.status("deleting") if tty else nullcontext()

                def on_deleted(report: clerk_sync.SyncReport) -> None:
                    if isinstance(deleting, Status):
                        deleting.update(f"{report.deleted:,} of {len(report.gone):,} deleted")

                with deleting:
                    await clerk_sync.delete_gone(store, report, on_deleted)
                gone += f" ({report.deleted} deleted)"
            else:
                gone += " (kept; deleting was not confirmed)"
    would = "would be " if args.dry_run else ""
    print(
        f"users: {report.created} {would}created, {report.updated} {would}updated, "
        f"{report.unchanged} unchanged, {report.skipped} skipped, {gone}"
    )
