"""postsave inside the bench process: its composition root, on the run's services only."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from infrastructure.bootstrap import Container
from infrastructure.settings import DEFAULT_BROKER_URL, Settings


@contextmanager
def postsave(
    database_url: str, broker_url: str = DEFAULT_BROKER_URL, nudge: bool = False, **settings: Any
) -> Iterator[Container]:
    """Settings given here (`settings`: more of them, such as part_size), never read from the
    environment; closed on the way out. The default broker is never opened by the figures that
    pass none (they use the database only)."""
    given = Settings(database_url=database_url, broker_url=broker_url, **settings)
    container = Container(given, nudge=nudge)
    try:
        yield container
    finally:
        container.close()
