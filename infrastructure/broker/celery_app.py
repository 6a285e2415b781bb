"""The Celery app, made from postsave's settings. `make_celery_app` is the only place that
builds one: the worker's, the relay's dispatcher and the application's nudge all use it."""

from __future__ import annotations

import ssl
from typing import Any

from celery import Celery
from kombu.transport import sqlalchemy as sqla_transport

from infrastructure.broker.names import (
    POLL_QUEUE,
    POLL_TASK,
    PRUNE_TASK,
    RECALC_QUEUE,
    RECALC_TASK,
)
from infrastructure.broker.queues import task_queues
from infrastructure.files import SQLITE_BUSY_TIMEOUT_S, ensure_sqlite_directory
from infrastructure.settings import Settings

EMBEDDED_BROKER_POLLING_INTERVAL_S = 0.05


def _transport_options(settings: Settings) -> dict[str, Any]:
    if settings.uses_amqp:
        # No reconnect loop inside a publish: the relay fails fast and backs off instead
        # (workers reconnect by broker_connection_retry, which does not read this option).
        # The relay's dispatches are confirmed by a channel transaction (dispatcher.py).
        return {"max_retries": 0}
    if settings.uses_embedded_broker:
        ensure_sqlite_directory(settings.broker_url)
        # Passed to create_engine by kombu's SQLAlchemy transport.
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    return {}


def _broker_ssl(settings: Settings) -> dict[str, Any] | None:
    """amqps://: the broker's certificate verified against the CA, and its host name against
    the URL's (kombu puts the host of the URL in place of None)."""
    tls = settings.broker_tls
    if tls is None:
        return None
    options: dict[str, Any] = {"cert_reqs": ssl.CERT_REQUIRED, "server_hostname": None}
    if tls.ca_file:
        options["ca_certs"] = tls.ca_file
    if tls.cert_file:
        options.update(certfile=tls.cert_file, keyfile=tls.key_file)
    return options


def celery_config(settings: Settings) -> dict[str, Any]:
    return {
        "broker_url": settings.broker_url,
        "broker_use_ssl": _broker_ssl(settings),
        "broker_transport_options": _transport_options(settings),
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": settings.broker_timeout_s,
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        # No results are kept, so nothing to clean: beat would otherwise send Celery's own
        # `celery.backend_cleanup` every night, which postsave's workers refuse (admission.py).
        "result_expires": None,
        "task_store_errors_even_if_ignored": False,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_queues": task_queues(settings.queue_type),
        "task_default_queue": RECALC_QUEUE,
        # Through each queue's own exchange, never RabbitMQ's default one (where Celery sends
        # a direct route without an exchange): a broker user that may write to `postsave.poll`
        # may then write nowhere else (docs/operations.md, broker users).
        "task_routes": {
            POLL_TASK: {"queue": POLL_QUEUE, "exchange": POLL_QUEUE, "routing_key": POLL_QUEUE},
            RECALC_TASK: {
                "queue": RECALC_QUEUE,
                "exchange": RECALC_QUEUE,
                "routing_key": RECALC_QUEUE,
            },
            PRUNE_TASK: {
                "queue": RECALC_QUEUE,
                "exchange": RECALC_QUEUE,
                "routing_key": RECALC_QUEUE,
            },
        },
        # One reserved message per pool process: a slow worker does not sit on events whose
        # leases run out, and the broker's bound is not hidden in workers' buffers.
        "worker_prefetch_multiplier": 1,
        # Task events from the start, so Flower and `celery events` see every task without
        # `celery control enable_events`; task-sent from beat and the relay (dispatcher.py).
        # Celery itself sends none on the embedded broker's SQL transport.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        # Without Celery's delayed-delivery exchanges and queues, which it would declare for
        # quorum queues: postsave sends no task with a countdown or an eta.
        "worker_consumer": "infrastructure.broker.consumer:Consumer",
        # Beat keeps its schedule in memory: a tick every few seconds has nothing worth
        # persisting, and beat then needs no writable file wherever it runs. Celery's
        # scheduler, less a connection that lost its ticks (beat.py).
        "beat_scheduler": "infrastructure.broker.beat:Scheduler",
    }


def poll_expiry_s(settings: Settings) -> float:
    """A tick or nudge nobody ran within this is stale: a newer one replaces it."""
    return max(settings.poll_interval_s * 2, 1.0)


def make_celery_app(settings: Settings, name: str = "postsave") -> Celery:
    if settings.uses_embedded_broker:
        # kombu hands this transport's options to create_engine, so the polling interval is
        # set on the transport class instead.
        sqla_transport.Transport.polling_interval = EMBEDDED_BROKER_POLLING_INTERVAL_S
    app = Celery(name)
    app.config_from_object(celery_config(settings))
    return app
