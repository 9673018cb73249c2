"""Command line: serve | import | export | sync-clerk | schema | dev-token | dev-webhook.

Every failure a user can cause ends in one clear line on stderr and exit code 1 or 2;
tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from pymongo.errors import PyMongoError

from datadiver_graph.cli_bulk import add_bulk_parsers, cmd_export, cmd_import, cmd_sync_clerk
from datadiver_graph.config import Settings, SettingsError, load_settings
from datadiver_graph.console.logs_cli import add_logs_parser, run_logs
from datadiver_graph.dev.webhook import add_dev_webhook_parser, run_dev_webhook
from datadiver_graph.domain.errors import DomainError
from datadiver_graph.domain.store import Store
from datadiver_graph.fanout import EventHub
from datadiver_graph.observability.logs import configure_logging
from datadiver_graph.storage import mongo as db
from datadiver_graph.storage.embedded import EmbeddedDatabaseError, EmbeddedMongo

log = logging.getLogger("datadiver_graph")


# prometheus-client's multi-process directory (see observability/metrics.py).
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


class CliError(Exception):
    """A user-facing failure: printed as one line, exit code 1."""


def _configure_logging(settings: Settings, command: str) -> None:
    level = settings.log_level
    if command != "serve" and "LOG_LEVEL" not in os.environ:
        # A one-shot command speaks through its result and its one `error:` line; progress
        # chatter (the embedded database starting) would bury that line.
        level = "WARNING"
    configure_logging(settings, level=level)  # LOG_FORMAT: json lines or text, on stderr


def _metrics_dir(workers: int) -> str | None:
    """Multi-process metrics: PROMETHEUS_MULTIPROC_DIR emptied of a previous run's files, or,
    with several workers and the variable unset, a temporary directory (returned, to remove).
    Done before anything imports prometheus-client: it reads the variable on import."""
    configured = os.environ.get(METRICS_DIR_ENV)
    if configured:
        directory = Path(configured)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):  # prometheus-client's value files
            stale.unlink(missing_ok=True)
        return None
    if workers <= 1:
        return None
    created = tempfile.mkdtemp(prefix="datadiver-metrics-")
    os.environ[METRICS_DIR_ENV] = created
    return created


# The embedded SecantusDB answers nothing else while it runs a query up to its first batch
# (about 17 s for an export of 1M users); with the heartbeat at MONGODB_TIMEOUT_MS the
# driver declared it down and cancelled the export ("operation cancelled"). An unreachable
# server still fails fast: server selection keeps MONGODB_TIMEOUT_MS.
CLI_MONITOR_TIMEOUT_MS = 300_000


@asynccontextmanager
async def _open_store(settings: Settings) -> AsyncIterator[Store]:
    """The database the server would use (embedded when MONGODB_URI is unset)."""
    embedded: EmbeddedMongo | None = None
    uri = settings.mongodb_uri
    if uri is None:
        embedded = EmbeddedMongo(settings.embedded_data_path)
        uri = await asyncio.to_thread(embedded.start)
    database = db.connect(
        uri,
        settings.mongodb_db,
        timeout_ms=settings.mongodb_timeout_ms,
        monitor_timeout_ms=CLI_MONITOR_TIMEOUT_MS,
    )
    bus = EventHub(settings.broadcast_url)
    try:
        if not await database.ping():
            raise CliError(f"cannot reach MongoDB at {_redact(uri)}")
        await db.ensure_indexes(database)
        await bus.connect()
        yield Store(db=database, events=bus)
    finally:
        await bus.disconnect()
        await database.close()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


def _redact(uri: str) -> str:
    scheme, _, rest = uri.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return f"{scheme}://{rest}"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    metrics_dir = _metrics_dir(args.workers)
    try:
        _serve(args, settings)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _serve(args: argparse.Namespace, settings: Settings) -> None:
    import uvicorn

    from datadiver_graph import fastpaths
    from datadiver_graph.app import create_app, preflight

    preflight(settings)  # before anything starts: a bad configuration fails in one line
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it against the handler found
    # at start-up; with the default one the process would die on the spot and orphan the
    # embedded database. Make SIGTERM unwind like Ctrl-C, so the `finally` below runs.
    signal.signal(signal.SIGTERM, _interrupt)
    embedded: EmbeddedMongo | None = None
    try:
        if settings.mongodb_uri is None:
            # One database for all workers: started here, handed to them through the environment.
            embedded = EmbeddedMongo(settings.embedded_data_path)
            uri = embedded.start()
            os.environ["MONGODB_URI"] = uri
            settings = settings.model_copy(update={"mongodb_uri": uri})
        else:
            log.info("using MongoDB from MONGODB_URI: %s", _redact(settings.mongodb_uri))
        common: dict[str, Any] = {
            "host": args.host,
            "port": args.port,
            "log_level": settings.log_level.lower(),
            "ws_per_message_deflate": False,
            # uvicorn drops a larger WebSocket message before the app reads it (1009).
            "ws_max_size": settings.max_body_bytes,
            # uvicorn's own protocols, or the fast paths' leaner subclasses of them
            # (fastpaths/ws_transport.py).
            **fastpaths.uvicorn_protocols(settings),
            "timeout_graceful_shutdown": 10,
            "proxy_headers": True,
            # Our middleware logs each request (with its id); no second line from uvicorn,
            # and no logging config of its own: its lines go through ours (LOG_FORMAT).
            "access_log": False,
            "log_config": None,
        }
        if args.workers > 1:
            uvicorn.run(
                "datadiver_graph.app:app_from_env", factory=True, workers=args.workers, **common
            )
        else:
            uvicorn.run(create_app(settings, tune_gc=True), **common)
    finally:
        if embedded is not None:
            # A second Ctrl-C or SIGTERM must not abandon the database halfway through its stop.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            embedded.stop()


def cmd_schema(args: argparse.Namespace, settings: Settings) -> None:
    from datadiver_graph.api.schema.schema import schema_sdl

    sdl = schema_sdl()
    if not args.check:
        sys.stdout.write(sdl)
        return
    path = Path(args.path)
    try:
        committed = path.read_text()
    except OSError:
        raise CliError(f"{path} is missing: run `make schema` and commit it") from None
    if committed != sdl:
        raise CliError(f"{path} is stale: run `make schema` and commit the result")
    print(f"{path} is current", file=sys.stderr)


def cmd_dev_token(args: argparse.Namespace, settings: Settings) -> None:
    from datadiver_graph.dev.keys import mint_dev_token
    from datadiver_graph.domain.ids import check_id

    check_id(args.user, "--user")
    if args.ttl < 1:
        raise CliError("--ttl must be at least 1 second")
    print(mint_dev_token(settings, args.user, ttl_seconds=args.ttl))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="datadiver-graph", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP/WebSocket server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")

    add_bulk_parsers(sub)  # import, export, sync-clerk

    add_dev_webhook_parser(sub)
    add_logs_parser(sub)

    schema = sub.add_parser("schema", help="print the GraphQL schema (SDL)")
    schema.add_argument("--check", action="store_true", help="fail when --path is not current")
    schema.add_argument("--path", default="schema.graphql")

    token = sub.add_parser("dev-token", help="print a development token (no Clerk needed)")
    token.add_argument("--user", required=True, metavar="USER_ID")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    return parser


Handler = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, None] | None]

HANDLERS: dict[str, Handler] = {
    "serve": cmd_serve,
    "import": cmd_import,
    "export": cmd_export,
    "sync-clerk": cmd_sync_clerk,
    "schema": cmd_schema,
    "dev-token": cmd_dev_token,
    "dev-webhook": run_dev_webhook,
    "logs": run_logs,
}


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "workers", 1) < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return 2
    try:
        settings = load_settings()
        _configure_logging(settings, args.command)
        result = HANDLERS[args.command](args, settings)
        if result is not None:
            asyncio.run(result)
    except (CliError, SettingsError, EmbeddedDatabaseError) as exc:
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        return 1
    except DomainError as exc:
        print(f"error: {_one_line(exc.message)}", file=sys.stderr)
        return 1
    except PyMongoError as exc:
        print(f"error: database: {_one_line(str(exc))}", file=sys.stderr)
        return 1
    except OSError as exc:  # files named on the command line: missing, unreadable, full disk
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _one_line(text: str) -> str:
    return " ".join(text.split())


def main() -> None:
    sys.exit(run())
