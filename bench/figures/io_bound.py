"""Figure 9a, an I/O-bound recalculation over many bars: one burst of events through real
`celery -A tasks worker` processes, bars/s with N recalculation processes against N times one
process's; one part, and one pass per event, beside them."""

from __future__ import annotations

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
from bench.harness.recalculations import IO_BOUND, IO_WAIT_S
from bench.harness.report import Results
from bench.harness.run import Figure, Run

FLOOR, GOAL = 0.6, 0.8  # bars/s with the most processes / (N x one process's)


def configs(profile: Profile) -> list[Config]:
    most = max(profile.io_processes)
    return [Config(PARTS, IO_BOUND, n, profile.part_size) for n in profile.io_processes] + [
        Config(kind, IO_BOUND, most, profile.part_size) for kind in (SINGLE, SEED)
    ]


def run(bench: Run) -> None:
    calibrate(bench)
    bench.results["io_bound"] = measure_bursts(bench, configs(bench.profile))


def conditions(profile: Profile) -> dict[str, str]:
    return {
        "io_bound": (
            f"{profile.parts_bars:,} bars; POSTSAVE_RECALCULATION={IO_BOUND}: "
            f"time.sleep({IO_WAIT_S}) per bar (a pricing service's call), then the example's; "
            "postsave's relay worker, recalculation worker (`celery -A tasks worker`, prefork, "
            "N processes) and beat on PostgreSQL + RabbitMQ, a database of their own, settings "
            "at their defaults but these; a burst of "
            f"{profile.parts_events} events committed in one transaction (each event's message "
            "lends one process to the passes), the relay nudged: seconds from the commit to "
            "every part applied (outbox_events.applied_at, database clock), bars/s = bars / "
            f"seconds, median of {profile.parts_repetitions} (one pass per event: 1); x one "
            "process = against parts with "
            "1 process; efficiency = that / N; a configuration still applying after "
            f"{profile.parts_cap_s:g} s is projected from its rate (~); passes from bench_passes "
            "(a trigger on bar_parts), at once = their summed time / seconds; "
            f"floor: efficiency at {max(profile.io_processes)} processes {FLOOR:g}, goal {GOAL:g}"
        )
    }


def tables(results: Results) -> str | None:
    rows = results.get("io_bound")
    if not rows:
        return None
    measured = results.get("recalculations", {}).get("io_bound_us")
    title = "9a. Parts: an I/O-bound recalculation"
    if measured:
        title += f" ({measured:.0f} us a call, measured alone)"
    conditions = results["conditions"]["io_bound"]
    return scaling_table(title, conditions, rows, FLOOR, GOAL, of="efficiency")


FIGURE = Figure("io", conditions, tables, run=run)
