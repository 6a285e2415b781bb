"""Figure 5, the heavy step as users get it: one event through postsave's passes (the example's
recalculation over every bar, part by part, in one process), against the set-based UPDATE that
was the heavy step before recalculations were the team's, and an ORM loop that loads every bar,
adds in Python and flushes, as the legacy post-save code would. Each timing includes the commit."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import psycopg
from sqlalchemy import select, text
from sqlalchemy.orm import Session, registry

from bench.harness.data import execute, insert_bars
from bench.harness.parts import sequence_pending
from bench.harness.processes import step
from bench.harness.product import postsave
from bench.harness.profile import Profile
from bench.harness.report import Results, median, table
from bench.harness.run import Figure, Run
from domain import use_cases
from domain.parts import DEFAULT_PART_SIZE
from domain.passes import advance_parts
from infrastructure.bootstrap import Container
from infrastructure.sql.schema import bars


def _passes(container: Container, size: int) -> float:
    """One event completed and sequenced (untimed), then every part passed, one after another."""
    foo = use_cases.create_foos(container.uow(), 3)[0]
    use_cases.complete_foo(container.uow(), foo)
    sequence_pending(container)
    unbounded = dataclasses.replace(container.heavy_step, budget_s=3600.0)
    started = time.perf_counter()
    passes = advance_parts(container.uow, unbounded)
    seconds = time.perf_counter() - started
    expected = -(-size // DEFAULT_PART_SIZE)
    assert passes == expected, f"{passes} passes over {size} bars, expected {expected}"
    return seconds


def _set_based(container: Container) -> float:
    with container.engine.begin() as connection:
        started = time.perf_counter()
        connection.execute(text("UPDATE bars SET value = value + 3 * weight"))
    return time.perf_counter() - started


class OrmBar:
    """A bar as the ORM loads it: the comparison's own mapping (postsave maps none)."""

    weight: int
    value: int


registry().map_imperatively(OrmBar, bars, exclude_properties=["created_at"])


def _orm_loop(container: Container) -> float:
    # The unit of work's own settings: the loop differs from a pass in the work only.
    with Session(container.engine, autoflush=False, expire_on_commit=False) as session:
        started = time.perf_counter()
        for bar in session.scalars(select(OrmBar)).all():
            bar.value += 3 * bar.weight
        session.flush()
        session.commit()
        return time.perf_counter() - started


def conditions(profile: Profile) -> dict[str, str]:
    sizes = ", ".join(f"{b:,}" for b in profile.heavy_bars)
    return {
        "figure5": (
            f"bars {sizes} (created as create_bars does, parts of {DEFAULT_PART_SIZE:,}); "
            "passes: one event completed and sequenced, then domain.passes.advance_parts in "
            "process (the example's recalculation, every part one after another: what one "
            "worker process does); set-based: one UPDATE bars SET value = value + 3 * weight "
            "(the heavy step before the recalculation was the team's); ORM loop: loading every "
            "bar, adding in Python, flush; commit included; median of "
            f"{profile.heavy_repetitions}"
        )
    }


def run(bench: Run) -> None:
    database = bench.roles["heavy"]
    sizes, repetitions = bench.profile.heavy_bars, bench.profile.heavy_repetitions
    rows: list[dict[str, Any]] = []
    with postsave(database.url) as container:
        for size in sizes:
            with psycopg.connect(database.conninfo) as connection:
                connection.execute("TRUNCATE bars, bar_parts, bar_baselines")
                insert_bars(connection, size)
            execute(database.conninfo, "VACUUM ANALYZE")  # plans see the tables' real size
            timings: dict[str, list[float]] = {"passes": [], "set_based": [], "orm_loop": []}
            if size == sizes[0]:
                _passes(container, size)  # untimed: imports, connections, plans
            for repetition in range(repetitions):
                step(f"fig5: {size} bars, repetition {repetition + 1}/{repetitions}")
                timings["passes"].append(_passes(container, size))
                timings["set_based"].append(_set_based(container))
                timings["orm_loop"].append(_orm_loop(container))
            found: dict[str, Any] = {"bars": size, "repetitions": repetitions}
            for name, seconds in timings.items():
                found[f"{name}_ms"] = median(seconds) * 1000.0
                found[f"{name}_rows_per_s"] = size / median(seconds)
            rows.append(found)
    bench.results["figure5"] = rows


def tables(results: Results) -> str | None:
    rows = [
        [
            r["bars"],
            r["passes_ms"],
            r["passes_rows_per_s"],
            r["set_based_ms"],
            r["orm_loop_ms"],
            r["passes_ms"] / r["set_based_ms"],
            r["orm_loop_ms"] / r["passes_ms"],
        ]
        for r in results.get("figure5", [])
        if "passes_ms" in r  # runs before the passes measured set-based and ORM only
    ]
    if not rows:
        return None
    return table(
        "5. The heavy step",
        results["conditions"]["figure5"],
        "bars | passes ms | bars/s | set-based ms | ORM loop ms | passes x set-based | "
        "ORM loop x passes",
        rows,
    )


FIGURE = Figure("heavy", conditions, tables, run=run)
