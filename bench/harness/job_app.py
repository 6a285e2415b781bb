"""The procrastinate contender: a job deferred inside the write transaction (procrastinate 3,
psycopg 3 connector), applied set-based by `procrastinate --app=bench.harness.job_app.app
worker`. Job and effect commit separately: procrastinate has no exactly-once guard."""

from __future__ import annotations

import os

from procrastinate import App, PsycopgConnector

QUEUE = "bench"
DSN_ENV = "BENCH_PROCRASTINATE_DSN"

connector = PsycopgConnector(conninfo=os.environ.get(DSN_ENV, ""))
app = App(connector=connector)


@app.task(name="apply_delta", queue=QUEUE)
async def apply_delta(event_id: int, delta: int) -> None:
    # The worker's own pool: an async task keeps both of the worker's slots on one event loop.
    pool = connector.pool
    async with pool.connection() as connection, connection.transaction():
        # Every job updates every bar: taken in one order, or two jobs deadlock now and then.
        await connection.execute("SELECT 1 FROM bars ORDER BY id FOR UPDATE")
        await connection.execute("UPDATE bars SET value = value + %s * weight", (delta,))
        await connection.execute(
            "UPDATE bench_events SET applied_at = clock_timestamp() WHERE id = %s", (event_id,)
        )
