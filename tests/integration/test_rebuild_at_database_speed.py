"""`postsave rebuild` on SQLite and PostgreSQL: right for a log of 1,505 events, and reading it
a pass's worth of events per statement, never one statement per event or per bar."""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import event, text

from domain import projection, use_cases
from domain.delivery import Outcome, handle_delivery
from infrastructure.bootstrap import Container
from tests.deliveries import dispatch


def complete_and_apply(container: Container, count: int) -> None:
    ids = [
        foo
        for batch in use_cases.create_foos_in_batches(container.uow(), 3, count)
        for foo in batch
    ]
    use_cases.complete_foos(container.uow(), ids)
    with container.engine.connect() as connection:
        pending = connection.execute(
            text("SELECT id FROM outbox_events WHERE applied_at IS NULL ORDER BY id")
        ).scalars()
        wanted = list(pending)
    dispatch(container, wanted)
    # The last one's delivery passes the part through all of them.
    assert handle_delivery(container.uow, wanted[-1], container.heavy_step) is Outcome.APPLIED


def statements_of_rebuild(container: Container) -> list[str]:
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    event.listen(container.engine, "before_cursor_execute", record)
    try:
        projection.rebuild(container.uow, container.heavy_step)
    finally:
        event.remove(container.engine, "before_cursor_execute", record)
    return sent


def test_rebuild_reads_the_log_a_pass_at_a_time(container: Container) -> None:
    use_cases.create_bars(container.uow(), 2, count=3)
    complete_and_apply(container, 5)
    short = statements_of_rebuild(container)
    complete_and_apply(container, 1_500)

    long = statements_of_rebuild(container)

    passes = math.ceil(1_505 / container.heavy_step.events_per_pass)
    # Each further pass: claim the part, read its bars and its events, write both, commit.
    assert len(short) < len(long) <= len(short) + 8 * (passes - 1)
    with container.engine.begin() as connection:  # corrupt the bars, then rebuild them
        connection.execute(text("UPDATE bars SET value = 0"))
    started = projection.rebuild(container.uow, container.heavy_step)
    assert (started.parts, started.events) == (1, 1_505)
    assert container.verify().holds
    with container.engine.connect() as connection:
        values = connection.execute(text("SELECT DISTINCT value FROM bars")).scalars()
        assert list(values) == [2 * 3 * 1_505]
