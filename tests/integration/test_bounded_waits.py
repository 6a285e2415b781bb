"""A pass stuck behind a lock on PostgreSQL fails within the statement timeout, into its
part's backoff, instead of holding its worker forever."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from domain import use_cases
from domain.delivery import Outcome, handle_delivery
from domain.outbox import EventState
from infrastructure.bootstrap import Container
from infrastructure.settings import Settings
from tests.deliveries import dispatch

pytestmark = pytest.mark.postgres


@pytest.fixture
def container(pg_url: str) -> Iterator[Container]:
    built = Container(Settings(database_url=pg_url, statement_timeout_s=1.0))
    yield built
    built.close()


def test_a_pass_stuck_behind_a_lock_fails_into_its_parts_backoff_within_the_statement_timeout(
    container: Container,
) -> None:
    use_cases.create_bars(container.uow(), 2, count=3)
    [foo] = use_cases.create_foos(container.uow(), 10)
    use_cases.complete_foo(container.uow(), foo)
    dispatch(container, [1])
    with container.engine.connect() as blocker:
        # Someone holds a bar, as an application's long transaction would.
        blocker.execute(text("SELECT * FROM bars WHERE id = 2 FOR UPDATE"))
        started = time.monotonic()
        outcome = handle_delivery(container.uow, 1, container.heavy_step)
        waited = time.monotonic() - started
        blocker.rollback()

    assert outcome is Outcome.WAITING
    assert waited < 5
    with container.uow() as uow:
        [part] = uow.parts.parts()
        event = uow.deliveries.lock(1)
    assert (part.failures, part.position) == (1, 0)
    assert "statement timeout" in (part.last_error or "")
    assert (event.state, event.failures) == (EventState.PENDING, 0)  # the event did not fail
    with container.engine.begin() as connection:  # the backoff is over, the message is back
        connection.execute(text("UPDATE bar_parts SET available_at = now()"))
    dispatch(container, [1])
    assert handle_delivery(container.uow, 1, container.heavy_step) is Outcome.APPLIED
    assert container.verify().holds
