"""What each fast path buys on its own target, measured with only that one taken out.

Issue 15: a fast path that buys less than 10% on its own target should be removed. Each
variant is the real server with the fast paths on and the named ones put back to stock by
bench/variant_server.py (bench only; production has FAST_PATHS alone). Gain = (without -
with) / without: the share of the target's cost (or memory) the fast path saves.

| fast path | its target |
| --- | --- |
| direct.py + view.py | server CPU per getCurrentUser, and the GraphQL layer over the bare route |
| query_plans.py | the same |
| execution.py | the same, for a document no plan answers (plans taken out on both sides) |
| ws_transport.py, ws_shortcut.py, ws_handler.py + live_operation.py | RSS per idle subscription |
| executor.py | RSS growth per event delivered to long-lived subscriptions |

executor.py is measured on the legacy graphql-ws protocol: with the fast paths on, that is
where graphql-core's per-event executor copies run (graphql-transport-ws subscriptions run
as live_operation.py, which builds its own executor per event).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from bench import ab
from bench.harness import Result, running_stack, say

KEEP_AT = 0.10


@dataclass
class Gain:
    piece: str
    target: str
    with_: float
    without: float
    unit: str
    digits: int = 0
    # For a fixed cost over a floor (the GraphQL layer over the bare route): the floor.
    note: str = ""

    @property
    def gain(self) -> float:
        return (self.without - self.with_) / self.without if self.without else 0.0

    def row(self) -> list[object]:
        verdict = "keep" if self.gain >= KEEP_AT else "**remove**"
        return [
            self.piece,
            self.target,
            f"{self.with_:.{self.digits}f} {self.unit}",
            f"{self.without:.{self.digits}f} {self.unit}",
            f"{100 * self.gain:.1f}%",
            verdict + (f" ({self.note})" if self.note else ""),
        ]


HTTP_VARIANTS: dict[str, tuple[dict[str, str], str | None]] = {
    "all": ({}, "none"),
    "no direct": ({}, "direct"),
    "no plans": ({}, "query_plans"),
    "no plans, no execution": ({}, "query_plans,execution"),
}


def _rates(series: dict[str, ab.Series], rate: float) -> str:
    tops = ", ".join(f"{label} {s.top_rate:.0f}/s" for label, s in series.items())
    return f"paced to {rate:.0f}/s; top rates at fixed concurrency: {tops}"


def _http(quick: bool, rounds: int | None = None) -> tuple[list[Gain], str]:
    default_rounds, seconds, warmup = (1, 4.0, 2.0) if quick else (3, 6.0, 3.0)
    rounds = rounds or default_rounds
    with ab.stacks("gains-http", HTTP_VARIANTS) as running:
        series = {label: ab.graphql_series(label, stack) for label, stack in running.items()}
        series["bare"] = ab.graphql_series("bare route", running["all"], "/_bench/current-user")
        rate = ab.interleave(list(series.values()), rounds, seconds, warmup)
    cpu = {label: s.cpu_us for label, s in series.items()}
    layer = {label: value - cpu["bare"] for label, value in cpu.items()}
    pairs = [
        ("direct.py + view.py", "all", "no direct"),
        ("query_plans.py", "all", "no plans"),
        ("execution.py", "no plans", "no plans, no execution"),
    ]
    gains = []
    for piece, with_, without in pairs:
        gains.append(Gain(piece, "server CPU per getCurrentUser", cpu[with_], cpu[without], "us"))
        gains.append(
            Gain(piece, "GraphQL layer (over the bare route)", layer[with_], layer[without], "us")
        )
    return gains, f"getCurrentUser: {_rates(series, rate)}."


def _subscriptions(quick: bool) -> tuple[list[Gain], dict[str, float]]:
    level = 1000 if quick else 5000
    variants = {
        "all": "none",
        "no ws_transport": "ws_transport",
        "no ws_shortcut": "ws_shortcut",
        "no ws_handler": "ws_handler",
    }
    rss: dict[str, float] = {}
    p99: dict[str, float] = {}
    extra = {"SERVICE_API_KEYS": ab.SERVICE_KEY}
    for label, variant in variants.items():
        say(f"  subscriptions, {label}")
        with running_stack("gains-subs", redis=True, extra_env=extra, variant=variant) as stack:
            (row,) = ab.subscription_levels(stack, [level], 5.0)
        rss[label] = row["rss_per_sub"]
        p99[label] = 1000 * row["p99"]
    target = f"RSS per idle subscription ({level:,} subs)"
    gains = [
        Gain("ws_transport.py", target, rss["all"], rss["no ws_transport"], "KiB", 1),
        Gain("ws_shortcut.py", target, rss["all"], rss["no ws_shortcut"], "KiB", 1),
        Gain(
            "ws_handler.py + live_operation.py",
            target,
            rss["all"],
            rss["no ws_handler"],
            "KiB",
            1,
        ),
    ]
    return gains, p99


def _executor(quick: bool) -> tuple[list[Gain], str]:
    subscriptions, rate, seconds = (20, 1000.0, 8.0) if quick else (20, 1000.0, 20.0)
    growth: dict[str, dict[str, float]] = {}
    extra = {"SERVICE_API_KEYS": ab.SERVICE_KEY}
    runs = (
        ("plain, all", "none", ab.LEGACY_QUERY),
        ("directive, all", "none", ab.LEGACY_DIRECTIVE_QUERY),
        ("directive, no executor", "executor", ab.LEGACY_DIRECTIVE_QUERY),
    )
    for label, variant, query in runs:
        say(f"  legacy subscriptions, {label}")
        with running_stack("gains-exec", redis=True, extra_env=extra, variant=variant) as stack:
            growth[label] = asyncio.run(
                ab.legacy_growth(stack, subscriptions, rate, seconds, query)
            )
        say(f"    {growth[label]}")
    events = int(growth["directive, all"]["events"])
    gain = Gain(
        "executor.py",
        f"RSS growth per delivered event ({subscriptions} legacy subs, {events} events, "
        "a directive in the selection)",
        growth["directive, all"]["per_event_b"],
        growth["directive, no executor"]["per_event_b"],
        "B",
    )
    plain = growth["plain, all"]
    note = (
        f"executor.py, the same subscriptions without a directive (execution.py's own "
        f"collection, so executor.py has nothing to reset): {plain['growth_kib']:.0f} KiB "
        f"over {plain['events']:.0f} events ({plain['per_event_b']:.1f} B/event)."
    )
    return [gain], note


def run(quick: bool, profile: bool) -> Result:
    del profile
    result = Result("What each fast path buys (each taken out alone)")
    load_before = ab.load_average()
    say("  HTTP: direct, query plans, execution")
    gains, http_note = _http(quick)
    sub_gains, p99 = _subscriptions(quick)
    gains += sub_gains
    executor_gains, executor_note = _executor(quick)
    gains += executor_gains
    result.markdown.append(
        f"Load average (1/5/15 min) {ab.load_average()} at the end, {load_before} at the start. "
        "Each variant: the fast paths on, the named one put back to stock "
        "(bench/variant_server.py). CPU variants run side by side, taking turns, paced to one "
        "rate. Gain = (without - with) / without; keep at 10% or more on the fast path's own "
        "target (issue 15)."
    )
    result.markdown.append("")
    result.table(
        ["fast path", "target", "with", "without", "gain", "recommendation"],
        [gain.row() for gain in gains],
    )
    result.markdown.append(
        "p99 delivery at 1000 events/s in the same subscription runs: "
        + ", ".join(f"{label} {value:.1f} ms" for label, value in p99.items())
        + f". {executor_note}"
    )
    result.markdown.append("")
    result.markdown.append(http_note)
    result.markdown.append("")
    return result


def main() -> None:
    """A longer look at the CPU close calls: `python -m bench.gains http --rounds 5`
    (prints the table; nothing is appended to RESULTS.md)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.gains")
    parser.add_argument("parts", help="comma-separated: http")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    result = Result("What each fast path buys: CPU close calls, longer")
    gains: list[Gain] = []
    notes = []
    load_before = ab.load_average()
    for part in args.parts.split(","):
        if part != "http":
            parser.error(f"unknown part {part!r}")
        found, note = _http(False, args.rounds)
        gains += found
        notes.append(note)
    say(f"load average {load_before} before, {ab.load_average()} after; {args.rounds} rounds")
    result.table(
        ["fast path", "target", "with", "without", "gain", "recommendation"],
        [gain.row() for gain in gains],
    )
    say("\n".join([*result.markdown, *notes]))


if __name__ == "__main__":
    main()
