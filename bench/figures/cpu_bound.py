"""Figure 9b, a CPU-bound recalculation over many bars: as 9a, with two processes against one
(the machine's two cores)."""

from __future__ import annotations

from bench.figures.io_bound import conditions as io_conditions
from bench.harness.parts import (
    PARTS,
    SEED,
    SINGLE,
    Config,
    calibrate,
    measure_bursts,
    scaling_table,
)
from bench.harness.profile import Profile
from bench.harness.recalculations import CPU_BOUND, CPU_US
from bench.harness.report import Results
from bench.harness.run import Figure, Run

PROCESSES = 2
FLOOR, GOAL = 1.4, 1.7  # bars/s with 2 processes / 1 process's


def configs(profile: Profile) -> list[Config]:
    return [Config(PARTS, CPU_BOUND, n, profile.part_size) for n in (1, PROCESSES)] + [
        Config(kind, CPU_BOUND, PROCESSES, profile.part_size) for kind in (SINGLE, SEED)
    ]


def run(bench: Run) -> None:
    calibrate(bench)
    bench.results["cpu_bound"] = measure_bursts(bench, configs(bench.profile))


def conditions(profile: Profile) -> dict[str, str]:
    io = io_conditions(profile)["io_bound"]
    workload = io[io.index("postsave's relay worker") : io.index("; floor:")]
    return {
        "cpu_bound": (
            f"{profile.parts_bars:,} bars; POSTSAVE_RECALCULATION={CPU_BOUND}: about "
            f"{CPU_US:g} us of pure Python per bar (a loop, its count measured once for this "
            f"machine and handed to every worker), then the example's; {workload}; floor: "
            f"{PROCESSES} processes at {FLOOR:g}x one process, goal {GOAL:g}x"
        )
    }


def tables(results: Results) -> str | None:
    rows = results.get("cpu_bound")
    if not rows:
        return None
    measured = results.get("recalculations", {}).get("cpu_bound_us")
    title = "9b. Parts: a CPU-bound recalculation"
    if measured:
        title += f" ({measured:.0f} us a call, measured alone)"
    conditions = results["conditions"]["cpu_bound"]
    return scaling_table(title, conditions, rows, FLOOR, GOAL, of="x one process")


FIGURE = Figure("cpu", conditions, tables, run=run)
