"""The targets with the fast paths on and with FAST_PATHS=false, side by side in one run.

Each mode is the real `datadiver-graph serve`, started with FAST_PATHS=true or false in its
environment. HTTP and webhook CPU: both servers run at once and take turns, paced to one
rate (bench/ab.py). Subscriptions: the fast-path server, then the stock one, through the
same levels as bench/subs_bench.py.
"""

from __future__ import annotations

from typing import Any

from bench import ab
from bench.harness import Result, say

MODES: dict[str, tuple[dict[str, str], str | None]] = {
    "fast": ({"FAST_PATHS": "true"}, None),
    "stock": ({"FAST_PATHS": "false"}, None),
}


def _http(rounds: int, seconds: float, warmup: float) -> tuple[dict[str, ab.Series], float]:
    with ab.stacks("modes-http", MODES) as running:
        series = {
            "fast graphql": ab.graphql_series("getCurrentUser, fast paths", running["fast"]),
            "stock graphql": ab.graphql_series("getCurrentUser, stock", running["stock"]),
            "fast bare": ab.graphql_series(
                "bare route, fast paths", running["fast"], "/_bench/current-user"
            ),
            "stock bare": ab.graphql_series(
                "bare route, stock", running["stock"], "/_bench/current-user"
            ),
        }
        rate = ab.interleave(list(series.values()), rounds, seconds, warmup)
    return series, rate


def _webhooks(rounds: int, seconds: float, warmup: float) -> tuple[dict[str, ab.Series], float]:
    with ab.stacks("modes-webhooks", MODES) as running:
        series = {
            mode: ab.webhook_series(f"webhook, {mode}", stack) for mode, stack in running.items()
        }
        rate = ab.interleave(list(series.values()), rounds, seconds, warmup)
    return series, rate


def _subscriptions(levels: list[int], seconds: float) -> dict[str, list[dict[str, Any]]]:
    rows = {}
    for mode, (env, _) in MODES.items():
        say(f"  subscriptions, {mode}")
        extra = {**env, "SERVICE_API_KEYS": ab.SERVICE_KEY}
        with ab.running_stack(f"modes-subs-{mode}", redis=True, extra_env=extra) as stack:
            rows[mode] = ab.subscription_levels(stack, levels, seconds)
    return rows


def _ratio(stock: float, fast: float) -> str:
    return f"{stock / fast:.2f}x" if fast else "n/a"


def run(quick: bool, profile: bool) -> Result:
    del profile  # the per-benchmark profiles cover the fast-path server already
    result = Result("Both modes: fast paths on and FAST_PATHS=false")
    load_before = ab.load_average()
    rounds, seconds, warmup = (1, 4.0, 2.0) if quick else (3, 6.0, 3.0)
    say("  HTTP getCurrentUser, both modes")
    http, http_rate = _http(rounds, seconds, warmup)
    say("  webhooks, both modes")
    hooks, hook_rate = _webhooks(rounds, seconds + 2, warmup)
    levels = [1000] if quick else [1000, 5000, 10_000]
    subs = _subscriptions(levels, 5.0 if quick else 8.0)
    load_after = ab.load_average()

    def top(mode: str, key: str) -> float:
        return float(subs[mode][-1][key])

    def worst_p99(mode: str) -> float:
        return 1000 * max(row["p99"] for row in subs[mode])

    layer = {m: http[f"{m} graphql"].cpu_us - http[f"{m} bare"].cpu_us for m in MODES}
    over_bare = {m: http[f"{m} graphql"].cpu_us / http[f"{m} bare"].cpu_us for m in MODES}
    rows: list[list[object]] = [
        [
            "server CPU per getCurrentUser",
            f"{http['fast graphql'].cpu_us:.0f} us",
            f"{http['stock graphql'].cpu_us:.0f} us",
            _ratio(http["stock graphql"].cpu_us, http["fast graphql"].cpu_us),
        ],
        [
            "GraphQL layer (getCurrentUser - bare route)",
            f"{layer['fast']:.0f} us",
            f"{layer['stock']:.0f} us",
            _ratio(layer["stock"], layer["fast"]),
        ],
        [
            "getCurrentUser / bare route, server CPU",
            f"{over_bare['fast']:.2f}x",
            f"{over_bare['stock']:.2f}x",
            "",
        ],
        [
            "getCurrentUser top rate (32 connections)",
            f"{http['fast graphql'].top_rate:.0f}/s",
            f"{http['stock graphql'].top_rate:.0f}/s",
            _ratio(http["fast graphql"].top_rate, http["stock graphql"].top_rate) + " (fast/stock)",
        ],
        [
            "webhook server CPU per event",
            f"{hooks['fast'].cpu_us:.0f} us",
            f"{hooks['stock'].cpu_us:.0f} us",
            _ratio(hooks["stock"].cpu_us, hooks["fast"].cpu_us),
        ],
        [
            f"RSS per idle subscription ({levels[-1]:,} subs)",
            f"{top('fast', 'rss_per_sub'):.1f} KiB",
            f"{top('stock', 'rss_per_sub'):.1f} KiB",
            _ratio(top("stock", "rss_per_sub"), top("fast", "rss_per_sub")),
        ],
        [
            "p99 delivery at 1000 events/s (worst level)",
            f"{worst_p99('fast'):.1f} ms",
            f"{worst_p99('stock'):.1f} ms",
            _ratio(worst_p99("stock"), worst_p99("fast")),
        ],
        [
            f"server CPU per subscribe ({levels[-1]:,} subs)",
            f"{top('fast', 'subscribe_cpu_us'):.0f} us",
            f"{top('stock', 'subscribe_cpu_us'):.0f} us",
            _ratio(top("stock", "subscribe_cpu_us"), top("fast", "subscribe_cpu_us")),
        ],
        [
            f"server CPU per delivered event ({levels[-1]:,} subs)",
            f"{top('fast', 'delivery_cpu_us'):.0f} us",
            f"{top('stock', 'delivery_cpu_us'):.0f} us",
            _ratio(top("stock", "delivery_cpu_us"), top("fast", "delivery_cpu_us")),
        ],
    ]
    result.markdown.append(
        f"Load average (1/5/15 min) {load_before} before, {load_after} after. HTTP: both "
        f"servers up at once, {rounds} round(s) of {seconds:.0f} s per series taking turns, "
        f"paced to {http_rate:.0f} req/s ({ab.PACE_SHARE:.0%} of the slowest series' top "
        f"rate); webhooks likewise at {hook_rate:.0f} events/s. Subscriptions: levels "
        f"{', '.join(f'{level:,}' for level in levels)} on each mode's server in turn. "
        "Ratio: stock / fast (above 1: the fast paths win)."
    )
    result.markdown.append("")
    result.table(["target", "fast paths on", "FAST_PATHS=false", "ratio"], rows)
    detail = []
    for mode in MODES:
        for row in subs[mode]:
            detail.append(
                [
                    mode,
                    f"{row['level']:,}",
                    f"{row['rss_per_sub']:.1f}",
                    f"{row['received']}/{row['sent']}" + ("" if row["per_sub_ok"] else " (off)"),
                    f"{row['p50'] * 1000:.1f}",
                    f"{row['p99'] * 1000:.1f}",
                    f"{row['connect_rate']:.0f}",
                ]
            )
    result.table(
        ["mode", "subscribers", "RSS KiB/sub", "delivered", "p50 ms", "p99 ms", "connect /s"],
        detail,
    )
    lost = [mode for mode in MODES if not all(row["per_sub_ok"] for row in subs[mode])]
    if lost:
        result.notes.append(f"events lost or duplicated in mode(s): {', '.join(lost)}")
    return result
