"""Where the server's memory per idle subscription goes (a diagnostic, not part of `make bench`).

    python -m bench.subs_memory [--count N] [--trace FRAMES] [--app app|bare]
                                [--ws lean|auto|websockets|wsproto] [--handler ...]

Starts SecantusDB, Redis and a server process like bench/subs_bench.py does, opens 20
warm-up subscribers, then N more twice (the benchmark's client: one graphql-transport-ws
connection with one `session` subscription each), and reports per subscription, for each
step: RSS, glibc malloc's view (mallinfo2), pymalloc's own accounting, live objects by
type and asyncio tasks; with --trace, what tracemalloc traced, by allocation site and by
owning file and line (the innermost frame outside asyncio and other stdlib helpers).
Comparing RSS with the traced heap separates Python objects from the rest (malloc
fragmentation, C allocations). `--app bare` serves a bare Starlette WebSocket that speaks
just enough graphql-transport-ws for the same client: the floor of uvicorn + Starlette.
`--ws auto --handler strawberry` measures the stack as it was before fastpaths/ws_transport.py and
fastpaths/ws_handler.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bench.harness import SERVICE_KEY, RedisProcess, raise_open_files, rss_kib, say
from bench.subs_bench import WORKERS, _add_subscribers, subscriber_pool
from datadiver_graph.fastpaths.ws_transport import WS_PROTOCOL
from datadiver_graph.storage.embedded import EmbeddedMongo, free_port


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _mallinfo() -> dict[str, int]:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    # arena: bytes from sbrk; hblkhd: bytes in mmap'd blocks; uordblks: in use; fordblks: free
    return {
        name: getattr(info, name) // 1024 for name in ("arena", "hblkhd", "uordblks", "fordblks")
    }


def _pymalloc() -> dict[str, int]:
    """pymalloc's own accounting (sys._debugmallocstats writes it to stderr), in KiB."""
    wanted = {
        "allocated": "# bytes in allocated blocks",
        "available": "# bytes in available blocks",
        "unused_pools": "bytes in unused pools",
        "total": "Total",
    }
    with tempfile.TemporaryFile("w+") as capture:
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        found: dict[str, int] = {}
        for line in capture:
            for key, prefix in wanted.items():
                text = line.strip()
                if key not in found and (text.startswith(prefix) or prefix in text):
                    value = text.rsplit("=", 1)[-1].replace(",", "").strip()
                    if value.isdigit():
                        found[key] = int(value) // 1024
        return found


# -- the server side -------------------------------------------------------------------------


def _probe_route(snapshot_dir: Path) -> Any:
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    async def probe(request: Request) -> JSONResponse:
        rss_before = rss_kib(os.getpid())
        gc.collect()
        counts = Counter(type(o).__qualname__ for o in gc.get_objects())
        body: dict[str, Any] = {
            "rss_before_gc": rss_before,
            "rss": rss_kib(os.getpid()),
            "tasks": len(asyncio.all_tasks()),
            "objects": dict(counts),
            "malloc": _mallinfo(),
            "pymalloc": _pymalloc(),
        }
        if tracemalloc.is_tracing():
            body["traced"] = tracemalloc.get_traced_memory()[0] // 1024
            name = request.query_params.get("snap")
            if name:
                tracemalloc.take_snapshot().dump(str(snapshot_dir / name))
        return JSONResponse(body)

    return probe


def _bare_app() -> Any:
    """The least a server can do for the benchmark's client: handshake, ack, one `next`."""
    import orjson
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept(subprotocol="graphql-transport-ws")
        try:
            while True:
                message = orjson.loads(await websocket.receive_text())
                if message["type"] == "connection_init":
                    await websocket.send_text('{"type":"connection_ack"}')
                elif message["type"] == "subscribe":
                    reply = {
                        "id": message["id"],
                        "type": "next",
                        "payload": {"data": {"session": None}},
                    }
                    await websocket.send_text(orjson.dumps(reply).decode())
        except WebSocketDisconnect:
            pass

    return Starlette(routes=[WebSocketRoute("/graphql", endpoint)])


