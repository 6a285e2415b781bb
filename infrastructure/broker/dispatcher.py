"""The Dispatcher port on Celery: one recalculate_bars message per event, confirmed per batch."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from typing import Any

from amqp.exceptions import MessageNacked
from celery import Celery
from celery.events import Event, EventDispatcher
from celery.utils.time import utcoffset
from kombu import Connection
from sqlalchemy.exc import SQLAlchemyError

from domain.errors import DispatchError
from domain.ports import Dispatcher
from infrastructure.broker.embedded import forget_messages, prune_stale_messages
from infrastructure.broker.names import RECALC_QUEUE, RECALC_TASK
from infrastructure.broker.publishing import (
    BROKER_ERRORS,
    TaskMessages,
    bounded_connection,
    connect,
    discard,
)
from infrastructure.broker.queues import ensure_queues, on_quorum_queues

PERSISTENT = 2  # survives a broker restart, like every Celery task message
# The embedded broker is a SQLite file: its failures are SQLAlchemy's.
DISPATCH_ERRORS: tuple[type[BaseException], ...] = (*BROKER_ERRORS, SQLAlchemyError)


class CeleryDispatcher(Dispatcher):
    """On RabbitMQ the batch is published inside an AMQP channel transaction: `tx_commit`
    returns once the broker has taken every message, one round trip per batch where publisher
    confirms as py-amqp does them wait once per message. On quorum queues, whose channel can
    lose messages after a leader change with tx_commit succeeding (queues.on_quorum_queues),
    the channel is in confirm mode instead and the batch waits once for all its confirms.
    Other transports (the embedded one) store each message before the publish returns.

    The dispatcher keeps a connection of its own, so that no other publisher ever shares its
    transactional channel. Any failure drops it whole: a channel the broker closed may come
    back reopened but no longer transactional, and publishing on it would put messages in
    the broker that the relay does not count.

    With `task_send_sent_event`, each message gets the `task-sent` event that `send_task`
    would have sent, published on the same channel: committed with the batch, so Flower and
    `celery events` see a task sent only once the broker has taken it."""

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
        self._confirms: BatchConfirms | None = None  # on quorum queues
        self._events: EventDispatcher | None = None  # None: no task-sent events
        self._templates: TaskMessages | None = None

    def dispatch(self, event_ids: Sequence[int], expires_in_s: float) -> None:
        published: list[str] = []
        with self._lock:
            try:
                if self.prune_embedded_broker:
                    prune_stale_messages(self.app.conf.broker_url, RECALC_TASK, event_ids)
                producer = self._open()
                events = self._events
                messages = self._messages(expires_in_s, events is not None)
                sent: list[dict[str, Any]] = []
                for event_id in event_ids:
                    # Celery's own message (protocol 2), published without send_task's
                    # routing and signals: the relay knows its queue.
                    headers, properties, body, fields = messages.message((event_id,))
                    producer.publish(
                        body,
                        exchange=RECALC_QUEUE,
                        routing_key=RECALC_QUEUE,
                        headers=headers,
                        serializer="json",
                        delivery_mode=PERSISTENT,
                        expiration=messages.expiry.get("expiration"),
                        retry=False,
                        **properties,
                    )
                    if events is not None and fields is not None:
                        sent.append(task_sent(events, fields))
                    published.append(headers["id"])
                if events is not None and sent:
                    publish_events(producer, events, sent)
                if self._transactional:
                    producer.channel.tx_commit()
                elif self._confirms is not None:
                    self._confirms.wait(len(published) + bool(sent), self.timeout_s)
            except DISPATCH_ERRORS as error:
                self._drop()
                if self.prune_embedded_broker:  # no transaction there to roll back
                    forget_messages(self.app.conf.broker_url, published)
                raise DispatchError(
                    f"broker did not take {len(event_ids)} messages "
                    f"({type(error).__name__}: {str(error) or 'no answer'})"
                ) from error

    def _messages(self, expires_in_s: float, sent_event: bool) -> TaskMessages:
        # One template per expiry: the relay's is fixed by its lease.
        found = self._templates
        if found is None or (found.expires_s, found.sent_event) != (expires_in_s, sent_event):
            found = self._templates = TaskMessages(self.app, RECALC_TASK, expires_in_s, sent_event)
        return found

    def _open(self) -> Any:
        if self._producer is None:
            connection = bounded_connection(self.app, self.timeout_s)
            try:
                connect(self.app, connection)  # each node once, no waiting: the poller backs off
                channel = ensure_queues(connection, self.app.conf.task_queues)
                amqp = connection.transport.driver_type == "amqp"
                confirms = BatchConfirms(channel) if amqp and on_quorum_queues(self.app) else None
                self._transactional = amqp and confirms is None
                if self._transactional:
                    channel.tx_select()
                events = self._event_dispatcher(connection)
                if events is not None:
                    events.exchange(channel).declare()
            except BaseException:
                discard(connection)
                raise
            self._connection = connection
            self._confirms = confirms
            self._events = events
            self._producer = self.app.amqp.Producer(channel, auto_declare=False)
        return self._producer

    def _event_dispatcher(self, connection: Connection) -> EventDispatcher | None:
        """Celery's event dispatcher for this connection, for its exchange, hostname and clock
        only (disabled: it opens no producer), or None when no task-sent events are wanted.
        Celery sends no events on SQL transports (the embedded broker): their exchange
        bindings live in each process's memory, so no other process could receive them."""
        if not self.app.conf.task_send_sent_event:
            return None
        if connection.transport.driver_type in EventDispatcher.DISABLED_TRANSPORTS:
            return None
        return self.app.events.Dispatcher(connection, enabled=False)

    def _drop(self) -> None:
        connection, self._connection, self._producer = self._connection, None, None
        self._events, self._confirms = None, None
        discard(connection)

    def close(self) -> None:
        connection, self._connection, self._producer = self._connection, None, None
        self._events, self._confirms = None, None
        if connection is not None:
            with contextlib.suppress(*BROKER_ERRORS):
                connection.release()


