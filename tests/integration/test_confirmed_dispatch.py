"""The relay against real RabbitMQ and PostgreSQL: events are leased only once the broker has
confirmed their messages (tx_commit of the batch); a broker that is down leaves them due and
backs the poller off."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import pytest
from celery import Celery
from sqlalchemy import text

from domain import use_cases
from domain.backoff import DispatchBackoff
from domain.errors import DispatchError
from domain.relay import relay_once, relay_until_idle
from infrastructure.bootstrap import Container
from infrastructure.broker.celery_app import make_celery_app
from infrastructure.broker.dispatcher import CeleryDispatcher
from infrastructure.broker.names import POLL_QUEUE, RECALC_QUEUE
from infrastructure.settings import Settings

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]
DOWN_BROKER = "amqp://guest:guest@127.0.0.1:1//"


@pytest.fixture
def container(pg_url: str, amqp_url: str) -> Iterator[Container]:
    built = Container(Settings(database_url=pg_url, broker_url=amqp_url, batch_size=10))
    use_cases.create_bars(built.uow(), 1)  # a part waits for the events: they need messages
    use_cases.complete_foos(built.uow(), use_cases.create_foos(built.uow(), 5, count=25))
    yield built
    built.close()


def rows(container: Container) -> list[tuple[str, int]]:
    with container.engine.connect() as connection:
        query = text("SELECT state, dispatches FROM outbox_events ORDER BY id")
        return [tuple(row) for row in connection.execute(query)]  # type: ignore[misc]


def queue_depth(app: Celery) -> int:
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        for queue in app.conf.task_queues:
            queue(channel).declare()
        return int(channel.queue_declare(RECALC_QUEUE, passive=True).message_count)


def test_dispatched_events_are_leased_once_rabbitmq_confirmed_them(container: Container) -> None:
    app = make_celery_app(container.settings)
    with app.connection_for_write() as connection:
        for queue in app.conf.task_queues:
            queue(connection.default_channel).declare()
            queue(connection.default_channel).purge()

    dispatcher = CeleryDispatcher(app)
    report = relay_once(container.uow(), dispatcher, container.settings.relay_limits)
    dispatcher.close()

    assert dispatcher._transactional  # the batch went out in one AMQP transaction
    assert report.dispatched == 10
    assert queue_depth(app) == 10
    assert rows(container) == [("dispatched", 1)] * 10 + [("pending", 0)] * 15


def test_a_broker_that_is_down_leaves_the_events_due_without_spending_an_attempt(
    container: Container,
) -> None:
    down = Settings(database_url=container.settings.database_url, broker_url=DOWN_BROKER)
    dispatcher = CeleryDispatcher(make_celery_app(down))

    with pytest.raises(DispatchError, match="broker did not take 10 messages"):
        relay_once(container.uow(), dispatcher, container.settings.relay_limits)

    assert rows(container) == [("pending", 0)] * 25


class CountingDispatcher(CeleryDispatcher):
    calls = 0

    def dispatch(self, event_ids: Sequence[int], expires_in_s: float) -> None:
        self.calls += 1
        super().dispatch(event_ids, expires_in_s)


def test_the_poller_backs_off_while_the_broker_is_down(container: Container) -> None:
    down = Settings(database_url=container.settings.database_url, broker_url=DOWN_BROKER)
    dispatcher = CountingDispatcher(make_celery_app(down))
    now = [0.0]
    backoff = DispatchBackoff(base_s=1.0, max_s=8.0, clock=lambda: now[0])
    limits = container.settings.relay_limits

    def tick() -> None:
        with contextlib.suppress(DispatchError):
            relay_until_idle(container.uow, dispatcher, limits, 1.0, backoff, lambda: now[0])

    for _ in range(10):  # ten ticks within the first second: one try
        tick()
    assert dispatcher.calls == 1
    now[0] = 1.0
    tick()
    tick()
    assert dispatcher.calls == 2  # the second failure doubles the pause to 2 s
    now[0] = 2.5
    tick()
    assert dispatcher.calls == 2
    assert rows(container) == [("pending", 0)] * 25


def test_a_transaction_never_committed_leaves_no_message_in_the_broker(
    container: Container,
) -> None:
    app = make_celery_app(container.settings)
    dispatcher = CeleryDispatcher(app)
    dispatcher.dispatch([1], expires_in_s=30)  # opens the transactional channel
    depth = queue_depth(app)
    producer = dispatcher._producer
    for event_id in (2, 3, 4):
        app.send_task("recalculate_bars", args=(event_id,), queue=RECALC_QUEUE, producer=producer)
    assert queue_depth(app) == depth  # published, not committed: RabbitMQ holds nothing yet
    producer.channel.tx_rollback()
    dispatcher.close()
    assert queue_depth(app) == depth


def test_a_commit_that_writes_events_nudges_the_relay_once_however_many_commits(
    pg_url: str, amqp_url: str
) -> None:
    settings = Settings(database_url=pg_url, broker_url=amqp_url)
    app = make_celery_app(settings)
    with app.connection_for_write() as connection:
        for queue in app.conf.task_queues:
            queue(connection.default_channel).declare()
            queue(connection.default_channel).purge()
    application = Container(settings, nudge=True)
    try:
        foo_ids = use_cases.create_foos(application.uow(), 5, count=20)  # no events: no nudge
        assert poll_depth(app) == 0
        for foo_id in foo_ids:
            use_cases.complete_foo(application.uow(), foo_id)
        nudge = application.relay_nudge
        assert nudge is not None and nudge.flush()  # published off the committing thread
        assert poll_depth(app) == 1  # postsave.poll keeps only the newest tick
    finally:
        application.close()


def poll_depth(app: Celery) -> int:
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        return int(channel.queue_declare(POLL_QUEUE, passive=True).message_count)
