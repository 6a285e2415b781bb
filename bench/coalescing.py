"""Figure 7: coalescing the heavy step. Many events arrive at once over many bars; postsave
drains them with coalescing on, against the same pipeline making one full pass per event
(POSTSAVE_COALESCE_LIMIT=0, the workers restarted so). Both bursts are outbox rows committed
in one transaction, the relay nudged right after, as the unit of work does."""

from __future__ import annotations

from typing import Any

import psycopg

from bench.contenders import Postsave, invariant
from bench.flood import complete_in_one_transaction
from bench.product import postsave
from bench.progress import step
from bench.scenarios import wait_processed
from bench.schema import insert_bars, vacuum_analyze
from infrastructure.broker.names import POLL_QUEUE, POLL_TASK


def _grow_bars(dsn: str, total: int) -> None:
    """Bars up to `total`, each starting from the deltas already applied (as create_bars)."""
    with psycopg.connect(dsn) as connection:
        row = connection.execute(
            "UPDATE bar_projection SET applied_total = applied_total WHERE id = 1"
            " RETURNING applied_total"
        ).fetchone()
        assert row is not None
        count = connection.execute("SELECT count(*) FROM bars").fetchone()
        assert count is not None
        insert_bars(connection, max(total - count[0], 0), per_weight=row[0])
    vacuum_analyze(dsn, "bars")


def _nudge(contender: Postsave) -> None:
    with postsave(contender.database_url, contender.broker_url) as container:
        container.celery_app.send_task(
            POLL_TASK, queue=POLL_QUEUE, routing_key=POLL_QUEUE, expires=10
        )


def _burst(contender: Postsave, count: int, label: str) -> dict[str, Any]:
    assert contender.log is not None
    log = contender.log
    window = log.watermark()
    step(f"fig7: {contender.name}: {count} events at once, {label}")
    complete_in_one_transaction(contender, count)
    _nudge(contender)
    wait_processed(contender, window, timeout_s=60.0 + count * 2.0)
    times = log.times(window)
    applied = [a for _, a in times if a is not None]
    with psycopg.connect(contender.dsn, autocommit=True) as connection:
        row = connection.execute(
            # applied_events is insert-only: a row's xmin is the pass that recorded it.
            "SELECT count(DISTINCT xmin::text) FROM applied_events WHERE event_id > %s",
            (window.after,),
        ).fetchone()
    assert row is not None
    return {
        "events": len(times),
        "drain_s": max(applied) - min(c for c, _ in times),
        "passes": int(row[0]),
    }


def figure7(contender: Postsave, bars: int, events: int) -> dict[str, Any]:
    before = contender.drift()
    step(f"fig7: {contender.name}: growing to {bars:,} bars")
    _grow_bars(contender.dsn, bars)
    default_env = dict(contender.settings_env)
    coalesced = _burst(contender, events, "coalescing on")
    contender.restart_recalc({**default_env, "POSTSAVE_COALESCE_LIMIT": "0"})
    try:
        separate = _burst(contender, events, "one pass per event")
    finally:
        contender.restart_recalc(default_env)
    return {
        "bars": bars,
        "events": events,
        "coalesced": coalesced,
        "separate": separate,
        "ratio": coalesced["drain_s"] / separate["drain_s"],
        **invariant(contender, before),
    }
