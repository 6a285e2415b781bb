"""`postsave rebuild` on SQLite and PostgreSQL: right for a log of 1,505 events, with no statement
per event (the same statements as for 5). That no event is read into Python one by one is
tests/unit/test_projection.py's to show: a streamed read would send one statement here too."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, text

from domain import projection, use_cases
from domain.delivery import apply_pass
from infrastructure.bootstrap import Container


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
    apply_pass(container.uow(), wanted[0], coalesce=len(wanted))


def statements_of_rebuild(container: Container) -> list[str]:
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    event.listen(container.engine, "before_cursor_execute", record)
    try:
        projection.rebuild(container.uow())
    finally:
        event.remove(container.engine, "before_cursor_execute", record)
    return sent


def test_rebuild_sends_as_many_statements_for_a_long_log_as_for_a_short_one(
    container: Container,
) -> None:
    use_cases.create_bars(container.uow(), 2, count=3)
    complete_and_apply(container, 5)
    short = statements_of_rebuild(container)
    complete_and_apply(container, 1_500)

    long = statements_of_rebuild(container)

    assert long == short
    with container.engine.begin() as connection:  # corrupt the bars, then rebuild them
        connection.execute(text("UPDATE bars SET value = 0"))
    assert projection.rebuild(container.uow()) == (1_505, 3)
    assert projection.verify(container.uow()).holds
