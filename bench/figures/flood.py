"""Figure 4, a flood of events committed at once (the backlog an outage leaves), its drain time
and the broker's peak queue depth meanwhile. postsave gets its flood as outbox rows in one
transaction, which the relay meters into the broker (at most POSTSAVE_MAX_IN_FLIGHT); direct
commits the same flood and publishes one message per event at once, as its application would."""

from __future__ import annotations

import time
from typing import Any

from bench.harness import processes as procs
from bench.harness.apps import direct as direct_app
from bench.harness.apps import direct_apply
from bench.harness.contenders import CeleryContender, Contender, Postsave
from bench.harness.data import execute
from bench.harness.processes import step
from bench.harness.profile import Profile
from bench.harness.report import Results, table
from bench.harness.run import Figure, Run
from bench.harness.services import QueuePeak, purge, ready
from bench.harness.workload import NOW_SQL, complete, complete_in_one_transaction
from infrastructure.broker.names import RECALC_QUEUE


def measure(run: Run, contender: Contender) -> None:
    """Commit the flood, publish it (direct), then wait until every event is applied and the
    broker queue is empty. direct's wait is capped: its drain is then projected from the rate
    so far, and what is left purged (its later scenarios and shutdown must not wait for it)."""
    assert contender.log is not None
    count, window, before = run.profile.flood, contender.log.watermark(), contender.drift()
    direct = isinstance(contender, CeleryContender)
    queue = contender.queue if isinstance(contender, CeleryContender) else RECALC_QUEUE
    limit_s = run.profile.flood_limit_s if direct else 120.0 + count / 100.0
    step(f"fig4: {contender.name}: committing {count} events in one transaction")
    if isinstance(contender, Postsave):
        complete_in_one_transaction(contender, count)
    else:
        record = "INSERT INTO bench_events (foo_id, delta) SELECT id, amount FROM done"
        rows = complete(contender, count, f"{record} ORDER BY id RETURNING id, delta")
    committed = float(execute(contender.dsn, NOW_SQL))
    peak = QueuePeak(run.services, queue)
    extra: dict[str, Any] = {}
    try:
        if direct:
            direct_app.conf.broker_url = run.amqp_url  # made before the run's vhost
            step(f"fig4: {contender.name}: one apply_async per event")
            published = time.perf_counter()
            with direct_app.producer_or_acquire() as producer:
                for event_id, delta in rows:
                    direct_apply.apply_async((event_id, delta), producer=producer)
            extra["publish_s"] = time.perf_counter() - published
        deadline = time.monotonic() + limit_s
        while (unfinished := contender.log.unfinished(window)) and time.monotonic() < deadline:
            if dead := [p.args for p in contender.started if p.poll() is not None]:
                raise RuntimeError(f"{contender.name}: a process exited during the flood: {dead}")
            time.sleep(0.2)
        if unfinished and not direct:
            raise TimeoutError(f"{contender.name}: {unfinished} flood events still unapplied")
        if not unfinished:
            # Every event is applied; messages may still wait in the broker (postsave: those
            # of events that another task's coalesced pass applied). Done when it is empty.
            procs.wait_until(
                lambda: ready(run.amqp_url, queue) == 0,
                f"{contender.name}: broker queue empty",
                timeout_s=120.0,
                alive=contender.started,
                interval_s=0.2,
            )
        broker_empty = float(execute(contender.dsn, NOW_SQL))
    finally:
        depth = peak.stop()
    times = contender.log.times(window)
    applied = [a for _, a in times if a is not None]
    rate = len(applied) / (max(applied) - committed)
    result: dict[str, Any] = {"events": len(times), "applied": len(applied)}
    if unfinished:
        purge(run.amqp_url, queue)
        # Capped: the rest of the flood was purged, so the bars are short of it by design.
        result |= {"capped_at_s": limit_s, "drain_s": len(times) / rate, "per_s": rate}
        result |= {"broker_empty_s": None, **depth, **extra, "invariant_holds": None}
    else:
        result |= {"capped_at_s": None, "drain_s": max(applied) - committed, "per_s": rate}
        result |= {"broker_empty_s": broker_empty - committed, **depth, **extra}
        result |= contender.invariant(before)
    run.results.setdefault("figure4", {})[contender.name] = result


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
