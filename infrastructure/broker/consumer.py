"""The worker's consumer: Celery's, less native delayed delivery, and with admission first.

Celery 5.5+ declares `celery_delayed_*` exchanges and queues (28 of them) when it finds quorum
queues, for tasks sent with a countdown or an eta. postsave sends none, and refuses any that
come (admission.py), so they would only be more queues for an operator to wonder about, and
more a broker user must be allowed to configure."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ClassVar

from celery.worker.consumer import Consumer as CeleryConsumer
from kombu.message import Message

from infrastructure.broker.admission import brief, ignore_time_limits, refusal

DELAYED_DELIVERY = "celery.worker.consumer.delayed_delivery:DelayedDelivery"

logger = logging.getLogger(__name__)


class Consumer(CeleryConsumer):
    class Blueprint(CeleryConsumer.Blueprint):
        default_steps: ClassVar[list[str]] = [
            step for step in CeleryConsumer.Blueprint.default_steps if step != DELAYED_DELIVERY
        ]

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Callable[[Message], None]:
        """Celery's handler of task messages, behind postsave's admission: a refused message
        is rejected (not requeued) before Celery decodes it or reserves anything for it."""
        handle: Callable[[Message], None] = super().create_task_handler(*args, **kwargs)
        connection_errors = self.connection_errors

        def admit(message: Message) -> None:
            why = refusal(message.headers, message.content_type, message.body)
            if why is None:
                ignore_time_limits(message.headers)
                return handle(message)
            queue = (message.delivery_info or {}).get("routing_key", "?")
            logger.error(
                "postsave worker: refused a message on %s (id %s): %s; dropped",
                str(queue)[:80],
                brief(_header(message, "id")),
                why,
            )
            message.reject_log_error(logger, connection_errors)
            return None

        return admit


def _header(message: Message, name: str) -> Any:
    headers = message.headers
    return headers.get(name) if isinstance(headers, dict) else None
