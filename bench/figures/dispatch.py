"""Figure 3: the relay's confirmed dispatch rate (its own CeleryDispatcher, fed batches as the
relay claims them) against Celery's apply_async with confirm_publish, one message at a time."""

from __future__ import annotations

import time
from typing import Any

from celery import Celery

from bench.harness.apps import config
from bench.harness.processes import step
from bench.harness.product import postsave
from bench.harness.profile import Profile
from bench.harness.report import Results, table
from bench.harness.run import Figure, Run
from bench.harness.services import ready
from infrastructure.broker.names import RECALC_QUEUE

EXPIRES_S = 27.0  # what the relay sets with its default 30 s lease
BATCH = 100  # POSTSAVE_BATCH_SIZE's default: one claim's worth of ids


def purge_app_queues(app: Celery) -> None:
    """Declare and empty every queue the app routes to."""
    with app.connection_for_write() as connection:
        for queue in app.conf.task_queues:
            queue(connection.default_channel).declare()
            queue(connection.default_channel).purge()


def _rate(messages: int, seconds: float, in_queue: int) -> dict[str, Any]:
    return {"seconds": seconds, "per_s": messages / seconds, "in_queue_after": in_queue}


def relay_dispatch_rate(amqp_url: str, database_url: str, ids: int) -> dict[str, Any]:
    with postsave(database_url, amqp_url) as container:
        app = container.celery_app
        purge_app_queues(app)
        dispatcher = container.dispatcher  # the relay's own
        dispatcher.dispatch([1], expires_in_s=EXPIRES_S)  # opens its connection: not timed
        purge_app_queues(app)
        started = time.perf_counter()
        for first in range(1, ids + 1, BATCH):
            dispatcher.dispatch(list(range(first, min(first + BATCH, ids + 1))), EXPIRES_S)
        seconds = time.perf_counter() - started
        in_queue = ready(amqp_url, RECALC_QUEUE)
        purge_app_queues(app)  # nobody must ever run these made-up ids
    return {"messages": ids, "batch": BATCH, **_rate(ids, seconds, in_queue)}


def celery_publish_rate(amqp_url: str, messages: int, confirm: bool) -> dict[str, Any]:
    """A bare Celery app of the bench's, not postsave's: Celery's own publishing."""
    queue = "bench.confirm" if confirm else "bench.publish"
    app = Celery(f"bench-{queue}")
    settings = config(queue, acks_late=True, broker_url=amqp_url)
    settings["broker_transport_options"] = {"confirm_publish": confirm}
    app.config_from_object(settings)
    purge_app_queues(app)
    app.send_task("noop", queue=queue, expires=EXPIRES_S)  # connection and declare: not timed
    started = time.perf_counter()
    for _ in range(messages):
        app.send_task("noop", queue=queue, expires=EXPIRES_S)
    seconds = time.perf_counter() - started
    in_queue = ready(amqp_url, queue) - 1
    with app.connection_for_write() as connection:
        connection.default_channel.queue_delete(queue)
    return {"messages": messages, **_rate(messages, seconds, in_queue)}


def conditions(profile: Profile) -> dict[str, str]:
    return {
        "figure3": (
            f"in-process against the run's vhost: {profile.dispatch_ids} ids through "
            "infrastructure.broker.dispatcher.CeleryDispatcher in batches of 100, against "
            f"{profile.confirm_messages} Celery send_task calls; every message with a 27 s expiry"
        )
    }


def run(bench: Run) -> None:
    ids, messages = bench.profile.dispatch_ids, bench.profile.confirm_messages
    step(f"fig3: relay dispatcher, {ids} ids in batches of {BATCH}")
    relay = relay_dispatch_rate(bench.amqp_url, bench.roles["misc"].url, ids)
    step(f"fig3: Celery apply_async with confirm_publish, {messages} messages")
    confirmed = celery_publish_rate(bench.amqp_url, messages, confirm=True)
    step(f"fig3: Celery apply_async without confirms, {messages} messages")
    unconfirmed = celery_publish_rate(bench.amqp_url, messages, confirm=False)
    bench.results["figure3"] = {
        "relay_dispatch": relay,
        "celery_confirm_publish": confirmed,
        "celery_unconfirmed": unconfirmed,
        "relay_vs_confirm": relay["per_s"] / confirmed["per_s"],
    }


def tables(results: Results) -> str | None:
    fig3 = results.get("figure3")
    if not fig3:
        return None
    confirm = fig3["celery_confirm_publish"]["per_s"]
    methods = (
        ("relay: CeleryDispatcher.dispatch, batches of 100", "relay_dispatch"),
        ("Celery apply_async, confirm_publish=True", "celery_confirm_publish"),
        ("Celery apply_async, no confirms", "celery_unconfirmed"),
    )
    return table(
        "3. Confirmed dispatch rate",
        results["conditions"]["figure3"],
        "method | messages/s | x confirm_publish | in queue after",
        [
            [label, fig3[k]["per_s"], fig3[k]["per_s"] / confirm, fig3[k]["in_queue_after"]]
            for label, k in methods
        ],
    )


FIGURE = Figure("dispatch", conditions, tables, run=run)
