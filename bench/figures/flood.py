"""Figure 4, a flood of events committed at once (the backlog an outage leaves), its drain time
and the broker's peak queue depth meanwhile.

postsave gets its flood as outbox rows in one transaction; the relay then meters them into the
broker (at most POSTSAVE_MAX_IN_FLIGHT). direct commits the same flood and publishes one
message per event right away, as its application code would, and the broker holds the rest."""

from __future__ import annotations

import time
from typing import Any

import psycopg

from bench.harness import processes as procs
from bench.harness.contenders import CeleryContender, Contender, Postsave
from bench.harness.data import COMPLETE_RANGE_SQL, execute
from bench.harness.processes import step
from bench.harness.profile import Profile
from bench.harness.report import Results, table
from bench.harness.run import Figure, Run
from bench.harness.services import QueuePeak, purge, ready
from infrastructure.broker.names import RECALC_QUEUE


def _db_now(dsn: str) -> float:
    return float(execute(dsn, "SELECT extract(epoch FROM clock_timestamp())::float8"))


def _drain(
    contender: Contender,
    window: int,
    committed: float,
    count: int,
    amqp_url: str,
    queue: str,
    limit_s: float | None = None,
) -> dict[str, Any]:
    """Wait until every event is applied and the broker queue is empty. With `limit_s`, stop
    waiting then, project the drain time from the rate so far, and purge what is left (the
    contender's later scenarios and its shutdown must not wait for it)."""
    assert contender.log is not None
    deadline = time.monotonic() + (limit_s if limit_s is not None else 120.0 + count / 100.0)
    unfinished = count
    while time.monotonic() < deadline:
        unfinished = contender.log.unfinished(window)
        if unfinished == 0:
            break
        dead = [p.args for p in contender.started if p.poll() is not None]
        if dead:
            raise RuntimeError(f"{contender.name}: a process exited during the flood: {dead}")
        time.sleep(0.2)
    capped = unfinished > 0
    if capped and limit_s is None:
        raise TimeoutError(f"{contender.name}: {unfinished} flood events still unapplied")
    if not capped:
        # Every event is applied; messages may still wait in the broker (postsave: those of
        # events that another task's coalesced pass applied). The broker is done when empty.
        procs.wait_until(
            lambda: ready(amqp_url, queue) == 0,
            f"{contender.name}: broker queue empty",
            timeout_s=120.0,
            alive=contender.started,
            interval_s=0.2,
        )
    broker_empty = _db_now(contender.dsn)
    times = contender.log.times(window)
    applied = [a for _, a in times if a is not None]
    last = max(applied)
    if capped:
        purge(amqp_url, queue)
        rate = len(applied) / (last - committed)
        return {
            "events": len(times),
            "applied": len(applied),
            "capped_at_s": limit_s,
            "drain_s": len(times) / rate,  # projected at the rate reached within the cap
            "per_s": rate,
            "broker_empty_s": None,
        }
    return {
        "events": len(times),
        "applied": len(applied),
        "capped_at_s": None,
        "drain_s": last - committed,
        "per_s": len(times) / (last - committed),
        "broker_empty_s": broker_empty - committed,
    }


def _complete(contender: Contender, count: int, record_sql: str) -> list[Any]:
    """Complete `count` fresh foos and record their events, in one statement."""
    first = contender.take_foos(count)
    with psycopg.connect(contender.dsn) as connection:
        cursor = connection.execute(
            f"{COMPLETE_RANGE_SQL} {record_sql}", (first, first + count - 1)
        )
        return cursor.fetchall() if cursor.description else []


def complete_in_one_transaction(contender: Postsave, count: int) -> None:
    """The outbox rows exactly as the unit of work writes them (event_type, payload)."""
    _complete(
        contender,
        count,
        "INSERT INTO outbox_events (event_type, payload)"
        " SELECT 'FooCompleted', jsonb_build_object('foo_id', id, 'delta', amount)"
        " FROM done ORDER BY id",
    )


