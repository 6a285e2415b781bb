"""The relay's messages are seen by Celery's tools: a `task-sent` event for each, published on
the dispatcher's transactional channel, so it exists only once the broker took the batch."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from amqp.exceptions import ConnectionForced
from celery import Celery
from kombu import Exchange, Queue
from sqlalchemy import create_engine, text

from domain.errors import DispatchError
from infrastructure.broker.celery_app import celery_config, make_celery_app
from infrastructure.broker.dispatcher import CeleryDispatcher
from infrastructure.broker.names import RECALC_QUEUE, RECALC_TASK
from infrastructure.settings import Settings

EXPIRES_S = 27.0


@pytest.fixture
def app(amqp_url: str) -> Iterator[Celery]:
    built = make_celery_app(Settings(broker_url=amqp_url))
    with built.connection_for_write() as connection:
        for queue in built.conf.task_queues:
            queue(connection.default_channel).declare()
            queue(connection.default_channel).purge()
    yield built
    with built.connection_for_write() as connection:
        Queue(RECALC_QUEUE)(connection.default_channel).purge()  # nobody runs made-up ids
    built.close()


@pytest.fixture
def events(app: Celery) -> Iterator[Queue]:
    """A queue of the test's own on Celery's event exchange, as `celery events` binds one."""
    with app.connection_for_write() as connection:
        exchange = Exchange(app.conf.event_exchange, type="topic")
        queue = Queue("postsave-test-events", exchange, routing_key="task.#", exclusive=True)
        bound = queue(connection.default_channel)
        bound.declare()
        yield bound


def drain(queue: Queue, count: int, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """`count` events, waiting for them up to `timeout_s`; then whatever else is there. A
    message holds one event, or a list of them (routing key `task.multi`)."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while True:
        message = queue.get(no_ack=True)
        if message is not None:
            payload = message.payload
            got.extend(payload if isinstance(payload, list) else [payload])
        elif len(got) >= count or time.monotonic() > deadline:
            return got
        else:
            time.sleep(0.05)


def published_task_ids(app: Celery) -> list[str]:
    with app.connection_for_write() as connection:
        queue = Queue(RECALC_QUEUE)(connection.default_channel)
        ids = []
        while (message := queue.get(no_ack=True)) is not None:
            ids.append(message.headers["id"])
        return ids


def dispatch(app: Celery, event_ids: list[int]) -> None:
    dispatcher = CeleryDispatcher(app)
    try:
        dispatcher.dispatch(event_ids, EXPIRES_S)
    finally:
        dispatcher.close()


@pytest.mark.rabbitmq
def test_each_dispatched_message_has_its_task_sent_event(app: Celery, events: Queue) -> None:
    event_ids = list(range(1, 26))
    dispatch(app, event_ids)

    sent = drain(events, len(event_ids))
    task_ids = published_task_ids(app)

    assert len(task_ids) == len(event_ids)
    assert [event["type"] for event in sent] == ["task-sent"] * len(event_ids)
    assert [event["uuid"] for event in sent] == task_ids
    assert {event["name"] for event in sent} == {RECALC_TASK}
    assert [event["args"] for event in sent] == [repr((event_id,)) for event_id in event_ids]
    assert {(e["queue"], e["exchange"], e["routing_key"]) for e in sent} == {(RECALC_QUEUE,) * 3}


@pytest.mark.rabbitmq
def test_no_task_sent_events_when_they_are_turned_off(app: Celery, events: Queue) -> None:
    app.conf.task_send_sent_event = False
    dispatch(app, [1, 2, 3])
    app.conf.task_send_sent_event = True
    dispatch(app, [4])  # a marker: its event comes after any event of the batch before

    sent = drain(events, 1)

    assert len(published_task_ids(app)) == 4
    assert [event["args"] for event in sent] == ["(4,)"]


@pytest.mark.rabbitmq
def test_a_batch_the_broker_did_not_take_has_no_task_sent_events(
    app: Celery, events: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    dispatcher = CeleryDispatcher(app)
    dispatcher.dispatch([1], EXPIRES_S)  # opens the transactional channel
    channel = dispatcher._producer.channel

    def refused() -> None:
        raise ConnectionForced("refused by the test")

    monkeypatch.setattr(channel, "tx_commit", refused)
    with pytest.raises(DispatchError):
        dispatcher.dispatch([2, 3], EXPIRES_S)  # published, never committed
    dispatcher.dispatch([4], EXPIRES_S)  # a new connection: the marker
    dispatcher.close()

    sent = drain(events, 2)

    assert [event["args"] for event in sent] == ["(1,)", "(4,)"]
    assert len(published_task_ids(app)) == 2


def test_the_embedded_broker_gets_only_the_messages(tmp_path: Path) -> None:
    """Celery sends no events on a SQL transport: an event there would only add rows."""
    broker_url = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    app = make_celery_app(Settings(broker_url=broker_url))
    assert app.conf.task_send_sent_event
    dispatcher = CeleryDispatcher(app)
    dispatcher.dispatch([1, 2, 3], EXPIRES_S)
    dispatcher.close()

    engine = create_engine(broker_url.removeprefix("sqla+"))
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT payload FROM kombu_message")).scalars().all()
    engine.dispose()
    app.close()
    assert len(rows) == 3
    assert all(RECALC_TASK in row for row in rows)


def test_events_are_on_from_the_start() -> None:
    config = celery_config(Settings(broker_url="amqp://mq.invalid//"))
    assert config["worker_send_task_events"]
    assert config["task_send_sent_event"]
