"""Figure 4: a flood of events committed at once (the backlog an outage leaves), its drain time
and the broker's peak queue depth meanwhile.

postsave gets its flood as outbox rows in one transaction; the relay then meters them into the
broker (at most POSTSAVE_MAX_IN_FLIGHT). direct commits the same flood and publishes one
message per event right away, as its application code would, and the broker holds the rest."""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from kombu import Connection

from bench import procs
from bench.contenders import CeleryContender, Contender, Postsave, invariant
from bench.eventlog import Window
from bench.progress import step
from bench.schema import COMPLETE_RANGE_SQL
from bench.services import RunServices
from infrastructure.broker.names import RECALC_QUEUE
from tests import rabbitmq as amqp
from tests.rabbitmq import DepthSampler


def _db_now(dsn: str) -> float:
    with psycopg.connect(dsn, autocommit=True) as connection:
        row = connection.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
    assert row is not None
    return float(row[0])


@dataclass
class _SkipFailed:
    """A failed rabbitmqctl reading counts as an empty one: never fatal to the figure."""

    services: RunServices

    def broker_depths(self) -> dict[str, int]:
        try:
            return self.services.broker_depths()
        except (subprocess.SubprocessError, OSError, ValueError):
            return {}


class QueuePeak:
    """Peak depth of one queue: rabbitmqctl once a second (ready + unacknowledged, the tests'
    DepthSampler) and the AMQP passive declare (ready only, cheap) five times a second."""

    def __init__(self, services: RunServices, queue: str) -> None:
        self.queue = queue
        self.amqp_url = services.amqp_url
        self.peak_ready = 0
        self._depths = DepthSampler(_SkipFailed(services))
        self._stop = threading.Event()
        self._ready = threading.Thread(target=self._ready_loop, daemon=True)

    def start(self) -> QueuePeak:
        self._depths.start()
        self._ready.start()
        return self

    def _ready_loop(self) -> None:
        with Connection(self.amqp_url) as connection:
            while not self._stop.is_set():
                ready = amqp.ready_in(connection.default_channel, self.queue)
                self.peak_ready = max(self.peak_ready, ready)
                self._stop.wait(0.2)

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._ready.join(timeout=60)
        readings = self._depths.stop()
        return {
            "peak_depth_rabbitmqctl": max((r.get(self.queue, 0) for r in readings), default=0),
            "peak_ready_amqp": self.peak_ready,
            "rabbitmqctl_samples": len(readings),
        }


def _drain(
    contender: Contender,
    window: Window,
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
        dead = [p.args for p in contender.alive() if p.poll() is not None]
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
            lambda: amqp.ready(amqp_url, queue) == 0,
            f"{contender.name}: broker queue empty",
            timeout_s=120.0,
            alive=contender.alive(),
            interval_s=0.2,
        )
    broker_empty = _db_now(contender.dsn)
    times = contender.log.times(window)
    applied = [a for _, a in times if a is not None]
    last = max(applied)
    if capped:
        amqp.purge(amqp_url, queue)
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


def flood_postsave(contender: Postsave, services: RunServices, count: int) -> dict[str, Any]:
    assert contender.log is not None
    window = contender.log.watermark()
    before = contender.drift()
    step(f"fig4: {contender.name}: committing {count} events in one transaction")
    complete_in_one_transaction(contender, count)
    committed = _db_now(contender.dsn)
    peak = QueuePeak(services, RECALC_QUEUE).start()
    try:
        result = _drain(contender, window, committed, count, services.amqp_url, RECALC_QUEUE)
    finally:
        depth = peak.stop()
    return {**result, **depth, **invariant(contender, before)}


def flood_direct(
    contender: CeleryContender, services: RunServices, count: int, limit_s: float
) -> dict[str, Any]:
    # Late: its Celery app reads BENCH_BROKER_URL (the run's vhost) when first imported.
    from bench.direct_app import app, direct_apply

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
    peak = QueuePeak(services, contender.queue).start()
    try:
        app.conf.broker_url = contender.amqp_url
        published = time.perf_counter()
        with app.producer_or_acquire() as producer:
            for event_id, delta in rows:
                direct_apply.apply_async((event_id, delta), producer=producer)
        publish_s = time.perf_counter() - published
        result = _drain(
            contender, window, committed, count, services.amqp_url, contender.queue, limit_s
        )
    finally:
        depth = peak.stop()
    return {
        **result,
        **depth,
        "publish_s": publish_s,
        # Capped: the rest of the flood was purged, so the bars are short of it by design.
        **({"invariant_holds": None} if result["capped_at_s"] else invariant(contender, before)),
    }
