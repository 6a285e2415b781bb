"""Figure 4: a flood of events committed at once (the backlog an outage leaves), its drain time
and the broker's peak queue depth meanwhile.

postsave gets its flood as outbox rows in one transaction; the relay then meters them into the
broker (at most POSTSAVE_MAX_IN_FLIGHT). direct commits the same flood and publishes one
message per event right away, as its application code would, and the broker holds the rest."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
from kombu import Connection

from bench import procs
from bench.contenders import CeleryContender, Postsave, invariant
from bench.progress import step
from bench.services import RunServices


def _db_now(dsn: str) -> float:
    with psycopg.connect(dsn, autocommit=True) as connection:
        row = connection.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
    assert row is not None
    return float(row[0])


@dataclass
class DepthSampler:
    """Peak depth of one queue: rabbitmqctl (ready + unacknowledged) once a second, and the
    AMQP passive declare (ready only, cheap) five times a second in between."""

    services: RunServices
    amqp_url: str
    queue: str
    peak_ctl: int = 0
    peak_ready: int = 0
    ctl_samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> DepthSampler:
        for target in (self._ctl_loop, self._amqp_loop):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _ctl_loop(self) -> None:
        while not self._stop.is_set():
            try:
                depth = self.services.queue_depths().get(self.queue, 0)
            except Exception:  # noqa: BLE001 - a failed sample is skipped, never fatal
                depth = 0
            self.peak_ctl = max(self.peak_ctl, depth)
            self.ctl_samples += 1
            self._stop.wait(1.0)

    def _amqp_loop(self) -> None:
        with Connection(self.amqp_url) as connection:
            channel = connection.default_channel
            while not self._stop.is_set():
                ready = int(channel.queue_declare(self.queue, passive=True)[1])
                self.peak_ready = max(self.peak_ready, ready)
                self._stop.wait(0.2)

    def stop(self) -> dict[str, int]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        return {
            "peak_depth_rabbitmqctl": self.peak_ctl,
            "peak_ready_amqp": self.peak_ready,
            "rabbitmqctl_samples": self.ctl_samples,
        }


def _ready(amqp_url: str, queue: str) -> int:
    with Connection(amqp_url) as connection:
        return int(connection.default_channel.queue_declare(queue, passive=True)[1])


def _drain(
    contender: Any,
    window: Any,
    committed: float,
    count: int,
    amqp_url: str,
    queue: str,
    limit_s: float | None = None,
) -> dict[str, Any]:
    """Wait until every event is applied and the broker queue is empty. With `limit_s`, stop
    waiting then, project the drain time from the rate so far, and purge what is left (the
    contender's later scenarios and its shutdown must not wait for it)."""
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
            lambda: _ready(amqp_url, queue) == 0,
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
        _purge(amqp_url, queue)
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


def _purge(amqp_url: str, queue: str) -> None:
    with Connection(amqp_url) as connection:
        connection.default_channel.queue_purge(queue)


def complete_in_one_transaction(contender: Postsave, count: int) -> None:
    """Complete `count` fresh foos and write their outbox rows, in one statement."""
    first = contender.take_foos(count)
    with psycopg.connect(contender.dsn) as connection:
        # The outbox rows exactly as the unit of work writes them (event_type, payload).
        connection.execute(
            "WITH done AS (UPDATE foos SET state = 'completed', version = version + 1"
            " WHERE id BETWEEN %s AND %s AND state = 'pending' RETURNING id, amount)"
            " INSERT INTO outbox_events (event_type, payload)"
            " SELECT 'FooCompleted', jsonb_build_object('foo_id', id, 'delta', amount)"
            " FROM done ORDER BY id",
            (first, first + count - 1),
        )


def flood_postsave(contender: Postsave, services: RunServices, count: int) -> dict[str, Any]:
    assert contender.log is not None
    window = contender.log.watermark()
    before = contender.drift()
    step(f"fig4: {contender.name}: committing {count} events in one transaction")
    complete_in_one_transaction(contender, count)
    committed = _db_now(contender.dsn)
    sampler = DepthSampler(services, services.amqp_url, "postsave.recalc").start()
    try:
        result = _drain(contender, window, committed, count, services.amqp_url, "postsave.recalc")
    finally:
        result_depth = sampler.stop()
    return {**result, **result_depth, **invariant(contender, before)}


def flood_direct(
    contender: CeleryContender, services: RunServices, count: int, limit_s: float
) -> dict[str, Any]:
    from bench.direct_app import app, direct_apply

    assert contender.log is not None
    first = contender.take_foos(count)
    window = contender.log.watermark()
    before = contender.drift()
    step(f"fig4: {contender.name}: committing {count} events, then one apply_async each")
    with psycopg.connect(contender.dsn) as connection:
        rows = connection.execute(
            "WITH done AS (UPDATE foos SET state = 'completed', version = version + 1"
            " WHERE id BETWEEN %s AND %s AND state = 'pending' RETURNING id, amount)"
            " INSERT INTO bench_events (foo_id, delta) SELECT id, amount FROM done ORDER BY id"
            " RETURNING id, delta",
            (first, first + count - 1),
        ).fetchall()
    committed = _db_now(contender.dsn)
    sampler = DepthSampler(services, services.amqp_url, contender.queue).start()
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
        result_depth = sampler.stop()
    return {
        **result,
        **result_depth,
        "publish_s": publish_s,
        # Capped: the rest of the flood was purged, so the bars are short of it by design.
        **({"invariant_holds": None} if result["capped_at_s"] else invariant(contender, before)),
    }