def serve(port: int, app_kind: str, trace: int, ws: str, handler: str, snapshot_dir: Path) -> None:
    import uvicorn
    from starlette.routing import Route

    if handler == "strawberry":
        from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
            BaseGraphQLTransportWSHandler,
        )

        from datadiver_graph.api.http import GraphQLView

        GraphQLView.graphql_transport_ws_handler_class = BaseGraphQLTransportWSHandler
    elif handler == "live":
        from datadiver_graph.api.http import GraphQLView
        from datadiver_graph.fastpaths.ws_handler import LiveTransportWSHandler

        GraphQLView.graphql_transport_ws_handler_class = LiveTransportWSHandler
    if trace:
        tracemalloc.start(trace)
    if app_kind == "bare":
        app = _bare_app()
    else:
        from datadiver_graph.app import create_app
        from datadiver_graph.config import load_settings

        app = create_app(load_settings(), tune_gc=True)
    app.router.routes.append(Route("/_mem", _probe_route(snapshot_dir)))
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        ws=WS_PROTOCOL if ws == "lean" else ws,
        ws_per_message_deflate=False,
        log_level="warning",
        access_log=False,
        log_config=None,
    )


# -- the driver ------------------------------------------------------------------------------


def _per_sub(size: int, count: int, per: int, what: str) -> str:
    return f"{size / per / 1024:7.2f} KiB/sub {count / per:6.1f} blocks  {what}"


def _top(diff: list[tracemalloc.StatisticDiff], per: int, limit: int) -> list[str]:
    lines = []
    for stat in diff[:limit]:
        frames = [
            f"{Path(f.filename).parent.name}/{Path(f.filename).name}:{f.lineno}"
            for f in reversed(stat.traceback)  # innermost first
        ]
        lines.append(_per_sub(stat.size_diff, stat.count_diff, per, " <- ".join(frames)))
    return lines


