"""Figure 9c, commit to applied to every bar under a steady load, CPU-bound: p50 and p99 at
each offered rate against one full pass over every bar shared by the processes; one part,
and one pass per event, beside them."""

from __future__ import annotations

from typing import Any

from bench.figures.cpu_bound import PROCESSES
from bench.harness.parts import (
    LABELS,
    PARTS,
    SEED,
    SINGLE,
    Config,
    calibrate,
    database,
    full_pass,
    running,
    verdict,
    window,
)
from bench.harness.processes import step
from bench.harness.profile import Profile
from bench.harness.recalculations import CPU_BOUND
from bench.harness.report import Results, table
from bench.harness.run import Figure, Run

FLOOR, GOAL = 4.0, 2.0  # p99 / (one full pass / processes), at every rate


def run(bench: Run) -> None:
    calibrate(bench)
    profile = bench.profile
    found: dict[str, Any] = {"rows": []}
    for kind in (PARTS, SINGLE, SEED):
        config = Config(kind, CPU_BOUND, PROCESSES, profile.part_size)
        with database(bench, config, profile.parts_bars) as contender:
            if kind == PARTS:
                step(f"fig9c: one full pass over {profile.parts_bars:,} bars, in process")
                found["full_pass_s"] = full_pass(contender, config, profile.parts_bars)
            with running(bench, contender):
                for rate in profile.parts_rates:
                    row = window(contender, rate, profile.parts_window_s, profile.parts_cap_s)
                    found["rows"].append({"config": kind, **row})
                    if not row["kept_up"]:
                        break  # a backlog left: a higher rate would measure it, not the rate
    bench.results["freshness"] = found


def conditions(profile: Profile) -> dict[str, str]:
    rates = ", ".join(f"{rate:g}" for rate in profile.parts_rates)
    return {
        "freshness": (
            f"{profile.parts_bars:,} bars, 9b's CPU-bound recalculation and workers, "
            f"{PROCESSES} recalculation processes; open loop at {rates} events/s for "
            f"{profile.parts_window_s:g} s each (figure 1's SQL producer, 2 clients, the relay "
            "nudged after each commit); commit (outbox_events.occurred_at) to on every bar "
            "(the pass that took its last part past the event: bench_passes) and to stamped "
            "applied (outbox_events.applied_at: when a delivery settles, after its passes), "
            "database clock; after a window, up to "
            f"{profile.parts_cap_s:g} s to drain: an event unapplied then counts as waiting "
            "until then, and a configuration that did not drain runs no higher rate; x pass = "
            "p99 / (one full pass over every bar, parts in one process, timed in process before "
            f"the workers start, the median of 3 after 1 / {PROCESSES}); floor: x pass at most "
            f"{FLOOR:g} at every rate "
            f"for parts, goal {GOAL:g}"
        )
    }


def tables(results: Results) -> str | None:
    found = results.get("freshness")
    if not found:
        return None
    shared = found["full_pass_s"] / PROCESSES

    def x_pass(p99_ms: float) -> float:
        return p99_ms / 1000.0 / shared

    keys = ("offered_per_s", "achieved_per_s", "events", "unapplied")
    rows = [
        [LABELS[r["config"]], *(r[key] for key in keys), r["bars"]["p50_ms"],
         r["bars"]["p99_ms"], x_pass(r["bars"]["p99_ms"]), r["p50_ms"], r["p99_ms"],
         x_pass(r["p99_ms"])]
        for r in found["rows"]
    ]  # fmt: skip
    parts = [r for r in found["rows"] if r["config"] == PARTS]
    summary = (
        f"; one full pass {found['full_pass_s']:.2f} s in one process, {shared:.2f} s shared "
        f"by {PROCESSES}"
    )
    for what, p99 in (("on every bar", lambda r: r["bars"]["p99_ms"]), ("stamped", p99_of)):
        worst = max(x_pass(p99(r)) for r in parts)
        judged = verdict(worst, FLOOR, GOAL, higher_is_better=False)
        if len(parts) < len(profile_rates(results)) or not all(r["kept_up"] for r in parts):
            judged = "BELOW the floor: parts did not keep up at every rate"
        summary += f"; parts' worst x pass {what}: {worst:.2f}: {judged}"
    return table(
        "9c. Parts: commit to applied to every bar, CPU-bound",
        results["conditions"]["freshness"] + summary,
        "configuration | offered/s | achieved/s | events | unapplied | on every bar p50 ms | "
        "p99 ms | x pass | stamped applied p50 ms | p99 ms | x pass",
        rows,
    )


def p99_of(found: dict[str, Any]) -> float:
    return float(found["p99_ms"])


def profile_rates(results: Results) -> list[float]:
    return list(results["profile"]["parts_rates"])


FIGURE = Figure("freshness", conditions, tables, run=run)
