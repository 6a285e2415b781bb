"""Figure 5, the heavy step: postsave's SqlBarRepository.apply_delta (one UPDATE) in its unit of
work, against an ORM loop that loads every bar, adds in Python and flushes, as the legacy
post-save code would. Each timing includes the commit."""

from __future__ import annotations

import time
from typing import Any

import psycopg
from sqlalchemy import select
from sqlalchemy.orm import Session, registry

from bench.harness.data import execute, insert_bars
from bench.harness.processes import step
from bench.harness.product import postsave
from bench.harness.profile import Profile
from bench.harness.report import Results, median, table
from bench.harness.run import Figure, Run
from infrastructure.bootstrap import Container
from infrastructure.sql.schema import bars


def _set_based(container: Container, size: int) -> float:
    with container.uow() as uow:
        started = time.perf_counter()
        changed = uow.bars.apply_delta(3)
        uow.commit()
        seconds = time.perf_counter() - started
    assert changed == size, f"apply_delta changed {changed} of {size} bars"
    return seconds


class OrmBar:
    """A bar as the ORM loads it: the comparison's own mapping (postsave maps none)."""

    weight: int
    value: int


registry().map_imperatively(OrmBar, bars, exclude_properties=["created_at"])


def _orm_loop(container: Container) -> float:
    # The unit of work's own settings: the loop differs from apply_delta in the work only.
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
            f"bars {sizes}; SqlBarRepository.apply_delta in postsave's unit of work against "
            "loading every Bar, adding in Python, flush; commit included; median of "
            f"{profile.heavy_repetitions}"
        )
    }


def run(bench: Run) -> None:
    database = bench.roles["misc"]
    sizes, repetitions = bench.profile.heavy_bars, bench.profile.heavy_repetitions
    rows: list[dict[str, Any]] = []
    with postsave(database.url) as container:
        for size in sizes:
            with psycopg.connect(database.conninfo) as connection:
                connection.execute("TRUNCATE bars")
                insert_bars(connection, size)
            execute(database.conninfo, "VACUUM ANALYZE bars")  # plans see the table's real size
            set_based: list[float] = []
            orm_loop: list[float] = []
            for repetition in range(repetitions):
                step(f"fig5: {size} bars, repetition {repetition + 1}/{repetitions}")
                set_based.append(_set_based(container, size))
                orm_loop.append(_orm_loop(container))
            rows.append(
                {
                    "bars": size,
                    "set_based_ms": median(set_based) * 1000.0,
                    "orm_loop_ms": median(orm_loop) * 1000.0,
                    "set_based_rows_per_s": size / median(set_based),
                    "orm_loop_rows_per_s": size / median(orm_loop),
                    "speedup": median(orm_loop) / median(set_based),
                    "repetitions": repetitions,
                }
            )
    bench.results["figure5"] = rows


def tables(results: Results) -> str | None:
    keys = ("bars", "set_based_ms", "set_based_rows_per_s", "orm_loop_ms", "orm_loop_rows_per_s")
    rows = [[*(r[key] for key in keys), r["speedup"]] for r in results.get("figure5", [])]
    if not rows:
        return None
    return table(
        "5. The heavy step",
        results["conditions"]["figure5"],
        "bars | set-based ms | rows/s | ORM loop ms | rows/s | speedup",
        rows,
    )


FIGURE = Figure("heavy", conditions, tables, run=run)
