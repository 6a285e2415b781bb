"""Beat's scheduler: Celery's in-memory one, whose ticks survive a broker node's death.

On quorum queues each tick waits for the broker's confirm (queues.on_quorum_queues: RabbitMQ
3.10 silently loses every publish of a channel whose first one met a leader election), and a
tick that fails drops beat's connection, so that the next tick opens a fresh one instead of
failing on the same channel for good."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from celery.beat import Scheduler as CeleryScheduler
from kombu import Connection

from infrastructure.broker.publishing import discard
from infrastructure.broker.queues import on_quorum_queues


class Scheduler(CeleryScheduler):
    @cached_property
    def connection(self) -> Connection:
        options = dict(self.app.conf.broker_transport_options or {})
        if on_quorum_queues(self.app):
            options["confirm_publish"] = True
        return self.app.connection_for_write(transport_options=options)

    def apply_async(
        self, entry: Any, producer: Any = None, advance: bool = True, **kwargs: Any
    ) -> Any:
        try:
            return super().apply_async(entry, producer=producer, advance=advance, **kwargs)
        except Exception:
            # Celery logs the failure; the next tick opens a connection of its own.
            self.__dict__.pop("producer", None)
            discard(self.__dict__.pop("connection", None))
            raise
