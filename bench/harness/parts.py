"""The parts figures' pipeline: postsave's relay worker, recalculation worker (N processes) and
beat on a database of its own, holding many bars made as create_bars makes them, with a
recalculation of bench/harness/recalculations.py and the parts a configuration says; bursts
of events and open-loop windows, read back from the log (commit to applied, database clock)
and from bench_passes (one row per pass)."""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg

from bench.harness import recalculations
from bench.harness.contenders import Postsave, postsave_pg
from bench.harness.data import execute, insert_bars
from bench.harness.processes import step
from bench.harness.product import postsave
from bench.harness.report import median, percentile, summary_ms, table
from bench.harness.run import Run
from bench.harness.services import purge
from bench.harness.workload import NOW_SQL, complete_in_one_transaction, nudge, produce
from domain import use_cases
from domain.passes import advance_parts
from infrastructure.bootstrap import Container
from infrastructure.broker.names import POLL_QUEUE, RECALC_QUEUE

PARTS = "parts"
SINGLE = "one part"
SEED = "one pass per event"
LABELS = {
    PARTS: "parts (postsave now)",
    SINGLE: "one part (postsave before parts)",
    SEED: "one pass per event, one at a time (the seed's)",
}
_databases = itertools.count(1)


@dataclass(frozen=True)
class Config:
    kind: str  # PARTS, SINGLE or SEED
    recalculation: str
    processes: int  # the recalculation worker's prefork pool
    part_size: int  # PARTS only: the others have every bar in one part

    def settings_env(self, bars: int) -> dict[str, str]:
        """As a deployment sets them; the rest at postsave's defaults (lease 30 s)."""
        env = {
            "POSTSAVE_RECALCULATION": self.recalculation,
            "POSTSAVE_PART_SIZE": str(self.part_size if self.kind == PARTS else bars),
            recalculations.LOOPS_ENV: str(recalculations.loops()),
        }
        if self.kind == SEED:
            env["POSTSAVE_COALESCE_LIMIT"] = "0"
        return env

    def describe(self, bars: int) -> str:
        size = self.part_size if self.kind == PARTS else bars
        return f"{LABELS[self.kind]}, parts of {size:,}, {self.processes} process(es)"


def calibrate(run: Run) -> dict[str, Any]:
    """Once per run: the CPU-bound loop count, handed to every worker through the environment
    (the bench's own processes inherit it), and what each recalculation costs per call here."""
    found = run.results.get("recalculations")
    if found is None:
        loops = recalculations.loops()  # measured now unless the environment says
        os.environ[recalculations.LOOPS_ENV] = str(loops)  # the workers' and producers'
        found = run.results["recalculations"] = {
            "cpu_loops": loops,
            "cpu_bound_us": recalculations.per_call_us(recalculations.cpu_bound),
            "io_bound_us": recalculations.per_call_us(recalculations.io_bound, 500),
        }
    return found


@contextmanager
def database(run: Run, config: Config, bars: int) -> Iterator[Postsave]:
    """A database of its own, a copy of the run's seeded one with `bars` bars instead of its
    100; the contender on it, not started yet; dropped on the way out."""
    name = f"parts_{next(_databases)}"
    made = run.services.create_database(name, template=run.roles[PARTS])
    try:
        with psycopg.connect(made.conninfo) as connection:
            connection.execute("TRUNCATE bars, bar_parts, bar_baselines")
            size = config.part_size if config.kind == PARTS else bars
            insert_bars(connection, bars, size, config.recalculation)
        execute(made.conninfo, "VACUUM ANALYZE")
        settings = config.settings_env(bars)
        contender = postsave_pg(run.workdir, made, run.amqp_url, settings, name)
        contender.recalc_processes, contender.threads = config.processes, 2
        contender.description = config.describe(bars)
        yield contender
    finally:
        run.services.drop_database(made)


@contextmanager
def running(run: Run, contender: Postsave) -> Iterator[Postsave]:
    step(f"{contender.name}: starting its workers: {contender.description}")
    contender.start()
    try:
        yield contender
    finally:
        step(f"{contender.name}: stopping its workers; their queues purged")
        contender.stop()
        for queue in (RECALC_QUEUE, POLL_QUEUE):  # no message of this database for the next
            purge(run.amqp_url, queue)


def sequence_pending(container: Container) -> int:
    """Give the waiting events their positions, as the relay does before it dispatches."""
    with container.uow() as uow:
        assert uow.relay_queue.try_lock()
        fresh = uow.relay_queue.claim_unsequenced(1000)
        uow.relay_queue.sequence([(stored.id, stored.event().delta) for stored in fresh])
        uow.commit()
    return len(fresh)


