"""The Dispatcher port on Celery: one recalculate_bars message per event."""

from __future__ import annotations

from collections.abc import Sequence

from celery import Celery
from kombu.exceptions import KombuError, OperationalError

from domain.errors import DispatchError
from domain.ports import Dispatcher
from tasks.config import RECALC_QUEUE, RECALC_TASK


class CeleryDispatcher(Dispatcher):
    def __init__(self, app: Celery) -> None:
        self.app = app

    def dispatch(self, event_ids: Sequence[int], expires_in_s: float) -> None:
        try:
            with self.app.producer_or_acquire() as producer:
                for event_id in event_ids:
                    # With publisher confirms on, each send returns once RabbitMQ has it.
                    self.app.send_task(
                        RECALC_TASK,
                        args=(event_id,),
                        queue=RECALC_QUEUE,
                        routing_key=RECALC_QUEUE,
                        producer=producer,
                        retry=False,
                        # Sets the AMQP per-message TTL, and a worker drops it if late.
                        expires=expires_in_s,
                    )
        except (OperationalError, KombuError, ConnectionError, OSError) as error:
            raise DispatchError(f"broker refused the dispatch: {error}") from error
