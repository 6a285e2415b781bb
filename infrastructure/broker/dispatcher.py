"""The Dispatcher port on Celery: one recalculate_bars message per event, confirmed per batch."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from typing import Any

from celery import Celery, uuid
from kombu.exceptions import KombuError, OperationalError

from domain.errors import DispatchError
from domain.ports import Dispatcher
from infrastructure.broker.embedded import prune_consumed_messages
from infrastructure.broker.names import RECALC_QUEUE, RECALC_TASK

PERSISTENT = 2  # survives a broker restart, like every Celery task message
_BROKER_ERRORS = (OperationalError, KombuError, ConnectionError, OSError)


class CeleryDispatcher(Dispatcher):
    """On RabbitMQ the batch is published inside an AMQP channel transaction: `tx_commit`
    returns once the broker has taken every message, one round trip per batch where publisher
    confirms as py-amqp does them wait once per message. Other transports (the embedded one)
    store each message before the publish returns.

    The dispatcher keeps a connection of its own, so that no other publisher ever shares its
    transactional channel."""

    def __init__(self, app: Celery, prune_embedded_broker: bool = False) -> None:
        self.app = app
        # The embedded broker only flags consumed messages: each dispatch deletes them first.
        self.prune_embedded_broker = prune_embedded_broker
        self._lock = threading.Lock()
        self._connection: Any = None
        self._producer: Any = None
        self._transactional = False

    def dispatch(self, event_ids: Sequence[int], expires_in_s: float) -> None:
        if self.prune_embedded_broker:
            prune_consumed_messages(self.app.conf.broker_url)
        with self._lock:
            try:
                producer = self._open()
                for event_id in event_ids:
                    # Celery's own message (protocol 2), published without send_task's
                    # routing and signals: the relay knows its queue.
                    headers, properties, body, _ = self.app.amqp.create_task_message(
                        uuid(), RECALC_TASK, (event_id,), {}, expires=expires_in_s
                    )
                    producer.publish(
                        body,
                        exchange=RECALC_QUEUE,
                        routing_key=RECALC_QUEUE,
                        headers=headers,
                        serializer="json",
                        delivery_mode=PERSISTENT,
                        # The AMQP per-message TTL; the `expires` header makes a worker drop
                        # the message if it reaches it late.
                        expiration=expires_in_s,
                        retry=False,
                        **properties,
                    )
                if self._transactional:
                    producer.channel.tx_commit()
            except _BROKER_ERRORS as error:
                self.close()
                raise DispatchError(f"broker refused the dispatch: {error}") from error

    def _open(self) -> Any:
        if self._producer is None:
            connection = self.app.connection_for_write()
            try:
                connection.ensure_connection(max_retries=0)  # fail fast; the poller backs off
                channel = connection.channel()
                self._transactional = connection.transport.driver_type == "amqp"
                if self._transactional:
                    channel.tx_select()
                for queue in self.app.conf.task_queues:
                    queue(channel).declare()
            except BaseException:
                connection.release()
                raise
            self._connection = connection
            self._producer = self.app.amqp.Producer(channel, auto_declare=False)
        return self._producer

    def close(self) -> None:
        connection, self._connection, self._producer = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(*_BROKER_ERRORS):  # already broken: why we close it
                connection.release()