def full_pass(contender: Postsave, config: Config, bars: int, times: int = 3) -> float:
    """Seconds for one event's pass over every part in this process, before the workers
    start: what one worker process takes for it alone (the median of `times`, after one
    untimed: the new table's first reads and writes)."""
    part_size = config.part_size if config.kind == PARTS else bars
    with postsave(
        contender.database_url, recalculation=config.recalculation, part_size=part_size
    ) as container:
        unbounded = dataclasses.replace(container.heavy_step, budget_s=3600.0)
        timings = []
        for _ in range(times + 1):
            use_cases.complete_foo(container.uow(), contender.take_foos(1))
            sequence_pending(container)
            started = time.perf_counter()
            advance_parts(container.uow, unbounded)
            timings.append(time.perf_counter() - started)
        return median(timings[1:])


def last_pass(contender: Postsave) -> int:
    return int(execute(contender.dsn, "SELECT coalesce(max(id), 0) FROM bench_passes"))


def passes(contender: Postsave, since: int, seconds: float) -> dict[str, Any]:
    """The passes after `since`: how many, how long each took (its transaction), and how many
    ran at once on average over `seconds`."""
    assert contender.log is not None
    durations = [
        found[0]
        for found in contender.log.rows(
            "SELECT extract(epoch FROM ended_at - started_at)::float8 FROM bench_passes"
            " WHERE id > %s",
            since,
        )
    ]
    return {
        "passes": len(durations),
        "pass_p50_ms": percentile(durations, 50) * 1000.0,
        "pass_p99_ms": percentile(durations, 99) * 1000.0,
        "at_once": sum(durations) / seconds if seconds > 0 else None,
    }


def bars_applied(contender: Postsave, window: int) -> list[float | None]:
    """Per event of the window, in id order: when its last part passed it (bench_passes, the
    pass's update of its part, just before its commit), None if one has not yet. An event is
    on every bar then; it is stamped applied (applied_at) when a delivery next settles."""
    assert contender.log is not None
    ends: dict[int, tuple[list[int], list[float]]] = {}
    for part_id, position, ended in contender.log.rows(
        "SELECT part_id, to_position, extract(epoch FROM ended_at)::float8 FROM bench_passes"
        " ORDER BY ended_at"
    ):
        positions, times = ends.setdefault(part_id, ([], []))
        positions.append(max(position, positions[-1] if positions else position))
        times.append(ended)
    parts = contender.log.rows("SELECT id, position, baseline_position FROM bar_parts")
    found: list[float | None] = []
    for (position,) in contender.log.rows(
        "SELECT position FROM outbox_events WHERE id > %s ORDER BY id", window
    ):
        latest, passed = 0.0, position is not None
        for part_id, now_at, created_at in parts if passed else ():
            if created_at >= position:
                continue  # made after the event: never had it to apply
            positions, times = ends.get(part_id, ([], []))
            index = bisect.bisect_left(positions, position)
            if now_at < position or index == len(times):
                passed = False  # a part still before it
                break
            latest = max(latest, times[index])
        found.append(latest if passed else None)
    return found


def _wait_applied(contender: Postsave, window: int, limit_s: float) -> bool:
    assert contender.log is not None
    deadline = time.monotonic() + limit_s
    while contender.log.unfinished(window):
        if time.monotonic() > deadline:
            return False
        if dead := [p.args for p in contender.started if p.poll() is not None]:
            raise RuntimeError(f"{contender.name}: a process exited: {dead}")
        time.sleep(0.05)
    return True


def burst(contender: Postsave, events: int, bars: int, cap_s: float) -> dict[str, Any]:
    """`events` committed in one transaction, the relay nudged: bars/s from the commit until
    every part has applied them all. Past `cap_s`, projected from the events applied so far."""
    assert contender.log is not None
    window, since = contender.log.watermark(), last_pass(contender)
    complete_in_one_transaction(contender, events)
    nudge(contender)
    drained = _wait_applied(contender, window, cap_s)
    now = float(execute(contender.dsn, NOW_SQL))
    times = contender.log.times(window)
    committed = min(c for c, _ in times)
    applied = [a for _, a in times if a is not None]
    elapsed = (max(applied) if drained else now) - committed
    seconds = elapsed if drained else elapsed * len(times) / max(len(applied), 1)
    return {
        "events": len(times),
        "applied": len(applied),
        "seconds": seconds,
        "projected": not drained,
        "bars_per_s": bars / seconds,
        **passes(contender, since, elapsed),
    }


