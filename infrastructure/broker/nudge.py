"""The post-commit nudge: a commit that wrote events asks for a poll now, not at the next tick.

Nudges are deduplicated twice: here, a background thread publishes at most one every
MIN_INTERVAL_S and always one after the latest commit (a trailing edge), so a burst of commits
costs a few publishes and the committing thread never waits for the broker; and in RabbitMQ,
postsave.poll keeps only its newest message. A nudge is best effort: if it is lost, beat's
periodic tick is the safety net."""

from __future__ import annotations

import logging
import threading
import time

from celery import Celery
from kombu.exceptions import KombuError, OperationalError

from infrastructure.broker.names import POLL_QUEUE, POLL_TASK

logger = logging.getLogger(__name__)
# Commits closer together than this share a nudge: the relay claims whole batches anyway, and
# each poll costs the relay a transaction. It bounds what a nudge adds to latency, too.
MIN_INTERVAL_S = 0.01


class RelayNudge:
    def __init__(self, app: Celery, expires_s: float) -> None:
        self.app = app
        self.expires_s = expires_s
        self._wanted = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def __call__(self) -> None:
        """Ask for a nudge; returns at once."""
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
            with self.app.producer_or_acquire() as producer:
                self.app.send_task(
                    POLL_TASK,
                    queue=POLL_QUEUE,
                    routing_key=POLL_QUEUE,
                    producer=producer,
                    retry=False,
                    expires=self.expires_s,
                )
        except (OperationalError, KombuError, ConnectionError, OSError) as error:
            logger.debug("relay nudge not sent (%s); the next tick relays the events", error)