def flood_postsave(contender: Postsave, run: Run, count: int) -> dict[str, Any]:
    assert contender.log is not None
    window = contender.log.watermark()
    before = contender.drift()
    step(f"fig4: {contender.name}: committing {count} events in one transaction")
    complete_in_one_transaction(contender, count)
    committed = _db_now(contender.dsn)
    peak = QueuePeak(run.services, RECALC_QUEUE)
    try:
        result = _drain(contender, window, committed, count, run.amqp_url, RECALC_QUEUE)
    finally:
        depth = peak.stop()
    return {**result, **depth, **contender.invariant(before)}


def flood_direct(
    contender: CeleryContender, run: Run, count: int, limit_s: float
) -> dict[str, Any]:
    # Late: its Celery app reads BENCH_BROKER_URL (the run's vhost) when first imported.
    from bench.harness.apps import direct as app
    from bench.harness.apps import direct_apply

    assert contender.log is not None
    window = contender.log.watermark()
    before = contender.drift()
    step(f"fig4: {contender.name}: committing {count} events, then one apply_async each")
    rows = _complete(
        contender,
        count,
        "INSERT INTO bench_events (foo_id, delta) SELECT id, amount FROM done ORDER BY id"
        " RETURNING id, delta",
    )
    committed = _db_now(contender.dsn)
    peak = QueuePeak(run.services, contender.queue)
    try:
        app.conf.broker_url = contender.amqp_url
        published = time.perf_counter()
        with app.producer_or_acquire() as producer:
            for event_id, delta in rows:
                direct_apply.apply_async((event_id, delta), producer=producer)
        publish_s = time.perf_counter() - published
        result = _drain(contender, window, committed, count, run.amqp_url, contender.queue, limit_s)
    finally:
        depth = peak.stop()
    return {
        **result,
        **depth,
        "publish_s": publish_s,
        # Capped: the rest of the flood was purged, so the bars are short of it by design.
        **({"invariant_holds": None} if result["capped_at_s"] else contender.invariant(before)),
    }


def measure(run: Run, contender: Contender) -> None:
    flood = run.profile.flood
    if isinstance(contender, Postsave):
        found = flood_postsave(contender, run, flood)
    else:
        assert isinstance(contender, CeleryContender)
        found = flood_direct(contender, run, flood, run.profile.flood_limit_s)
    run.results.setdefault("figure4", {})[contender.name] = found


def conditions(profile: Profile) -> dict[str, str]:
    return {
        "figure4": (
            f"{profile.flood} events committed in one transaction, {profile.bars} bars; drain = "
            "last apply minus the flood's commit (database clock); rabbitmqctl list_queues once a "
            "second (ready + unacked), AMQP passive declare every 0.2 s (ready); direct's wait is "
            f"capped at {profile.flood_limit_s:.0f} s and its drain projected from its rate "
            "(marked ~); postsave: outbox rows inserted in one statement"
        )
    }


def tables(results: Results) -> str | None:
    fig4 = results.get("figure4", {})
    if not fig4:
        return None
    keys = ("per_s", "broker_empty_s", "peak_depth_rabbitmqctl", "peak_ready_amqp")
    rows = [
        [
            name,
            r["events"],
            f"~{r['drain_s']:,.0f}" if r.get("capped_at_s") else r["drain_s"],
            *(r.get(key) for key in keys),
            r.get("invariant_holds"),
        ]
        for name, r in fig4.items()
    ]
    return table(
        "4. Flood drain and broker depth",
        results["conditions"]["figure4"],
        "contender | events | drain s | events/s | "
        "broker empty s | peak depth (rabbitmqctl) | peak ready (AMQP) | invariant",
        rows,
    )


FIGURE = Figure(
    "flood", conditions, tables, takes=lambda _: ("direct", "postsave-pg"), measure=measure
)
