"""Figure 3: the relay's confirmed dispatch rate against Celery's own confirm_publish.

Both run in this process against the run's vhost. The relay's dispatcher is postsave's own
(the composition root's CeleryDispatcher on postsave's Celery app), fed batches as the relay
claims them; Celery's rate is apply_async (send_task) with confirm_publish=True, one message
at a time, which is what the relay did before batching. Both messages carry the same expiry."""

from __future__ import annotations

import time
from typing import Any

from celery import Celery

from bench.celery_common import config
from bench.product import postsave
from bench.progress import step
from infrastructure.broker.names import RECALC_QUEUE
from tests import rabbitmq as amqp

EXPIRES_S = 27.0  # what the relay sets with its default 30 s lease
BATCH = 100  # POSTSAVE_BATCH_SIZE's default: one claim's worth of ids


def relay_dispatch_rate(amqp_url: str, database_url: str, ids: int) -> dict[str, Any]:
    with postsave(database_url, amqp_url) as container:
        app = container.celery_app
        amqp.purge_app_queues(app)
        dispatcher = container.dispatcher  # the relay's own
        dispatcher.dispatch([1], expires_in_s=EXPIRES_S)  # opens its connection: not timed
        amqp.purge_app_queues(app)
        started = time.perf_counter()
        for first in range(1, ids + 1, BATCH):
            dispatcher.dispatch(list(range(first, min(first + BATCH, ids + 1))), EXPIRES_S)
        seconds = time.perf_counter() - started
        in_queue = amqp.ready(amqp_url, RECALC_QUEUE)
        amqp.purge_app_queues(app)  # nobody must ever run these made-up ids
    return {
        "messages": ids,
        "batch": BATCH,
        "seconds": seconds,
        "per_s": ids / seconds,
        "in_queue_after": in_queue,
    }


def celery_publish_rate(amqp_url: str, messages: int, confirm: bool) -> dict[str, Any]:
    """A bare Celery app of the bench's, not postsave's: Celery's own publishing."""
    queue = "bench.confirm" if confirm else "bench.publish"
    app = Celery(f"bench-{queue}")
    settings = config(queue, acks_late=True)
    settings["broker_url"] = amqp_url
    settings["broker_transport_options"] = {"confirm_publish": confirm}
    app.config_from_object(settings)
    amqp.purge_app_queues(app)
    app.send_task("noop", queue=queue, expires=EXPIRES_S)  # connection and declare: not timed
    started = time.perf_counter()
    for _ in range(messages):
        app.send_task("noop", queue=queue, expires=EXPIRES_S)
    seconds = time.perf_counter() - started
    in_queue = amqp.ready(amqp_url, queue) - 1
    with app.connection_for_write() as connection:
        connection.default_channel.queue_delete(queue)
    return {
        "messages": messages,
        "seconds": seconds,
        "per_s": messages / seconds,
        "in_queue_after": in_queue,
    }


def figure3(amqp_url: str, database_url: str, ids: int, confirm_messages: int) -> dict[str, Any]:
    step(f"fig3: relay dispatcher, {ids} ids in batches of {BATCH}")
    relay = relay_dispatch_rate(amqp_url, database_url, ids)
    step(f"fig3: Celery apply_async with confirm_publish, {confirm_messages} messages")
    confirmed = celery_publish_rate(amqp_url, confirm_messages, confirm=True)
    step(f"fig3: Celery apply_async without confirms, {confirm_messages} messages")
    unconfirmed = celery_publish_rate(amqp_url, confirm_messages, confirm=False)
    return {
        "relay_dispatch": relay,
        "celery_confirm_publish": confirmed,
        "celery_unconfirmed": unconfirmed,
        "relay_vs_confirm": relay["per_s"] / confirmed["per_s"],
    }
