"""python -m bench.console_bench [--users N]: the operator console's page times at N users.

Issue 19 asks the console to stay usable at 100k rows per table. This fills the users table
of a fresh embedded SecantusDB with N users, starts the real server (development: the
console is open to localhost) and times what an operator does: the first page, the next
pages by their `after=` links, a Clerk-id prefix search, an exact email search and one
document. Each time is the whole HTTP request, as the browser waits for it.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time

import httpx
from pymongo import MongoClient

from bench.harness import DB_NAME, machine, running_stack, say

BATCH = 10_000
NEXT_PAGES = 10
REPEATS = 5


def fill(uri: str, count: int) -> float:
    """Seconds to insert `count` users shaped as the domain stores them."""
    users = MongoClient(uri)[DB_NAME]["users"]
    started = time.perf_counter()
    for start in range(0, count, BATCH):
        users.insert_many(
            [
                {
                    "_id": f"id{i:08d}",
                    "externalId": f"user_{i:08d}",
                    "email": f"u{i}@example.com",
                    "name": f"User {i}",
                    "version": 1,
                    "createdAt": 1_700_000_000_000 + i,
                    "updatedAt": 1_700_000_000_000 + i,
                    "preferences": {},
                }
                for i in range(start, min(count, start + BATCH))
            ],
            ordered=False,
        )
    return time.perf_counter() - started


def timed(client: httpx.Client, path: str) -> tuple[float, str]:
    started = time.perf_counter()
    response = client.get(path)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed, response.text


def next_link(html: str) -> str:
    found = re.search(r'href="(/console/tables/users\?[^"]*after=[^"]*)"', html)
    if found is None:
        raise SystemExit("no next-page link on the users page")
    return found.group(1).replace("&amp;", "&")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=100_000)
    args = parser.parse_args()
    middle = args.users // 2
    with running_stack("console") as stack:
        seconds = fill(stack.db.uri, args.users)
        say(f"{args.users:,} users inserted in {seconds:.1f} s")
        times: dict[str, list[float]] = {}
        with httpx.Client(base_url=f"http://127.0.0.1:{stack.port}", timeout=120) as client:
            timed(client, "/console/tables/users")  # the row estimate, cached for a while
            for _ in range(REPEATS):
                elapsed, html = timed(client, "/console/tables/users")
                times.setdefault("first page", []).append(elapsed)
                for _ in range(NEXT_PAGES):
                    elapsed, html = timed(client, next_link(html))
                    times.setdefault("next page", []).append(elapsed)
                users = "/console/tables/users"
                prefix = f"user_{middle:08d}"[:-2]  # 100 users share it
                for name, path in (
                    ("Clerk id prefix search", f"{users}?by=externalId&q={prefix}"),
                    ("exact email search", f"{users}?by=email&q=u{middle}@example.com"),
                    ("one document", f"{users}/doc?key=user_{middle:08d}"),
                ):
                    times.setdefault(name, []).append(timed(client, path)[0])
    info = machine()
    say(f"{info.get('cpu', '')}; console page times at {args.users:,} users (embedded SecantusDB)")
    say("| request | median | max | n |")
    say("| --- | --- | --- | --- |")
    for name, values in times.items():
        say(
            f"| {name} | {statistics.median(values) * 1000:.0f} ms | "
            f"{max(values) * 1000:.0f} ms | {len(values)} |"
        )


if __name__ == "__main__":
    main()
