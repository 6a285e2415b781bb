"""Figure 5: the heavy step over 10,000 and 100,000 bars, set-based against an ORM loop.

Set-based is postsave's own SqlBarRepository.apply_delta (one UPDATE) inside its unit of work;
the ORM loop loads every Bar, adds in Python and flushes, as the legacy post-save code would.
Each timing includes the commit."""

from __future__ import annotations

import time
from typing import Any

import psycopg

from bench.progress import step
from bench.stats import median


def _reset_bars(dsn: str, count: int) -> None:
    with psycopg.connect(dsn) as connection:
        connection.execute("TRUNCATE bars")
        connection.execute(
            "INSERT INTO bars (weight, value) SELECT 1 + g %% 10, 0 FROM generate_series(1, %s) g",
            (count,),
        )
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE bars")


def figure5(
    dsn: str, database_url: str, sizes: tuple[int, ...], repetitions: int
) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from domain.bar import Bar
    from infrastructure.bootstrap import Container
    from infrastructure.settings import Settings

    container = Container(Settings(database_url=database_url))
    rows: list[dict[str, Any]] = []
    try:
        for size in sizes:
            _reset_bars(dsn, size)
            set_based: list[float] = []
            orm_loop: list[float] = []
            for repetition in range(repetitions):
                step(f"fig5: {size} bars, repetition {repetition + 1}/{repetitions}")
                with container.uow() as uow:
                    started = time.perf_counter()
                    changed = uow.bars.apply_delta(3)
                    uow.commit()
                    set_based.append(time.perf_counter() - started)
                assert changed == size, f"apply_delta changed {changed} of {size} bars"
                with container.session_factory() as session:
                    started = time.perf_counter()
                    for bar in session.scalars(select(Bar)).all():
                        bar.value += 3 * bar.weight
                    session.flush()
                    session.commit()
                    orm_loop.append(time.perf_counter() - started)
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
    finally:
        container.close()
    return rows
