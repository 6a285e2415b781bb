"""The worker's consumer: Celery's, less native delayed delivery.

Celery 5.5+ declares `celery_delayed_*` exchanges and queues (28 of them) when it finds quorum
queues, for tasks sent with a countdown or an eta. postsave sends none, so they would only
be more queues for an operator to wonder about, and more a broker user must be allowed to
configure."""

from __future__ import annotations

from typing import ClassVar

from celery.worker.consumer import Consumer as CeleryConsumer

DELAYED_DELIVERY = "celery.worker.consumer.delayed_delivery:DelayedDelivery"


class Consumer(CeleryConsumer):
    class Blueprint(CeleryConsumer.Blueprint):
        default_steps: ClassVar[list[str]] = [
            step for step in CeleryConsumer.Blueprint.default_steps if step != DELAYED_DELIVERY
        ]
