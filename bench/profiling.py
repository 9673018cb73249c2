"""py-spy against the server process while a load runs, summarised as text.

`py-spy record --format raw` writes collapsed stacks ("frame;frame;... count"), one line per
distinct stack. The summary groups frames by file:function (line numbers dropped) and
lists where the samples are spent: by package (the leaf frame's), by function itself
(self), and including callees (inclusive). Only on-CPU samples are recorded (no --idle).
With uvloop a task's stack starts at its coroutine (the loop is C), so "inclusive" is per
task chain; `native` adds C frames (the garbage collector shows as gc_collect_main/collect).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
RATE = 250
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
_PACKAGES = (
    ("datadiver_graph", "datadiver_graph"),
    ("strawberry", "strawberry"),
    ("/graphql/", "graphql-core"),
    ("starlette", "starlette"),
    ("uvicorn", "uvicorn"),
    ("/websockets/", "websockets"),
    ("pymongo", "pymongo"),
    ("/bson/", "bson"),
    ("/jwt/", "pyjwt"),
    ("cryptography", "cryptography"),
    ("pydantic", "pydantic"),
    ("/svix/", "svix"),
    ("/redis/", "redis-py"),
    ("broadcaster", "broadcaster"),
    ("/asyncio/", "asyncio"),
    ("logging", "logging"),
    ("prometheus_client", "prometheus_client"),
    ("cross_web", "cross_web"),
)


def py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return found if Path(found).exists() else None


class Recorder:
    """Records the server for `seconds` in the background; summary() after the load ends."""

    def __init__(self, pid: int, name: str, seconds: float, *, native: bool = False) -> None:
        binary = py_spy()
        if binary is None:
            raise RuntimeError("py-spy is not installed: pip install -e '.[bench]'")
        PROFILE_DIR.mkdir(exist_ok=True)
        self.name = name
        self.raw = PROFILE_DIR / f"{name}.collapsed"
        self.process = subprocess.Popen(
            [
                *(binary, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds)))),
                # Blocking sampling: --nonblocking reads torn, truncated stacks under load.
                *("--rate", str(RATE), "--format", "raw", *(["--native"] if native else [])),
                *("--output", str(self.raw)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def finish(self) -> Path:
        _, err = self.process.communicate(timeout=60)
        if self.process.returncode != 0 or not self.raw.exists():
            raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-500:]}")
        summary = PROFILE_DIR / f"{self.name}.txt"
        summary.write_text(summarise(self.raw.read_text()))
        return summary


def _frame_key(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    file = match["file"]
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{file}:{match['func']}"


def _package(frame_key: str) -> str:
    for marker, name in _PACKAGES:
        if marker in "/" + frame_key:
            return name
    return "other (stdlib, C)"


def summarise(collapsed: str, top: int = 25) -> str:
    total = 0
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_key(frame) for frame in stack.split(";") if frame]
        # The first element is the process/thread label py-spy adds.
        frames = [frame for frame in frames if not frame.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        self_time[frames[-1]] += count
        packages[_package(frames[-1])] += count
        for frame in set(frames):
            inclusive[frame] += count
    if total == 0:
        return "no samples (was the server busy?)\n"

    def pct(count: int) -> str:
        return f"{100 * count / total:5.1f}%"

    out = [f"samples: {total} (on-CPU, {RATE} Hz)", "", "self time by package (leaf frame):"]
    out += [f"  {pct(count)}  {name}" for name, count in packages.most_common()]
    out += ["", f"top {top} functions by self time:"]
    out += [f"  {pct(count)}  {name}" for name, count in self_time.most_common(top)]
    out += ["", f"top {top * 2} functions by inclusive time (callees included):"]
    out += [f"  {pct(count)}  {name}" for name, count in inclusive.most_common(top * 2)]
    return "\n".join(out) + "\n"