class BatchConfirms:
    """Publisher confirms on a channel, waited for once per batch: RabbitMQ numbers a confirm
    channel's publishes 1, 2, ... and acks or nacks each (or, `multiple`, all up to one).
    py-amqp's own confirm mode waits after each publish."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.published = 0  # the channel's publishes so far: the last one's delivery tag
        self.confirmed = 0  # every publish up to this one is acked
        self.acked: set[int] = set()  # acked one by one, beyond `confirmed`
        self.nacked = 0
        channel.confirm_select()
        channel.events["basic_ack"].add(self._ack)
        channel.events["basic_nack"].add(self._nack)

    def _ack(self, delivery_tag: int, multiple: bool) -> None:
        if multiple:
            self.confirmed = max(self.confirmed, delivery_tag)
        else:
            self.acked.add(delivery_tag)
        while self.confirmed + 1 in self.acked:
            self.confirmed += 1
            self.acked.discard(self.confirmed)

    def _nack(self, delivery_tag: int, multiple: bool) -> None:
        self.nacked += 1

    def wait(self, count: int, timeout_s: float) -> None:
        """Until the broker has acked the channel's last `count` publishes: MessageNacked when
        it refused one, a timeout (OSError) when it does not answer within `timeout_s`."""
        self.published += count
        deadline = time.monotonic() + timeout_s
        while self.confirmed < self.published and not self.nacked:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no confirm within {timeout_s:g} s")
            self.channel.connection.drain_events(timeout=remaining)
        if self.nacked:
            raise MessageNacked(f"the broker refused {self.nacked} of the batch's messages")


def task_sent(events: EventDispatcher, fields: dict[str, Any]) -> dict[str, Any]:
    """The `task-sent` event send_task would publish for a message (celery/app/amqp.py):
    create_task_message's fields, where the message went, and the sender's stamp."""
    fields.update(queue=RECALC_QUEUE, exchange=RECALC_QUEUE, routing_key=RECALC_QUEUE)
    return Event(
        "task-sent",
        hostname=events.hostname,
        utcoffset=utcoffset(),
        pid=events.pid,
        clock=events.clock.forward(),
        **fields,
    )


def publish_events(producer: Any, events: EventDispatcher, batch: list[dict[str, Any]]) -> None:
    """The batch's events in one message, as Celery's worker sends its own task events: a list
    under routing key `task.multi`, which every event receiver (Flower, `celery events`,
    exporters) takes apart. One publish more per batch; one per message would cost about a
    third of the relay's dispatch rate."""
    producer.publish(
        batch,
        exchange=events.exchange.name,
        routing_key="task.multi",
        serializer=events.serializer,
        headers=events.headers,
        delivery_mode=events.delivery_mode,
        retry=False,
    )
