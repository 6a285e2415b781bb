"""Figure 6, reference lines: what this machine allows, measured beside the results."""

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
from bench.services import Database
from domain import use_cases


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
    """postsave's write path as an application calls it (use_cases.complete_foo: a load,
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
