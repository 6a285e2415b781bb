"""The Dispatcher port on Celery: one recalculate_bars message per event, confirmed per batch."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from typing import Any

from celery import Celery, uuid
from kombu import Connection
from sqlalchemy.exc import SQLAlchemyError

from domain.errors import DispatchError
from domain.ports import Dispatcher
from infrastructure.broker.embedded import forget_messages, prune_stale_messages
from infrastructure.broker.names import RECALC_QUEUE, RECALC_TASK
from infrastructure.broker.publishing import BROKER_ERRORS, bounded_connection, discard, expiry

PERSISTENT = 2  # survives a broker restart, like every Celery task message
# The embedded broker is a SQLite file: its failures are SQLAlchemy's.
DISPATCH_ERRORS: tuple[type[BaseException], ...] = (*BROKER_ERRORS, SQLAlchemyError)


class CeleryDispatcher(Dispatcher):
    """On RabbitMQ the batch is published inside an AMQP channel transaction: `tx_commit`
    returns once the broker has taken every message, one round trip per batch where publisher
    confirms as py-amqp does them wait once per message. Other transports (the embedded one)
    store each message before the publish returns.

    The dispatcher keeps a connection of its own, so that no other publisher ever shares its
    transactional channel. Any failure drops it whole: a channel the broker closed may come
    back reopened but no longer transactional, and publishing on it would put messages in
    the broker that the relay does not count."""

    def __init__(
        self, app: Celery, timeout_s: float = 10.0, prune_embedded_broker: bool = False
    ) -> None:
        self.app = app
        self.timeout_s = timeout_s
        # The embedded broker has no TTL and only flags consumed messages: each dispatch
        # deletes those and the stale messages of its events first (embedded.py).
        self.prune_embedded_broker = prune_embedded_broker
        self._lock = threading.Lock()
        self._connection: Connection | None = None
        self._producer: Any = None
        self._transactional = False

    def dispatch(self, event_ids: Sequence[int], expires_in_s: float) -> None:
        stale_after = expiry(self.app, expires_in_s)
        published: list[str] = []
        with self._lock:
            try:
                if self.prune_embedded_broker:
                    prune_stale_messages(self.app.conf.broker_url, RECALC_TASK, event_ids)
                producer = self._open()
                for event_id in event_ids:
                    # Celery's own message (protocol 2), published without send_task's
                    # routing and signals: the relay knows its queue.
                    task_id = uuid()
                    headers, properties, body, _ = self.app.amqp.create_task_message(
                        task_id, RECALC_TASK, (event_id,), {}, expires=stale_after.get("expires")
                    )
                    producer.publish(
                        body,
                        exchange=RECALC_QUEUE,
                        routing_key=RECALC_QUEUE,
                        headers=headers,
                        serializer="json",
                        delivery_mode=PERSISTENT,
                        expiration=stale_after.get("expiration"),
                        retry=False,
                        **properties,
                    )
                    published.append(task_id)
                if self._transactional:
                    producer.channel.tx_commit()
            except DISPATCH_ERRORS as error:
                self._drop()
                if self.prune_embedded_broker:  # no transaction there to roll back
                    forget_messages(self.app.conf.broker_url, published)
                raise DispatchError(
                    f"broker did not take {len(event_ids)} messages "
                    f"({type(error).__name__}: {str(error) or 'no answer'})"
                ) from error

    def _open(self) -> Any:
        if self._producer is None:
            connection = bounded_connection(self.app, self.timeout_s)
            try:
                connection.ensure_connection(max_retries=0)  # fail fast; the poller backs off
                channel = connection.channel()
                self._transactional = connection.transport.driver_type == "amqp"
                if self._transactional:
                    channel.tx_select()
                for queue in self.app.conf.task_queues:
                    queue(channel).declare()
            except BaseException:
                discard(connection)
                raise
            self._connection = connection
            self._producer = self.app.amqp.Producer(channel, auto_declare=False)
        return self._producer

    def _drop(self) -> None:
        connection, self._connection, self._producer = self._connection, None, None
        discard(connection)

    def close(self) -> None:
        connection, self._connection, self._producer = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(*BROKER_ERRORS):
                connection.release()
