"""postsave inside the bench process: its composition root, on the run's services only."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from infrastructure.bootstrap import Container
from infrastructure.settings import DEFAULT_BROKER_URL, Settings


@contextmanager
def postsave(
    database_url: str, broker_url: str = DEFAULT_BROKER_URL, nudge: bool = False
) -> Iterator[Container]:
    """Settings given here, never read from the environment; closed on the way out. The default
    broker is never opened by the figures that pass none (they use the database only)."""
    container = Container(Settings(database_url=database_url, broker_url=broker_url), nudge=nudge)
    try:
        yield container
    finally:
        container.close()