def bursts(contender: Postsave, events: int, bars: int, cap_s: float, times: int) -> dict[str, Any]:
    """The median of `times` bursts (one, if the first was capped)."""
    runs = []
    for repetition in range(times):
        step(f"{contender.name}: {events} events at once, burst {repetition + 1}/{times}")
        runs.append(burst(contender, events, bars, cap_s))
        if runs[-1]["projected"]:
            break  # the rest waits on: nothing more would be measured
    runs.sort(key=lambda r: r["bars_per_s"])
    return {**runs[len(runs) // 2], "runs": len(runs), "invariant_holds": None}


def window(contender: Postsave, rate: float, seconds: float, cap_s: float) -> dict[str, Any]:
    """Open loop at `rate` for `seconds`, then until applied (at most `cap_s` more): commit to
    applied; an event still unapplied then counts as waiting until then (a lower bound)."""
    assert contender.log is not None
    step(f"{contender.name}: {rate:g} events/s for {seconds:g} s")
    window_id, since = contender.log.watermark(), last_pass(contender)
    produced = produce(contender, max(1, round(rate * seconds)), rate, seconds + 2.0, threads=2)
    kept_up = _wait_applied(contender, window_id, cap_s)
    now = float(execute(contender.dsn, NOW_SQL))
    times = contender.log.times(window_id)
    latencies = [(a if a is not None else now) - c for c, a in times]
    on_bars = bars_applied(contender, window_id)
    bars = [(b if b is not None else now) - c for (c, _), b in zip(times, on_bars, strict=True)]
    span = max(a or now for _, a in times) - min(c for c, _ in times)
    return {
        "offered_per_s": rate,
        "achieved_per_s": produced.rate,
        "events": len(times),
        "unapplied": sum(1 for _, a in times if a is None),
        "kept_up": kept_up,
        **summary_ms(latencies),
        "bars": summary_ms(bars),
        **passes(contender, since, span),
    }


def measure_bursts(run: Run, configs: list[Config]) -> list[dict[str, Any]]:
    """Each configuration on a database of its own: its bursts, then (drained) the invariant."""
    profile, rows = run.profile, []
    for config in configs:
        with database(run, config, profile.parts_bars) as contender:
            before = contender.drift()
            with running(run, contender):
                times = 1 if config.kind == SEED else profile.parts_repetitions  # the slowest
                found = bursts(
                    contender, profile.parts_events, profile.parts_bars, profile.parts_cap_s, times
                )
                if not found["projected"]:
                    found["invariant_holds"] = contender.invariant(before)["invariant_holds"]
            rows.append({"config": config.kind, "processes": config.processes, **found})
    return rows


def verdict(value: float, floor: float, goal: float, higher_is_better: bool = True) -> str:
    better = (lambda a, b: a >= b) if higher_is_better else (lambda a, b: a <= b)
    if better(value, goal):
        return "meets the goal"
    return "meets the floor, not the goal" if better(value, floor) else "BELOW the floor"


def scaling_table(
    title: str, conditions: str, rows: list[dict[str, Any]], floor: float, goal: float, of: str
) -> str:
    """Bursts per configuration against one process of parts: `of` names the ratio judged,
    at the most processes of parts ("efficiency": bars/s / (N x one process's), else x one)."""
    one = next(r["bars_per_s"] for r in rows if r["config"] == PARTS and r["processes"] == 1)
    cells = []
    for r in rows:
        seconds = f"~{r['seconds']:,.1f}" if r["projected"] else r["seconds"]
        x_one = r["bars_per_s"] / one
        cells.append(
            [LABELS[r["config"]], r["processes"], r["events"], seconds, r["bars_per_s"], x_one,
             x_one / r["processes"], r["passes"], r["pass_p50_ms"], r["at_once"],
             r["invariant_holds"]]
        )  # fmt: skip
    top = max((r for r in rows if r["config"] == PARTS), key=lambda r: r["processes"])
    judged = top["bars_per_s"] / one / (top["processes"] if of == "efficiency" else 1)
    summary = (
        f"; {of} at {top['processes']} processes: {judged:.2f} (floor {floor:g}, goal "
        f"{goal:g}): {verdict(judged, floor, goal)}"
    )
    return table(
        title,
        conditions + summary,
        "configuration | processes | events | seconds | bars/s | x one process | efficiency | "
        "passes | pass p50 ms | passes at once | invariant",
        cells,
    )
