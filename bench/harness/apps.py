"""The bench's own Celery apps, with postsave's worker settings, on BENCH_BROKER_URL.

- `ceiling`: bare no-op tasks, acknowledged late: Celery's and RabbitMQ's own cost per message.
- `direct`: `apply_async` right after commit, no outbox, no idempotency guard. Its task applies
  the delta set-based, exactly like postsave's heavy step, and stamps the event's apply time from
  the database clock. It is acknowledged early (Celery's default), as most apply_async-after-save
  code is: a worker killed mid-task loses the message.

`celery -A bench.harness.apps:ceiling worker -Q bench.ceiling` (or `:direct`, `-Q bench.direct`)."""

from __future__ import annotations

import os
from typing import Any

import psycopg
from celery import Celery
from celery.signals import worker_process_init
from kombu import Exchange, Queue

CEILING_QUEUE = "bench.ceiling"
DIRECT_QUEUE = "bench.direct"
DIRECT_DSN_ENV = "BENCH_DIRECT_DSN"


def config(queue: str, acks_late: bool, broker_url: str | None = None) -> dict[str, Any]:
    """JSON only, results ignored, one reserved message per pool process, as
    infrastructure/broker/celery_app.py configures postsave's app."""
    return {
        "broker_url": broker_url
        or os.environ.get("BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "task_acks_late": acks_late,
        "task_reject_on_worker_lost": acks_late,
        "task_queues": (Queue(queue, Exchange(queue, type="direct"), routing_key=queue),),
        "task_default_queue": queue,
        "task_default_exchange": queue,
        "task_default_routing_key": queue,
        "worker_prefetch_multiplier": 1,
        "worker_send_task_events": False,
        "worker_hijack_root_logger": True,
    }


ceiling = Celery("bench-ceiling")
ceiling.config_from_object(config(CEILING_QUEUE, acks_late=True))
direct = Celery("bench-direct")
direct.config_from_object(config(DIRECT_QUEUE, acks_late=False))


@ceiling.task(name="noop")
def noop() -> None:
    """Nothing: what is left is Celery's and RabbitMQ's own cost per message."""


_connection: psycopg.Connection | None = None


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    global _connection  # connections never cross a fork
    _connection = None


@direct.task(name="direct_apply")
def direct_apply(event_id: int, delta: int) -> None:
    global _connection
    if _connection is None or _connection.closed:
        _connection = psycopg.connect(os.environ[DIRECT_DSN_ENV])
    with _connection.transaction():
        # Every task updates every bar: taken in one order, or two tasks deadlock now and then.
        _connection.execute("SELECT 1 FROM bars ORDER BY id FOR UPDATE")
        _connection.execute("UPDATE bars SET value = value + %s * weight", (delta,))
        _connection.execute(
            "UPDATE bench_events SET applied_at = clock_timestamp() WHERE id = %s", (event_id,)
        )
