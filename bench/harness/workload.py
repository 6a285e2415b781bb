"""Driving a contender's producer (a subprocess, bench/harness/producer.py) and waiting for its
events to reach the bars. A window is the events with ids above a watermark (EventLog)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import psycopg

from bench.harness import processes as procs
from bench.harness.contenders import Contender, Postsave
from bench.harness.data import COMPLETE_RANGE_SQL
from bench.harness.producer import Tally
from bench.harness.product import postsave
from infrastructure.broker.names import POLL_QUEUE, POLL_TASK

NOW_SQL = "SELECT extract(epoch FROM clock_timestamp())::float8"


def complete(contender: Contender, count: int, record_sql: str) -> list[Any]:
    """Complete `count` fresh foos and record their events, in one statement."""
    first = contender.take_foos(count)
    with psycopg.connect(contender.dsn) as connection:
        cursor = connection.execute(
            f"{COMPLETE_RANGE_SQL} {record_sql}", (first, first + count - 1)
        )
        return cursor.fetchall() if cursor.description else []


def complete_in_one_transaction(contender: Postsave, count: int) -> None:
    """The outbox rows exactly as the unit of work writes them (event_type, payload)."""
    complete(
        contender,
        count,
        "INSERT INTO outbox_events (event_type, payload)"
        " SELECT 'FooCompleted', jsonb_build_object('v', 2, 'foo_id', id, 'delta', amount,"
        " 'amount', amount, 'state', 'completed')"
        " FROM done ORDER BY id",
    )


def nudge(contender: Postsave) -> None:
    """Ask the relay to poll at once, as the unit of work does after a commit."""
    with postsave(contender.database_url, contender.broker_url) as container:
        container.celery_app.send_task(
            POLL_TASK, queue=POLL_QUEUE, routing_key=POLL_QUEUE, expires=10
        )


def start_producer(
    contender: Contender,
    count: int,
    rate: float | None,
    threads: int | None = None,
    deadline_s: float | None = None,
    producer: str | None = None,
) -> subprocess.Popen[str]:
    """`producer`: another kind than the contender's own (bench/harness/producer.py)."""
    spec = {
        "kind": producer or contender.kind,
        "first_foo": contender.take_foos(count),
        "count": count,
        "rate": rate,
        "threads": threads or contender.threads,
        "dsn": contender.dsn,
        "deadline_s": deadline_s,
    }
    log = (contender.workdir / f"{contender.name}-producer.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "bench.harness.producer", json.dumps(spec)],
        env=procs.env_for(contender.producer_env()),
        cwd=procs.REPO,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )


def finish_producer(process: subprocess.Popen[str], timeout_s: float) -> Tally:
    try:
        out, _ = process.communicate(timeout=timeout_s)
    except BaseException:  # late or interrupted: never leave a producer behind
        process.kill()
        process.communicate()
        raise
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"the producer failed (exit {process.returncode}); see its log")
    return Tally(**json.loads(lines[-1]))


def produce(
    contender: Contender,
    count: int,
    rate: float | None = None,
    deadline_s: float | None = None,
    producer: str | None = None,
    threads: int | None = None,
) -> Tally:
    budget = 60.0 + (count / rate if rate else count / 100.0)
    process = start_producer(contender, count, rate, threads, deadline_s, producer)
    return finish_producer(process, budget)


def drain_budget(count: int) -> float:
    return 60.0 + count / 50.0  # the embedded default drains ~100+/s; bounded all the same


def wait_processed(contender: Contender, after: int, timeout_s: float) -> None:
    assert contender.log is not None
    log = contender.log
    procs.wait_until(
        lambda: log.unfinished(after) == 0,
        f"{contender.name}: every event applied",
        timeout_s=timeout_s,
        alive=contender.started,
        interval_s=0.05,
    )


def settle(contender: Contender, after: int, quiet_s: float, limit_s: float = 40.0) -> float:
    """Wait until everything is applied, or nothing has changed for `quiet_s` (bounded)."""
    assert contender.log is not None
    started = changed = time.monotonic()
    last = contender.log.unfinished(after)
    while time.monotonic() - started < limit_s and last:
        time.sleep(0.2)
        now = contender.log.unfinished(after)
        if now != last:
            last, changed = now, time.monotonic()
        elif time.monotonic() - changed >= quiet_s:
            break
    return time.monotonic() - started
