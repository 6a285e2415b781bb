"""Figure 9e, the part size: 9b's CPU-bound recalculation with two processes, parts of each
size: a burst's bars/s and the p99 of commit to applied at a steady rate; beside them, 9a's
I/O-bound burst with the most processes (how evenly the parts spread over them)."""

from __future__ import annotations

from typing import Any

from bench.figures.cpu_bound import PROCESSES
from bench.figures.creation import RATE
from bench.harness.parts import PARTS, Config, bursts, calibrate, database, running, window
from bench.harness.profile import Profile
from bench.harness.recalculations import CPU_BOUND, IO_BOUND
from bench.harness.report import Results, table
from bench.harness.run import Figure, Run


def _burst(bench: Run, config: Config, steady: bool) -> dict[str, Any]:
    profile = bench.profile
    with database(bench, config, profile.parts_bars) as contender, running(bench, contender):
        found = bursts(
            contender,
            profile.parts_events,
            profile.parts_bars,
            profile.parts_cap_s,
            profile.parts_repetitions,
        )
        if steady:
            found["steady"] = window(contender, RATE, profile.parts_window_s, profile.parts_cap_s)
    return found


def run(bench: Run) -> None:
    calibrate(bench)
    profile, rows = bench.profile, []
    most = max(profile.io_processes)
    for size in profile.part_sizes:
        burst = _burst(bench, Config(PARTS, CPU_BOUND, PROCESSES, size), steady=True)
        io = _burst(bench, Config(PARTS, IO_BOUND, most, size), steady=False)
        steady = burst.pop("steady")
        rows.append({"part_size": size, "burst": burst, "steady": steady, "io": io})
    bench.results["part_size"] = rows


def conditions(profile: Profile) -> dict[str, str]:
    sizes = ", ".join(f"{size:,}" for size in profile.part_sizes)
    return {
        "part_size": (
            f"{profile.parts_bars:,} bars in parts of {sizes}, 9b's CPU-bound recalculation and "
            f"workers, {PROCESSES} processes, a database and workers for each size; bars/s of "
            f"9b's burst ({profile.parts_events} events at once, median of "
            f"{profile.parts_repetitions}), then 9c's window at {RATE:g} events/s for "
            f"{profile.parts_window_s:g} s: commit to on every bar and to stamped applied, as "
            "9c measures them; pass p50: the passes' own times, in the burst, then in the "
            f"window; I/O-bound: 9a's burst with {max(profile.io_processes)} processes, its "
            "passes at once (of as many processes)"
        )
    }


def tables(results: Results) -> str | None:
    rows = results.get("part_size")
    if not rows:
        return None
    bars = results["profile"]["parts_bars"]
    fastest = max(rows, key=lambda r: r["burst"]["bars_per_s"])["part_size"]
    freshest = min(rows, key=lambda r: r["steady"]["bars"]["p99_ms"])["part_size"]
    summary = (
        f"; CPU-bound: most bars/s: parts of {fastest:,}; lowest p99 on every bar at {RATE:g}/s: "
        f"parts of {freshest:,}"
    )
    if all("io" in r for r in rows):
        spread = max(rows, key=lambda r: r["io"]["bars_per_s"])["part_size"]
        summary += f"; I/O-bound, most bars/s: parts of {spread:,}"
    return table(
        "9e. Parts: the part size, CPU-bound",
        results["conditions"]["part_size"] + summary,
        "part size | parts | bars/s | pass p50 ms | on every bar p50 ms | p99 ms | "
        "stamped applied p99 ms | pass p50 ms | I/O-bound bars/s | passes at once",
        [
            [
                r["part_size"],
                -(-bars // r["part_size"]),
                r["burst"]["bars_per_s"],
                r["burst"]["pass_p50_ms"],
                r["steady"]["bars"]["p50_ms"],
                r["steady"]["bars"]["p99_ms"],
                r["steady"]["p99_ms"],
                r["steady"]["pass_p50_ms"],
                r.get("io", {}).get("bars_per_s"),
                r.get("io", {}).get("at_once"),
            ]
            for r in rows
        ],
    )


FIGURE = Figure("partsize", conditions, tables, run=run)
