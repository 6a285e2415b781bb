"""Figure 6, reference lines: what this machine allows, measured beside the results; and the
cost of history: the relay's claim with a large processed log against an empty one."""

from __future__ import annotations

import contextlib
import glob
import itertools
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from kombu import Connection, Exchange, Producer, Queue

from bench.product import postsave
from bench.progress import step
from bench.schema import vacuum_analyze
from bench.services import Database
from bench.stats import median
from domain import use_cases
from domain.events import FooCompleted
from infrastructure.bootstrap import Container


def pg_test_fsync(seconds: int) -> dict[str, Any]:
    """Only the first section (one 8 kB write per sync) is read; the rest is not waited for."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_test_fsync"))
    if not found:
        return {"available": False}
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-fsync-", dir="/var/tmp") as directory:
        process = subprocess.Popen(
            [found[-1], "-s", str(seconds), "-f", str(Path(directory) / "fsync.test")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert process.stdout is not None
        deadline = time.monotonic() + 10 * seconds + 30
        try:
            for line in process.stdout:
                lines.append(line.rstrip())
                stripped = line.strip()
                if stripped.startswith("fdatasync") or time.monotonic() > deadline:
                    break
        finally:
            process.kill()
            process.wait()
    result: dict[str, Any] = {"available": True, "binary": found[-1], "seconds": seconds}
    for line in lines:
        parts = line.split()
        if parts and parts[0] in ("open_datasync", "fdatasync") and "ops/sec" in line:
            result[parts[0]] = line.strip()
            with contextlib.suppress(ValueError):  # "n/a*" where the method is unsupported
                result[f"{parts[0]}_ops_per_s"] = float(parts[1])
    return result


def _repeat_for(seconds: float, once: Callable[[int], object]) -> tuple[int, float]:
    """Call `once(i)` for i = 0, 1, ... until `seconds` have passed: (calls, seconds taken)."""
    count = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        once(count)
        count += 1
    return count, time.perf_counter() - started


def insert_commit_rate(dsn: str, seconds: float) -> dict[str, Any]:
    """Single-row INSERT and COMMIT from one client: the floor of any transactional write."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(
            "CREATE TABLE IF NOT EXISTS bench_reference (id bigserial PRIMARY KEY, v int)"
        )
        count, elapsed = _repeat_for(
            seconds, lambda _: connection.execute("INSERT INTO bench_reference (v) VALUES (1)")
        )
        connection.execute("DROP TABLE bench_reference")
    return {"commits": count, "seconds": elapsed, "per_s": count / elapsed}


def kombu_publish_rate(amqp_url: str, seconds: float) -> dict[str, Any]:
    """kombu's Producer.publish of a small JSON body, no confirms: the broker client's floor."""
    queue = Queue("bench.kombu", Exchange("bench.kombu", type="direct"), routing_key="bench.kombu")
    with Connection(amqp_url) as connection:
        channel = connection.channel()
        queue(channel).declare()
        producer = Producer(channel, exchange=queue.exchange, routing_key="bench.kombu")
        count, elapsed = _repeat_for(
            seconds, lambda i: producer.publish({"event_id": i}, serializer="json")
        )
        queue(channel).delete()
    return {"messages": count, "seconds": elapsed, "per_s": count / elapsed}


def use_case_rate(database_url: str, amqp_url: str, seconds: float) -> dict[str, Any]:
    """postsave's write path as an application calls it (use_cases.complete_foo: ORM load,
    version-checked update, outbox insert, commit), one client, without and with the nudge.
    No worker runs: nudges wait in postsave.poll, which keeps only the newest."""
    result: dict[str, Any] = {}
    foo_ids = itertools.count(1)  # each foo completed once, across both loops
    for nudge in (False, True):
        with postsave(database_url, amqp_url, nudge=nudge) as container:
            use_cases.complete_foo(container.uow(), next(foo_ids))  # connections: not timed
            if container.relay_nudge is not None:
                container.relay_nudge.flush()  # the broker connection too
            count, elapsed = _repeat_for(
                seconds, lambda _: use_cases.complete_foo(container.uow(), next(foo_ids))
            )
        result["with_nudge" if nudge else "without_nudge"] = {
            "commits": count,
            "seconds": elapsed,
            "per_s": count / elapsed,
        }
    return result


def _claim_once(container: Container) -> tuple[float, int]:
    """The relay's claim of one batch (SqlRelayQueue.claim_pending(100)), rolled back."""
    with container.uow() as uow:
        started = time.perf_counter()
        claimed = len(uow.relay_queue.claim_pending(100))
        return time.perf_counter() - started, claimed


def _pending(container: Container, count: int) -> None:
    with container.uow() as uow:
        for foo_id in range(1, count + 1):
            uow.outbox.append(FooCompleted(foo_id=foo_id, delta=1))
        uow.commit()


def claim_time(empty: Database, full: Database, history: int, repetitions: int) -> dict[str, Any]:
    """Two databases: 100 pending events alone, and the same behind `history` processed ones.
    Claims alternate between them, so that the machine's noise falls on both alike."""
    step(f"claim: bulk-inserting {history} processed events (older than the pending ones)")
    with psycopg.connect(full.conninfo) as connection:
        connection.execute(
            "INSERT INTO outbox_events (event_type, payload, state, dispatches, occurred_at,"
            " available_at, dispatched_at, applied_at)"
            " SELECT 'FooCompleted', jsonb_build_object('foo_id', 1, 'delta', 1), 'processed',"
            " 1, t, t, t, t FROM generate_series(1, %s) g,"
            " LATERAL (SELECT now() - interval '1 day' + g * interval '1 ms') AS s(t)",
            (history,),
        )
    with contextlib.ExitStack() as stack:
        containers = [stack.enter_context(postsave(db.url)) for db in (empty, full)]
        for container in containers:
            _pending(container, 100)
        for database in (empty, full):
            vacuum_analyze(database.conninfo, "outbox_events")
        step(f"claim: claim_pending(100), {repetitions} times each, alternating")
        timings: list[list[float]] = [[], []]
        claimed = [0, 0]
        for repetition in range(repetitions + 3):
            for index, container in enumerate(containers):
                seconds, claimed[index] = _claim_once(container)
                if repetition >= 3:  # the first ones warm connections and plans
                    timings[index].append(seconds)
    empty_s, full_s = median(timings[0]), median(timings[1])
    return {
        "history": history,
        "repetitions": repetitions,
        "empty_ms": empty_s * 1000.0,
        "history_ms": full_s * 1000.0,
        "ratio": full_s / empty_s,
        "claimed": claimed,
    }


def figure6(database: Database, amqp_url: str, fsync_s: int, loop_s: float) -> dict[str, Any]:
    step(f"fig6: pg_test_fsync -s {fsync_s} (first section only)")
    fsync = pg_test_fsync(fsync_s)
    step("fig6: single-row insert-and-commit rate")
    inserts = insert_commit_rate(database.conninfo, loop_s)
    step("fig6: raw kombu publish rate")
    kombu = kombu_publish_rate(amqp_url, loop_s)
    step("fig6: postsave's write path (use_cases.complete_foo), one client")
    use_case = use_case_rate(database.url, amqp_url, loop_s)
    return {
        "pg_test_fsync": fsync,
        "insert_commit": inserts,
        "kombu_publish": kombu,
        "complete_foo": use_case,
    }
