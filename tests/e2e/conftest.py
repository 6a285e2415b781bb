from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.pipeline import Pipeline


@pytest.fixture
def pg_pipeline(pg_url: str, amqp_url: str, tmp_path: Path) -> Iterator[Pipeline]:
    """PostgreSQL + RabbitMQ, with processes started by the test."""
    pipeline = Pipeline(pg_url, amqp_url, tmp_path)
    yield pipeline
    pipeline.stop()


@pytest.fixture
def embedded_pipeline(sqlite_url: str, tmp_path: Path) -> Iterator[Pipeline]:
    """The embedded default: SQLite for the data and kombu's SQLAlchemy transport as broker."""
    pipeline = Pipeline(sqlite_url, f"sqla+sqlite:///{tmp_path / 'broker.db'}", tmp_path)
    yield pipeline
    pipeline.stop()


@pytest.fixture
def faulty(pg_url: str, amqp_url: str, tmp_path: Path) -> Iterator[Pipeline]:
    """Short leases, so that redelivery after a fault is quick to see; one pass per event, so
    that a fault meets events dispatched and not yet applied (a coalescing pass would apply
    the whole backlog at once, before any fault)."""
    pipeline = Pipeline(
        pg_url,
        amqp_url,
        tmp_path,
        poll_interval_s=0.2,
        lease_seconds=3.0,
        batch_size=50,
        coalesce_limit=0,
    )
    pipeline.watch_ready()
    yield pipeline
    pipeline.stop()
