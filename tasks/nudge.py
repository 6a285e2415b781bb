"""The post-commit nudge: a commit that wrote events asks for a poll now, not at the next tick.

postsave.poll keeps only its newest message, so a burst of nudges costs the relay one or two
polls. A nudge is best effort: if it is lost, beat's periodic tick is the safety net."""

from __future__ import annotations

import logging

from celery import Celery
from kombu.exceptions import KombuError, OperationalError

from tasks.config import POLL_QUEUE, POLL_TASK

logger = logging.getLogger(__name__)


class RelayNudge:
    def __init__(self, app: Celery, expires_s: float) -> None:
        self.app = app
        self.expires_s = expires_s

    def close(self) -> None:
        self.app.close()

    def __call__(self) -> None:
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
