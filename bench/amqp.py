"""A queue's ready messages and purges over AMQP: cheap, unlike a rabbitmqctl reading."""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Connection


def ready_in(channel: Any, queue: str) -> int:
    """Messages ready in `queue` (a passive declare: unacknowledged ones are not counted)."""
    return int(channel.queue_declare(queue, passive=True)[1])


def ready(amqp_url: str, queue: str) -> int:
    with Connection(amqp_url) as connection:
        return ready_in(connection.default_channel, queue)


def purge(amqp_url: str, queue: str) -> None:
    with Connection(amqp_url) as connection:
        connection.default_channel.queue_purge(queue)


def purge_app_queues(app: Celery) -> None:
    """Declare and empty every queue the app routes to."""
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        for queue in app.conf.task_queues:
            queue(channel).declare()
            queue(channel).purge()


class ReadyWatch:
    """`ready()` on a connection kept open: cheap enough to poll every 10 ms."""

    def __init__(self, amqp_url: str, queue: str) -> None:
        self.amqp_url = amqp_url
        self.queue = queue
        self._connection: Connection | None = None

    def ready(self) -> int:
        if self._connection is None:
            self._connection = Connection(self.amqp_url)
        return ready_in(self._connection.default_channel, self.queue)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.release()
            self._connection = None
