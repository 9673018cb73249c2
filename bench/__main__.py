"""python -m bench [--quick] [--only floors,http,subs,webhooks,modes,gains,soak] [--profile]

Runs the selected benchmarks one after another (each starts and stops its own servers),
prints the figures, and appends a dated section to bench/RESULTS.md.

Full mode runs floors, http, subs, webhooks, then modes (the targets with the fast paths
on and with FAST_PATHS=false, side by side) and gains (what each fast path buys on its own
target): 15-20 minutes on 2 cores. The 30-minute soak runs only when named
(`--only soak`). `--quick` runs them all, soak included, each in a minute or two.
`--profile` adds a py-spy recording of the server under the same load to each benchmark
(bench/profiles/*.txt); the figures are measured without the profiler attached.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from bench import harness
from bench.ab import load_average
from bench.harness import Result, say

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
ALL = ("floors", "http", "subs", "webhooks", "modes", "gains", "soak")
FULL = ("floors", "http", "subs", "webhooks", "modes", "gains")


def _runner(name: str):  # type: ignore[no-untyped-def]
    if name == "floors":
        from bench import floors

        return floors.run
    if name == "http":
        from bench import http_bench

        return http_bench.run
    if name == "subs":
        from bench import subs_bench

        return subs_bench.run
    if name == "webhooks":
        from bench import webhook_bench

        return webhook_bench.run
    if name == "modes":
        from bench import modes

        return modes.run
    if name == "gains":
        from bench import gains

        return gains.run
    from bench import soak

    return soak.run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (each under 60 s)")
    parser.add_argument(
        "--only",
        default=None,
        help="comma-separated subset of: " + ", ".join(ALL),
    )
    parser.add_argument("--profile", action="store_true", help="also record py-spy profiles")
    parser.add_argument(
        "--soak-seconds", type=float, default=None, help="soak load duration (default 1800; 45)"
    )
    parser.add_argument("--no-write", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args(argv)
    if args.only is None:
        args.selected = list(ALL) if args.quick else list(FULL)
    else:
        args.selected = [part.strip() for part in args.only.split(",") if part.strip()]
        unknown = sorted(set(args.selected) - set(ALL))
        if unknown:
            parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    return args


def report(args: argparse.Namespace, results: list[Result], failures: list[str]) -> str:
    info = harness.machine()
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    mode = "quick" if args.quick else "full"
    total = sum(result.seconds for result in results)
    lines = [
        f"## {stamp} ({mode}: {', '.join(args.selected)}; {total:.0f} s)",
        "",
        f"- Load average (1/5/15 min) at the end: {load_average()}",
        f"- Machine: {info['cpu']}, {info['cores']} cores, {info['memory']}, {info['os']}",
        f"- Python: {info['python']}",
        f"- Packages: {info['packages']}",
        "",
    ]
    targets = [target for result in results for target in result.targets]
    if targets:
        lines += ["### Targets (issue 7)", ""]
        lines += ["| target | goal | measured | met |", "| --- | --- | --- | --- |"]
        for target in targets:
            met = "n/a" if target.met is None else "yes" if target.met else "**no**"
            lines.append(f"| {target.what} | {target.goal} | {target.measured} | {met} |")
        lines.append("")
    for result in results:
        lines += [f"### {result.name} ({result.seconds:.0f} s)", "", *result.markdown]
        lines += [f"- {note}" for note in result.notes]
        if result.notes:
            lines.append("")
    for failure in failures:
        lines += [f"### FAILED: {failure}", ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    limit = harness.raise_open_files()
    say(f"bench: {', '.join(args.selected)} ({'quick' if args.quick else 'full'}), nofile {limit}")
    results: list[Result] = []
    failures: list[str] = []
    for name in args.selected:
        say(f"== {name}")
        began = time.monotonic()
        try:
            if name == "soak":
                result = _runner(name)(args.quick, args.profile, args.soak_seconds)
            else:
                result = _runner(name)(args.quick, args.profile)
        except Exception as exc:
            traceback.print_exc()
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        result.seconds = time.monotonic() - began
        results.append(result)
    text = report(args, results, failures)
    print()
    print(text)
    if not args.no_write:
        if not RESULTS.exists():
            RESULTS.write_text(
                "# Benchmark results\n\nAppended by `python -m bench` (`make bench`), newest "
                "last. See bench/__main__.py for what each benchmark does.\n\n"
            )
        with RESULTS.open("a") as out:
            out.write(text + "\n")
        say(f"appended to {RESULTS}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