def _report(first: dict[str, Any], second: dict[str, Any], per: int) -> None:
    def delta(key: str) -> float:
        return (second[key] - first[key]) / per

    say(f"RSS: {delta('rss'):.1f} KiB/sub (before gc.collect: {delta('rss_before_gc'):.1f})")
    if "traced" in first:
        say(f"tracemalloc traced: {delta('traced'):.1f} KiB/sub")
    malloc = {k: (second["malloc"][k] - first["malloc"][k]) / per for k in first["malloc"]}
    say("malloc KiB/sub: " + ", ".join(f"{k} {v:.1f}" for k, v in malloc.items()))
    pym = {
        k: (second["pymalloc"][k] - first["pymalloc"].get(k, 0)) / per for k in second["pymalloc"]
    }
    say("pymalloc KiB/sub: " + ", ".join(f"{k} {v:.1f}" for k, v in pym.items()))
    say(f"tasks: {delta('tasks'):.2f}/sub")
    objects = Counter(second["objects"])
    objects.subtract(first["objects"])
    say("objects/sub: " + ", ".join(f"{k} {v / per:.2f}" for k, v in objects.most_common(40)))


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.subs_memory")
    parser.add_argument("--count", type=int, default=2000, help="subscribers per step")
    parser.add_argument("--trace", type=int, default=0, help="tracemalloc frames (0: off)")
    parser.add_argument("--group", type=int, default=6, help="frames per reported site")
    parser.add_argument("--top", type=int, default=40, help="sites reported")
    parser.add_argument("--app", choices=["app", "bare"], default="app")
    parser.add_argument(
        "--ws", default="lean", help="uvicorn's ws= (lean: ws_transport, as `serve` uses)"
    )
    parser.add_argument(
        "--handler",
        choices=["default", "strawberry", "live"],
        default="default",
        help="graphql-transport-ws handler (default: the one api/http.py names)",
    )
    parser.add_argument("--serve", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--snapshots", default="", help=argparse.SUPPRESS)
    return parser.parse_args()


@contextlib.contextmanager
def _server(args: argparse.Namespace, workdir: Path) -> Iterator[str]:
    """SecantusDB, Redis and the server (this module, --serve); yields the probe's URL."""
    db = EmbeddedMongo(workdir / "mongo")
    redis = RedisProcess(workdir / "redis")
    server: subprocess.Popen[bytes] | None = None
    try:
        env = dict(os.environ)
        env.update(
            {
                "MONGODB_URI": db.start(timeout=30),
                "MONGODB_DB": "bench",
                "DATA_DIR": str(workdir / "data"),
                "DATADIVER_ENV": "development",
                "RATE_LIMIT_PER_MINUTE": "0",
                "LOG_LEVEL": "WARNING",
                "BROADCAST_URL": redis.url,
                "SERVICE_API_KEYS": SERVICE_KEY,
            }
        )
        port = free_port()
        command = [sys.executable, "-m", "bench.subs_memory", "--serve", str(port)]
        command += ["--app", args.app, "--trace", str(args.trace), "--ws", args.ws]
        command += ["--handler", args.handler, "--snapshots", str(workdir)]
        server = subprocess.Popen(command, env=env, cwd=Path(__file__).parent.parent)
        probe_url = f"http://127.0.0.1:{port}/_mem"
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(probe_url, timeout=30).status_code == 200:
                    break
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("server did not start")
            time.sleep(0.2)
        yield probe_url
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        redis.stop()
        db.stop()


def _measure(args: argparse.Namespace, probe_url: str) -> None:
    ws_url = probe_url.replace("http://", "ws://").replace("/_mem", "/graphql")
    with subscriber_pool(ws_url, WORKERS) as pool:
        _add_subscribers(pool, 0, 20)
        time.sleep(1.0)
        base = httpx.get(probe_url, timeout=120).json()
        _add_subscribers(pool, 20, args.count)
        time.sleep(1.5)
        first = httpx.get(probe_url, params={"snap": "a"}, timeout=120).json()
        _add_subscribers(pool, 20 + args.count, args.count)
        time.sleep(1.5)
        second = httpx.get(probe_url, params={"snap": "b"}, timeout=120).json()
    say(f"== {args.app} (ws {args.ws}, handler {args.handler}), 20 -> {args.count}")
    _report(base, first, args.count)
    say(f"== {args.count} -> {2 * args.count} subscribers")
    _report(first, second, args.count)


def _trace_report(args: argparse.Namespace, workdir: Path) -> None:
    a = tracemalloc.Snapshot.load(str(workdir / "a"))
    b = tracemalloc.Snapshot.load(str(workdir / "b"))
    per = args.count
    say(f"== tracemalloc, {per} -> {2 * per} subscribers, by {args.group} innermost frames")
    for line in _top(_regroup(b, a, args.group), per, args.top):
        say(line)
    say("== by owner: the innermost frame outside asyncio/contextlib/stdlib helpers")
    for owner, size, count in _owners(b, a):
        say(_per_sub(size, count, per, owner))
    say("== by owning line")
    for owner, size, count in _owners(b, a, lines=True, limit=args.top):
        say(_per_sub(size, count, per, owner))


def main() -> None:
    args = _arguments()
    if args.serve:
        serve(args.serve, args.app, args.trace, args.ws, args.handler, Path(args.snapshots))
        return
    raise_open_files()
    with tempfile.TemporaryDirectory(prefix="subs-memory-") as tmp:
        workdir = Path(tmp)
        with _server(args, workdir) as probe_url:
            _measure(args, probe_url)
        if args.trace:
            _trace_report(args, workdir)


GENERIC = (
    "/asyncio/",
    "/contextlib.py",
    "/_weakrefset.py",
    "/collections/",
    "<frozen",
    "<string>",
    "/functools.py",
    "/typing.py",
    "/enum.py",
    "/inspect.py",
    "/abc.py",
)


def _owners(
    new: tracemalloc.Snapshot, old: tracemalloc.Snapshot, lines: bool = False, limit: int = 30
) -> list[tuple[str, int, int]]:
    """Net bytes by owning file: the innermost frame that is not a generic helper."""
    totals: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    for sign, snapshot in ((1, new), (-1, old)):
        for _domain, size, stack, _total in snapshot.traces._traces:  # type: ignore[attr-defined]
            owner = "?"
            for filename, lineno in stack:
                if not any(part in filename for part in GENERIC):
                    owner = "/".join(Path(filename).parts[-2:]) + (f":{lineno}" if lines else "")
                    break
            totals[owner] += sign * size
            counts[owner] += sign
    return [(owner, size, counts[owner]) for owner, size in totals.most_common(limit)]


def _regroup(
    new: tracemalloc.Snapshot, old: tracemalloc.Snapshot, frames: int
) -> list[tracemalloc.StatisticDiff]:
    """compare_to("traceback") with tracebacks cut to their `frames` innermost frames."""

    def cut(snapshot: tracemalloc.Snapshot) -> tracemalloc.Snapshot:
        # Raw traces are (domain, size, frames innermost first, total frames).
        raw = snapshot.traces._traces  # type: ignore[attr-defined]
        traces = [(domain, size, stack[:frames], total) for domain, size, stack, total in raw]
        return tracemalloc.Snapshot(traces, frames)

    return cut(new).compare_to(cut(old), "traceback")


if __name__ == "__main__":
    main()
