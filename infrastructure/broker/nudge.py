"""The post-commit nudge: a commit that wrote events asks for a poll now, not at the next tick.

Nudges are deduplicated twice: here, a background thread publishes at most one every
MIN_INTERVAL_S and always one after the latest commit (a trailing edge), so a burst of commits
costs a few publishes and the committing thread never waits for the broker; and in RabbitMQ,
postsave.poll keeps only its newest message. A nudge is best effort: if it is lost, beat's
periodic tick is the safety net."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

from celery import Celery
from kombu import Connection

from infrastructure.broker.names import POLL_QUEUE, POLL_TASK
from infrastructure.broker.publishing import (
    BROKER_ERRORS,
    TaskMessages,
    bounded_connection,
    connect,
    discard,
)
from infrastructure.broker.queues import ensure_queues, on_quorum_queues

logger = logging.getLogger(__name__)
# Commits closer together than this share a nudge: the relay claims whole batches anyway, and
# each poll costs the relay a transaction. It bounds what a nudge adds to latency, too.
MIN_INTERVAL_S = 0.01


class RelayNudge:
    """Publishes on a connection of its own, with every wait bounded by `timeout_s`. A failure
    drops the connection (the next nudge opens a new one) and is logged once, as a WARNING,
    until a nudge gets through again."""

    def __init__(self, app: Celery, expires_s: float, timeout_s: float = 10.0) -> None:
        self.app = app
        self.expires_s = expires_s
        self.timeout_s = timeout_s
        self._connection: Connection | None = None
        self._producer: Any = None
        self._failing = False
        self.last_error: str | None = None  # why the latest nudge did not get through
        self._wanted = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._messages = TaskMessages(app, POLL_TASK, expires_s)

    def __call__(self) -> None:
        """Ask for a nudge; returns at once."""
        thread = self._thread
        if self._wanted.is_set() and thread is not None and thread.is_alive():
            return  # one is asked for and not yet taken: its publish comes after this commit
        self._idle.clear()
        self._wanted.set()
        self._ensure_thread()

    def flush(self, timeout_s: float = 2.0) -> bool:
        """Wait until every nudge asked for has been published (or given up on)."""
        return self._idle.wait(timeout_s)

    def close(self) -> None:
        self.flush()
        self._closed = True
        self._wanted.set()
        if self._thread is not None:
            self._thread.join(2.0)
        connection, self._connection, self._producer = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(*BROKER_ERRORS):
                connection.release()

    def _ensure_thread(self) -> None:
        # Started on first use, in the process that uses it (never inherited across a fork).
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="postsave-relay-nudge", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            if self._closed:
                self._idle.set()
                return
            self._wanted.clear()
            self._publish()
            time.sleep(MIN_INTERVAL_S)
            if not self._wanted.is_set():
                self._idle.set()

    def _publish(self) -> None:
        try:
            self._send()
        except BROKER_ERRORS as error:
            connection, self._connection, self._producer = self._connection, None, None
            discard(connection)
            self.last_error = f"{type(error).__name__}: {str(error) or 'no answer'}"
            if not self._failing:
                logger.warning(
                    "relay nudges are not getting through (%s); beat's next tick relays the events",
                    self.last_error,
                )
            self._failing = True
            return
        if self._failing:
            logger.info("relay nudges get through again")
        self._failing, self.last_error = False, None

    def _send(self) -> None:
        if self._producer is None:
            # On quorum queues a nudge waits for the broker's confirm: the one thing that tells
            # a channel that lost its messages to a leader change (queues.on_quorum_queues).
            confirmed = on_quorum_queues(self.app)
            connection = bounded_connection(self.app, self.timeout_s, confirmed=confirmed)
            try:
                connect(self.app, connection)
                # The application's broker user may only publish: the workers declare.
                channel = ensure_queues(connection, self.app.conf.task_queues)
                self._producer = self.app.amqp.Producer(channel, auto_declare=False)
            except BaseException:
                discard(connection)
                raise
            self._connection = connection
        # Celery's own message, published straight to the poll queue: no routing, no signals.
        headers, properties, body, _ = self._messages.message(())
        self._producer.publish(
            body,
            exchange=POLL_QUEUE,
            routing_key=POLL_QUEUE,
            headers=headers,
            serializer="json",
            expiration=self._messages.expiry.get("expiration"),
            retry=False,
            confirm_timeout=self.timeout_s,
            **properties,
        )
