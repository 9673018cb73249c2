"""`datadiver-graph logs`: follow a running service's changes live, from a terminal.

It reads the console's own stream (`GET /console/events/stream`, Server-Sent Events) over
HTTP: the same admin channel and the same access rule as the console, so it needs no
database or fan-out settings, only the service's URL and, outside development on localhost,
CONSOLE_TOKEN (read from the environment or `.env`, sent as a bearer token, never printed).
It reconnects by itself when the service restarts. Filters run on the server.

Each change: time, type, user, ids, version, source, process and request id. Each operation
of the process serving the stream (queries, mutations, subscriptions ending): name, user,
duration, outcome and error codes, request id. Colour on a terminal, plain text otherwise,
or `--json`: one JSON object per line, as the server sent it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, TextIO

import httpx
import orjson

from datadiver_graph.config import Settings

DEFAULT_URL = "http://127.0.0.1:8000"
STREAM_PATH = "/console/events/stream"
RECONNECT_MIN_S = 0.25
RECONNECT_MAX_S = 5.0

_RESET = "\x1b[0m"
_DIM = "\x1b[2m"
_COLOURS = {
    "created": "\x1b[32m",
    "updated": "\x1b[36m",
    "ended": "\x1b[33m",
    "deleted": "\x1b[31m",
}


class Refused(Exception):
    """The service answered, and said no: retrying would not help."""


def add_logs_parser(sub: Any) -> None:
    logs = sub.add_parser("logs", help="stream a running service's changes live")
    logs.add_argument("--url", default=DEFAULT_URL, help=f"the service (default {DEFAULT_URL})")
    logs.add_argument("--user", metavar="USER_ID", help="only changes of this Clerk user")
    logs.add_argument(
        "--type", metavar="TYPE", help="only this type (session.ended) or prefix (session.)"
    )
    logs.add_argument(
        "--errors-only", action="store_true", help="only operations that failed (no changes)"
    )
    logs.add_argument("--json", action="store_true", help="one JSON object per line")


def _when(stamp: object) -> str:
    if not isinstance(stamp, int):
        return "?"
    return datetime.fromtimestamp(stamp / 1000, UTC).strftime("%H:%M:%S.%f")[:-3]


def format_operation(line: dict[str, Any], colour: bool) -> str:
    """`time operation.query Name user=... 3.2ms ok|error CODES req=...`"""
    failed = line.get("outcome") == "error"
    outcome = " ".join([str(line.get("outcome")), *map(str, line.get("errorCodes") or [])])
    who = line.get("userId") or ("service" if line.get("service") else "-")
    middle = f"{line.get('operation') or '(anonymous)'} user={who} {line.get('durationMs')}ms"
    tail = f"{line.get('process')} req={line.get('requestId') or '-'}"
    kind = str(line.get("type", "operation"))
    if not colour:
        return f"{_when(line.get('time'))} {kind:<18} {middle} {outcome} {tail}"
    hue = "\x1b[31m" if failed else "\x1b[32m"
    return (
        f"{_DIM}{_when(line.get('time'))}{_RESET} {kind:<18} {middle} "
        f"{hue}{outcome}{_RESET} {_DIM}{tail}{_RESET}"
    )


def format_change(change: dict[str, Any], colour: bool) -> str:
    when = _when(change.get("time"))
    kind = str(change.get("type", "?"))
    fields = [f"user={change.get('userId') or '-'}"]
    for key, label in (("sessionId", "session"), ("paymentId", "payment")):
        if change.get(key):
            fields.append(f"{label}={change[key]}")
    if change.get("channels"):
        fields.append("channels=" + ",".join(map(str, change["channels"])))
    fields.append(f"v{change.get('version')}")
    tail = f"{change.get('source')} {change.get('process')} req={change.get('requestId') or '-'}"
    if not colour:
        return f"{when} {kind:<18} {' '.join(fields)} {tail}"
    hue = _COLOURS.get(kind.rsplit(".", 1)[-1], "")
    return f"{_DIM}{when}{_RESET} {hue}{kind:<18}{_RESET} {' '.join(fields)} {_DIM}{tail}{_RESET}"


async def _events(
    client: httpx.AsyncClient, url: str, params: dict[str, str]
) -> AsyncIterator[tuple[str, str]]:
    """(event, data) pairs from one SSE response."""
    async with client.stream("GET", url, params=params) as response:
        if response.status_code in (401, 403, 404):
            raise Refused(
                f"{url} answered {response.status_code}: "
                + (
                    "the console is off there"
                    if response.status_code == 404
                    else "set CONSOLE_TOKEN to the service's console token"
                )
            )
        response.raise_for_status()
        event = "message"
        data: list[str] = []
        async for line in response.aiter_lines():
            if not line:
                if data:
                    yield event, "\n".join(data)
                event = "message"
                data = []
            elif line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())


async def follow(
    base_url: str,
    token: str | None,
    *,
    user: str | None,
    type_: str | None,
    errors_only: bool = False,
    as_json: bool,
    out: TextIO,
    err: TextIO,
    colour: bool,
) -> None:
    """Print each change until interrupted, reconnecting after a lost connection."""
    url = base_url.rstrip("/") + STREAM_PATH
    params = {key: value for key, value in (("user", user), ("type", type_)) if value}
    params["operations"] = "1"
    if errors_only:
        params["errors"] = "1"
    headers = {"authorization": f"Bearer {token}"} if token else {}
    timeout = httpx.Timeout(10.0, read=60.0)  # the server sends a keep-alive every 15 s
    delay = RECONNECT_MIN_S
    connected_once = False
    async with httpx.AsyncClient(headers=headers, timeout=timeout) as client:
        while True:
            try:
                async for event, data in _events(client, url, params):
                    if event == "ready":
                        delay = RECONNECT_MIN_S
                        word = "reconnected to" if connected_once else "following"
                        print(f"{word} {base_url}", file=err, flush=True)
                        connected_once = True
                    elif event in ("change", "operation"):
                        shown = data
                        if not as_json:
                            show = format_change if event == "change" else format_operation
                            shown = show(orjson.loads(data), colour)
                        print(shown, file=out, flush=True)
                    elif event == "resync":
                        print("(the fan-out link was down: changes may be missing)", file=err)
            except Refused:
                raise
            except (httpx.HTTPError, OSError) as exc:
                print(f"connection lost ({type(exc).__name__}); retrying", file=err, flush=True)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)


async def run_logs(args: argparse.Namespace, settings: Settings) -> None:
    from datadiver_graph.cli import CliError

    token = settings.console_token.get_secret_value().strip() if settings.console_token else None
    try:
        await follow(
            args.url,
            token,
            user=args.user,
            type_=args.type,
            errors_only=args.errors_only,
            as_json=args.json,
            out=sys.stdout,
            err=sys.stderr,
            colour=sys.stdout.isatty() and not args.json,
        )
    except Refused as exc:
        raise CliError(str(exc)) from None
