"""Figure 7, coalescing the heavy step: a burst of events over many bars drained with coalescing
on, against the same pipeline making one full pass per event (POSTSAVE_COALESCE_LIMIT=0)."""

from __future__ import annotations

from typing import Any

import psycopg

from bench.figures.flood import complete_in_one_transaction
from bench.harness.contenders import Contender, Postsave
from bench.harness.data import execute, insert_bars
from bench.harness.processes import step
from bench.harness.product import postsave
from bench.harness.profile import Profile
from bench.harness.report import Results, table
from bench.harness.run import Figure, Run
from bench.harness.workload import wait_processed
from infrastructure.broker.names import POLL_QUEUE, POLL_TASK


def _burst(contender: Postsave, count: int, label: str) -> dict[str, Any]:
    """Outbox rows committed in one transaction, the relay nudged right after, as the unit of
    work does; drained, and the passes that applied them counted."""
    assert contender.log is not None
    window = contender.log.watermark()
    step(f"fig7: {contender.name}: {count} events at once, {label}")
    complete_in_one_transaction(contender, count)
    with postsave(contender.database_url, contender.broker_url) as container:
        container.celery_app.send_task(
            POLL_TASK, queue=POLL_QUEUE, routing_key=POLL_QUEUE, expires=10
        )
    wait_processed(contender, window, timeout_s=60.0 + count * 2.0)
    times = contender.log.times(window)
    # applied_events is insert-only: a row's xmin is the pass that recorded it.
    passes = "SELECT count(DISTINCT xmin::text) FROM applied_events WHERE event_id > %s"
    return {
        "events": len(times),
        "drain_s": max(a for _, a in times if a is not None) - min(c for c, _ in times),
        "passes": int(execute(contender.dsn, passes, window)),
    }


def measure(run: Run, contender: Contender) -> None:
    assert isinstance(contender, Postsave)
    bars, events = run.profile.coalesce_bars, run.profile.coalesce_events
    before = contender.drift()
    step(f"fig7: {contender.name}: growing to {bars:,} bars")
    with psycopg.connect(contender.dsn) as connection:
        # Each new bar starts from the deltas already applied, as create_bars does.
        applied = "UPDATE bar_projection SET applied_total = applied_total WHERE id = 1"
        total = connection.execute(f"{applied} RETURNING applied_total").fetchone()
        count = connection.execute("SELECT count(*) FROM bars").fetchone()
        assert total is not None and count is not None
        insert_bars(connection, max(bars - count[0], 0), per_weight=total[0])
    execute(contender.dsn, "VACUUM ANALYZE bars")
    default_env = dict(contender.settings_env)
    coalesced = _burst(contender, events, "coalescing on")
    contender.restart_recalc({**default_env, "POSTSAVE_COALESCE_LIMIT": "0"})
    try:
        separate = _burst(contender, events, "one pass per event")
    finally:
        contender.restart_recalc(default_env)
    run.results["figure7"] = {
        "bars": bars,
        "events": events,
        "coalesced": coalesced,
        "separate": separate,
        "ratio": coalesced["drain_s"] / separate["drain_s"],
        **contender.invariant(before),
    }


def conditions(profile: Profile) -> dict[str, str]:
    return {
        "figure7": (
            f"{profile.coalesce_events} events committed in one transaction over "
            f"{profile.coalesce_bars:,} bars, the relay nudged after the commit; drain = first "
            "commit to last apply (database clock); postsave-pg's workers (recalc prefork 2) with "
            "coalescing on (POSTSAVE_COALESCE_LIMIT 500), then restarted with "
            "POSTSAVE_COALESCE_LIMIT=0: one full pass per event; passes = transactions that "
            "recorded these events (distinct xmin of their applied_events rows); one run "
            "each, after every other postsave-pg figure"
        )
    }


def tables(results: Results) -> str | None:
    fig7 = results.get("figure7")
    if not fig7:
        return None
    rows = [
        [
            label,
            fig7[key]["events"],
            fig7[key]["passes"],
            fig7[key]["drain_s"],
            fig7[key]["drain_s"] / fig7["separate"]["drain_s"],
            invariant,
        ]
        for label, key, invariant in (
            ("coalescing on", "coalesced", fig7.get("invariant_holds")),
            ("one pass per event", "separate", None),
        )
    ]
    return table(
        f"7. Coalescing the heavy step ({fig7['bars']:,} bars)",
        results["conditions"]["figure7"],
        "postsave-pg | events | passes | drain s | x one pass per event | invariant",
        rows,
    )


# Last of postsave-pg's figures: it leaves the contender's database with many more bars.
FIGURE = Figure(
    "coalescing", conditions, tables, takes=lambda _: ("postsave-pg",), measure=measure, late=True
)
