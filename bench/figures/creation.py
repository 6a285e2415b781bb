"""Figure 9d, a bar's creation while passes run: domain.use_cases.create_bars (one bar) timed
whole, with no event in flight and then while events keep the passes busy, against one part's
pass (a new bar joins the last part, locked: it waits at most for that part's pass)."""

from __future__ import annotations

import time
from typing import Any

from bench.figures.cpu_bound import PROCESSES
from bench.harness.parts import (
    PARTS,
    Config,
    calibrate,
    database,
    last_pass,
    passes,
    running,
    verdict,
)
from bench.harness.processes import step
from bench.harness.product import postsave
from bench.harness.profile import Profile
from bench.harness.recalculations import CPU_BOUND
from bench.harness.report import Results, summary_ms, table
from bench.harness.run import Figure, Run
from bench.harness.workload import finish_producer, start_producer, wait_processed
from domain import use_cases
from infrastructure.bootstrap import Container

RATE = 10.0  # events/s while creating: 9c's middle rate
FLOOR_MS, GOAL_MS = 100.0, 50.0  # busy p99 - idle p99, over one part's pass (p50)


def _create(container: Container, count: int, seconds: float) -> list[float]:
    """`count` bars, one create_bars call each, evenly over `seconds`; each call timed whole."""
    latencies: list[float] = []
    started = time.monotonic()
    for index in range(count):
        if (delay := started + index * seconds / count - time.monotonic()) > 0:
            time.sleep(delay)
        before = time.perf_counter()
        use_cases.create_bars(container.uow(), 3)
        latencies.append(time.perf_counter() - before)
    return latencies


def run(bench: Run) -> None:
    calibrate(bench)
    profile, count, seconds = bench.profile, bench.profile.creations, bench.profile.parts_window_s
    config = Config(PARTS, CPU_BOUND, PROCESSES, profile.part_size)
    # The last part has room for every bar created here: each call waits on a full-sized part.
    bars = profile.parts_bars - 2 * count
    with database(bench, config, bars) as contender, running(bench, contender):
        assert contender.log is not None
        before = contender.drift()
        with postsave(
            contender.database_url, recalculation=CPU_BOUND, part_size=profile.part_size
        ) as container:
            step(f"fig9d: {count} bars created one at a time over {seconds:g} s, idle")
            idle = _create(container, count, seconds)
            step(f"fig9d: {count} bars created over {seconds:g} s, {RATE:g} events/s offered")
            window, since = contender.log.watermark(), last_pass(contender)
            producer = start_producer(contender, round(RATE * seconds), RATE, 2, seconds + 2.0)
            busy = _create(container, count, seconds)
            finish_producer(producer, 60.0 + seconds)
            found_passes = passes(contender, since, seconds)
        wait_processed(contender, window, profile.parts_cap_s + 60.0)
        found: dict[str, Any] = {
            "bars": bars,
            "idle": {"creations": len(idle), **summary_ms(idle)},
            "busy": {"creations": len(busy), **summary_ms(busy), **found_passes},
            **contender.invariant(before),
        }
    found["excess_ms"] = found["busy"]["p99_ms"] - found["idle"]["p99_ms"]
    bench.results["creation"] = found


def conditions(profile: Profile) -> dict[str, str]:
    return {
        "creation": (
            f"{profile.parts_bars - 2 * profile.creations:,} bars in parts of "
            f"{profile.part_size:,} (the last with room for the bars created here), 9b's "
            f"CPU-bound recalculation and workers, {PROCESSES} processes; "
            f"{profile.creations} calls of domain.use_cases.create_bars (one bar, weight 3, "
            "a unit of work each, in the bench's process) evenly over "
            f"{profile.parts_window_s:g} s with no event in flight, then as many while "
            f"{RATE:g} events/s are offered (figure 1's SQL producer): the passes run the whole "
            "time; each call timed whole; one part's pass = the p50 of the passes' own times "
            "in that window (bench_passes: transaction start to the part's new position); "
            f"floor: p99 while passes run minus p99 idle at most one part's pass + "
            f"{FLOOR_MS:g} ms, goal + {GOAL_MS:g} ms"
        )
    }


def tables(results: Results) -> str | None:
    found = results.get("creation")
    if not found:
        return None
    idle, busy = found["idle"], found["busy"]
    keys = ("creations", "p50_ms", "p99_ms", "max_ms")
    rows = [
        ["no event in flight", *(idle[key] for key in keys), None, None],
        ["passes running", *(busy[key] for key in keys), busy["pass_p50_ms"], busy["passes"]],
    ]
    over = found["excess_ms"] - busy["pass_p50_ms"]
    summary = (
        f"; p99 while passes run minus idle: {found['excess_ms']:,.0f} ms, one part's pass "
        f"{busy['pass_p50_ms']:,.0f} ms: {over:+,.0f} ms over it (floor +{FLOOR_MS:g}, goal "
        f"+{GOAL_MS:g}): {verdict(over, FLOOR_MS, GOAL_MS, higher_is_better=False)}; invariant "
        f"{'holds' if found.get('invariant_holds') else 'BROKEN'}"
    )
    return table(
        f"9d. Parts: a bar's creation during passes ({found['bars']:,} bars)",
        results["conditions"]["creation"] + summary,
        "window | creations | p50 ms | p99 ms | max ms | pass p50 ms | passes",
        rows,
    )


FIGURE = Figure("creation", conditions, tables, run=run)
