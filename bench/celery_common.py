"""Celery settings shared by the bench's own tiny apps: the worker settings postsave uses."""

from __future__ import annotations

import os
from typing import Any

from kombu import Exchange, Queue

BROKER_ENV = "BENCH_BROKER_URL"


def broker_url() -> str:
    return os.environ.get(BROKER_ENV, "amqp://guest:guest@127.0.0.1:5672//")


def config(queue: str, acks_late: bool) -> dict[str, Any]:
    """JSON only, results ignored, one reserved message per pool process, as
    infrastructure/broker/celery_app.py configures postsave's app."""
    return {
        "broker_url": broker_url(),
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
