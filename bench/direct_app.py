"""The direct contender: `apply_async` right after commit, no outbox, no idempotency guard.

The task applies the delta set-based, exactly like postsave's heavy step, and stamps the event's
apply time from the database clock. It is acknowledged early (Celery's default), as most
`apply_async`-after-save code is: a worker killed mid-task loses the message."""

from __future__ import annotations

import os
from typing import Any

import psycopg
from celery import Celery
from celery.signals import worker_process_init

from bench.celery_common import config

QUEUE = "bench.direct"
DSN_ENV = "BENCH_DIRECT_DSN"

app = Celery("bench-direct")
app.config_from_object(config(QUEUE, acks_late=False))

_connection: psycopg.Connection | None = None


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    global _connection  # connections never cross a fork
    _connection = None


def _db() -> psycopg.Connection:
    global _connection
    if _connection is None or _connection.closed:
        _connection = psycopg.connect(os.environ[DSN_ENV])
    return _connection


@app.task(name="direct_apply")
def direct_apply(event_id: int, delta: int) -> None:
    connection = _db()
    with connection.transaction():
        connection.execute("UPDATE bars SET value = value + %s * weight", (delta,))
        connection.execute(
            "UPDATE bench_events SET applied_at = clock_timestamp() WHERE id = %s", (event_id,)
        )
