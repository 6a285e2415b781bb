from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.pipeline import Pipeline
from tests.e2e.rabbitmq_node import RabbitMQNode
from tests.recalculations import DIGEST


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


def faulty_pipeline(pg_url: str, broker_url: str, tmp_path: Path) -> Pipeline:
    """Short leases, so that redelivery after a fault is quick to see; at most 5 events per
    pass, so that a fault meets events dispatched and not yet applied (a pass of the whole
    backlog would apply it at once, before any fault); the order-sensitive digest over parts
    of 250 bars, so that every bar proves it got each event once, in the one order."""
    pipeline = Pipeline(
        pg_url,
        broker_url,
        tmp_path,
        poll_interval_s=0.2,
        lease_seconds=3.0,
        batch_size=50,
        coalesce_limit=5,
        recalculation=DIGEST,
        part_size=250,
    )
    pipeline.watch_ready()
    return pipeline


@pytest.fixture
def faulty(pg_url: str, amqp_url: str, tmp_path: Path) -> Iterator[Pipeline]:
    pipeline = faulty_pipeline(pg_url, amqp_url, tmp_path)
    yield pipeline
    pipeline.stop()


@pytest.fixture(scope="session")
def own_rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQNode]:
    """A RabbitMQ node of the tests' own, started on first use, for the faults that act on a
    whole node: the shared one keeps serving every other test meanwhile."""
    node = RabbitMQNode(tmp_path_factory.mktemp("rabbitmq"))
    node.start()
    yield node
    node.stop()


@pytest.fixture
def faulty_on_own_node(
    pg_url: str, own_rabbitmq: RabbitMQNode, tmp_path: Path
) -> Iterator[Pipeline]:
    """`faulty`, on the tests' own RabbitMQ node."""
    pipeline = faulty_pipeline(pg_url, own_rabbitmq.amqp_url, tmp_path)
    yield pipeline
    pipeline.stop()
