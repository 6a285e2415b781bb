"""What operators read does not grow with history: a metrics scrape, `postsave check`,
`postsave status` and `dead list` read the unfinished or dead events' indexes and one-row
tables, never the event log; a prune reads the old events, never the recent ones it keeps.
Measured in PostgreSQL's own terms (plans and buffers), not in seconds."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event, text

from domain import operations, retention, use_cases
from infrastructure.bootstrap import Container
from infrastructure.settings import Settings

pytestmark = pytest.mark.postgres

FINISHED = 50_000


@pytest.fixture
def container(pg_url: str) -> Iterator[Container]:
    built = Container(Settings(database_url=pg_url))
    yield built
    built.close()


READS: dict[str, Callable[[Container], object]] = {
    "metrics and check": lambda c: operations.outbox_health(c.uow()),
    "status": lambda c: operations.outbox_stats(c.uow()),
    "dead list": lambda c: operations.dead_events(c.uow()),
}


def statements_of(
    container: Container, read: Callable[[Container], object]
) -> list[tuple[str, Any]]:
    """The SQL that `read` sends, with its parameters."""
    sent: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            sent.append((statement, parameters))

    event.listen(container.engine, "before_cursor_execute", record)
    try:
        read(container)
    finally:
        event.remove(container.engine, "before_cursor_execute", record)
    return sent


def plans(engine: Engine, statements: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    found = []
    with engine.connect() as connection:
        for statement, parameters in statements:
            explain = f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {statement}"
            raw = connection.exec_driver_sql(explain, parameters).scalar_one()
            found.append((json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"])
    return found


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def buffers(plan: dict[str, Any]) -> int:
    return int(plan["Shared Hit Blocks"]) + int(plan["Shared Read Blocks"])


def add_finished_events(engine: Engine, count: int, age_s: float = 0.0) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO outbox_events"
                " (event_type, payload, state, dispatches, occurred_at, applied_at, position) "
                "SELECT 'FooCompleted', json_build_object('foo_id', n, 'delta', 1), "
                "'processed', 1, t, t, head + n FROM generate_series(1, :count) AS n, "
                "LATERAL (SELECT now() - make_interval(secs => :age)) AS s(t), "
                "LATERAL (SELECT head_position FROM bar_projection) AS p(head)"
            ),
            {"count": count, "age": age_s},
        )
        # Sequenced and applied by every part (there is none): as the relay and passes leave them.
        connection.execute(
            text(
                "UPDATE bar_projection SET head_position = head_position + :count,"
                " applied_position = head_position + :count"
            ),
            {"count": count},
        )
        connection.execute(text("ANALYZE outbox_events"))


@pytest.mark.parametrize("read", list(READS))
def test_what_operators_read_costs_the_same_with_fifty_thousand_finished_events(
    container: Container, read: str
) -> None:
    foos = use_cases.create_foos_in_batches(container.uow(), 1, 3)
    use_cases.complete_foos(container.uow(), [foo for batch in foos for foo in batch])
    with container.engine.begin() as connection:
        connection.execute(text("ANALYZE outbox_events"))
    statements = statements_of(container, READS[read])
    assert statements
    empty = plans(container.engine, statements)

    add_finished_events(container.engine, FINISHED)
    full = plans(container.engine, statements)

    for plan in full:
        scanned = {n.get("Relation Name") for n in nodes(plan) if n["Node Type"] == "Seq Scan"}
        assert "outbox_events" not in scanned, json.dumps(plan, indent=1)
    # A page or two more to walk down a larger index, never the 50,000 rows' hundreds of pages.
    for before, after in zip(empty, full, strict=True):
        assert buffers(after) <= buffers(before) + 3, (buffers(before), buffers(after))
    stats = operations.outbox_stats(container.uow())
    assert (stats.pending, stats.in_flight, stats.dead) == (3, 0, 0)


def test_a_prune_reads_the_old_events_and_not_the_recent_ones_it_keeps(
    container: Container,
) -> None:
    add_finished_events(container.engine, 10, age_s=7_200)  # old enough: pruned
    add_finished_events(container.engine, FINISHED)  # recent: kept
    prune = lambda c: retention.prune(c.uow, older_than_s=3_600)  # noqa: E731

    statements = statements_of(container, prune)

    with container.engine.connect() as connection:  # it pruned the 10 old ones, only those
        left = connection.execute(text("SELECT count(*) FROM outbox_events")).scalar_one()
    with container.uow() as uow:
        assert (left, uow.projection_log.checkpoint().events) == (FINISHED, 10)
    # Of the log: where the recent events start, and one chunk of old ones.
    of_the_log = [each for each in statements if "outbox_events" in each[0]]
    assert len(of_the_log) == 2
    for plan in plans(container.engine, of_the_log):
        scanned = {n.get("Relation Name") for n in nodes(plan) if n["Node Type"] == "Seq Scan"}
        assert "outbox_events" not in scanned, json.dumps(plan, indent=1)
        # The 50,000 recent rows span hundreds of pages; a prune reads a handful.
        assert buffers(plan) <= 10, json.dumps(plan, indent=1)
