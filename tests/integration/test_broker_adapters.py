"""The dispatcher and the nudge on real RabbitMQ: messages expire by the broker's TTL, not by
the sender's clock, and a broker that refuses a nudge is one WARNING, never a traceback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from infrastructure.bootstrap import Container
from infrastructure.broker.celery_app import make_celery_app
from infrastructure.broker.names import POLL_QUEUE, RECALC_QUEUE
from infrastructure.broker.nudge import RelayNudge
from infrastructure.settings import Settings

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def container(amqp_url: str, tmp_path: Any) -> Iterator[Container]:
    built = Container(Settings(database_url=f"sqlite:///{tmp_path}/unused.db", broker_url=amqp_url))
    yield built
    with built.celery_app.connection_for_write() as connection:
        for queue in built.celery_app.conf.task_queues:
            queue(connection.default_channel).purge()
    built.close()


def take(container: Container, queue: str) -> Any:
    with container.celery_app.connection_for_write() as connection:
        message = connection.default_channel.basic_get(queue, no_ack=True)
        assert message is not None, f"nothing in {queue}"
        return message


def test_a_dispatched_message_expires_by_the_brokers_ttl_not_by_a_clock(
    container: Container,
) -> None:
    container.dispatcher.dispatch([7], expires_in_s=27.0)

    message = take(container, RECALC_QUEUE)
    assert message.properties["expiration"] == "27000"  # milliseconds after it arrived
    assert message.headers["expires"] is None  # no absolute time from the sender's clock
    assert (message.headers["task"], message.headers["argsrepr"]) == ("recalculate_bars", "(7,)")


def test_a_nudge_expires_by_the_brokers_ttl_too(container: Container) -> None:
    nudge = RelayNudge(container.celery_app, expires_s=2.0)
    nudge()
    assert nudge.flush()
    nudge.close()

    message = take(container, POLL_QUEUE)
    assert message.properties["expiration"] == "2000"
    assert (message.headers["task"], message.headers["expires"]) == ("poll_outbox", None)


def test_each_nudge_is_a_celery_message_of_its_own(container: Container) -> None:
    nudge = RelayNudge(container.celery_app, expires_s=2.0)
    messages = []
    for _ in range(2):  # the second from the template the first one built
        nudge()
        assert nudge.flush()
        messages.append(take(container, POLL_QUEUE))
    nudge.close()

    ids = [message.headers["id"] for message in messages]
    assert len(set(ids)) == 2
    for message, task_id in zip(messages, ids, strict=True):
        assert message.headers["root_id"] == message.properties["correlation_id"] == task_id
        assert message.properties["content_type"] == "application/json"
        args, kwargs, embed = json.loads(message.body)
        assert (args, kwargs, embed["chain"]) == ([], {}, None)  # Celery's protocol 2 body


def test_a_broker_that_refuses_the_nudge_is_one_warning_and_the_commit_goes_on(
    amqp_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = amqp_url.replace("guest:guest@", "guest:wrong@")
    app = make_celery_app(Settings(broker_url=wrong))
    nudge = RelayNudge(app, expires_s=2.0, timeout_s=3.0)
    try:
        with caplog.at_level("INFO", logger="infrastructure.broker.nudge"):
            for _ in range(3):
                nudge()
                assert nudge.flush(10.0)
    finally:
        nudge.close()
        app.close()

    [warning] = caplog.records
    assert warning.levelname == "WARNING"
    assert warning.getMessage().startswith("relay nudges are not getting through (AccessRefused")
    assert "wrong" not in warning.getMessage()  # never a password
