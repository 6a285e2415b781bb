"""The Celery app. Building it reads settings only; engines are made lazily, per process."""

from __future__ import annotations

import threading
from typing import Any

from celery import Celery
from celery.signals import worker_process_init

from infrastructure.bootstrap import Container
from infrastructure.settings import Settings
from tasks.config import EMBEDDED_BROKER_POLLING_INTERVAL_S, celery_config

settings = Settings.from_env()
app = Celery("postsave")
app.config_from_object(celery_config(settings))

if settings.uses_embedded_broker:
    # kombu hands transport options of this transport to create_engine, so the polling
    # interval is set on the transport class instead.
    from kombu.transport import sqlalchemy as sqla_transport

    sqla_transport.Transport.polling_interval = EMBEDDED_BROKER_POLLING_INTERVAL_S

_container: Container | None = None
_container_lock = threading.Lock()


def container() -> Container:
    global _container
    with _container_lock:
        if _container is None:
            _container = Container(settings)
        return _container


@worker_process_init.connect
def _fresh_container_after_fork(**_: Any) -> None:
    # Connections must never cross a fork; each pool process builds its own engine.
    global _container
    _container = None
