"""python -m bench.import_bench [--users N]: import rate and peak memory of `import`/`export`.

Writes N Convex-shaped users to a JSONL file, imports them with the real command into an
embedded SecantusDB (a fresh one), then exports them back, and reports documents per
second and the peak RSS of each command process (`ru_maxrss` of the child). Memory should
not grow with N: the import streams in batches into a staging collection.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from tests.cli import clean_env, executable

from datadiver_graph.storage.embedded import EmbeddedMongo


def write_users(path: Path, count: int) -> None:
    with path.open("wb") as out:
        for i in range(count):
            doc = {
                "_id": f"jd7{i:029d}",
                "_creationTime": 1_700_000_000_000.0 + i,
                "externalId": f"user_{i:08d}",
                "name": f"User {i}",
                "email": f"user{i}@example.com",
                "preferences": {"theme": "dark"},
            }
            out.write(orjson.dumps(doc) + b"\n")


def timed(args: list[str], env: dict[str, str], cwd: Path) -> tuple[float, int]:
    """Wall seconds and the child's peak RSS in MiB."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run([executable(), *args], env=env, cwd=cwd, capture_output=True)
    if done.returncode != 0:
        # The command's own one-line error says why; a bench that hides it measures nothing.
        raise SystemExit(f"{' '.join(args)} failed: {done.stderr.decode(errors='replace')}")
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, max(peak, before) // 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="import-bench-") as tmp:
        root = Path(tmp)
        server = EmbeddedMongo(root / "db")
        uri = server.start()
        try:
            env = clean_env(MONGODB_URI=uri, MONGODB_DB="bench", DATA_DIR=str(root / "data"))
            data = root / "users.jsonl"
            write_users(data, args.users)
            size = data.stat().st_size / 2**20
            seconds, peak = timed(["import", "--table", "users", str(data)], env, root)
            print(
                f"import {args.users} users ({size:.0f} MiB): {seconds:.1f} s, "
                f"{args.users / seconds:,.0f} docs/s, peak RSS {peak} MiB"
            )
            out = root / "out.zip"
            seconds, peak = timed(["export", "--path", str(out)], env, root)
            print(
                f"export {args.users} users: {seconds:.1f} s, "
                f"{args.users / seconds:,.0f} docs/s, peak RSS {peak} MiB"
            )
        finally:
            server.stop()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
