"""A pass stuck behind a lock on PostgreSQL fails into the retry path within the statement
timeout, instead of holding its worker forever."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from domain import use_cases
from domain.backoff import RetryPolicy
from domain.delivery import Outcome, handle_delivery
from domain.outbox import EventState
from infrastructure.bootstrap import Container
from infrastructure.settings import Settings

pytestmark = pytest.mark.postgres


@pytest.fixture
def container(pg_url: str) -> Iterator[Container]:
    built = Container(Settings(database_url=pg_url, statement_timeout_s=1.0))
    yield built
    built.close()


def test_a_delivery_stuck_behind_a_lock_fails_into_a_retry_within_the_statement_timeout(
    container: Container,
) -> None:
    use_cases.create_bars(container.uow(), 2, count=3)
    [foo] = use_cases.create_foos(container.uow(), 10)
    use_cases.complete_foo(container.uow(), foo)
    with container.engine.connect() as blocker:
        # Someone holds the projection row, as a long rebuild or a stuck session would.
        blocker.execute(text("SELECT * FROM bar_projection FOR UPDATE"))
        started = time.monotonic()
        outcome = handle_delivery(container.uow, 1, RetryPolicy(), coalesce=0)
        waited = time.monotonic() - started
        blocker.rollback()

    assert outcome is Outcome.RETRY_SCHEDULED
    assert waited < 5
    with container.uow() as uow:
        stored = uow.deliveries.lock(1)
    assert (stored.state, stored.failures) == (EventState.PENDING, 1)
    assert "statement timeout" in (stored.last_error or "")
    assert handle_delivery(container.uow, 1, RetryPolicy()) is Outcome.APPLIED  # lock gone
