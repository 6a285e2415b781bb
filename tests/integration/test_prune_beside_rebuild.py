"""A rebuild reads the checkpoint and the log's sum in two statements. On PostgreSQL each sees
what had committed when it started, so a prune chunk committing between them would be counted
twice, in the log and in the checkpoint. The rebuild locks the checkpoint first: a chunk in
progress holds it off until it commits, and one that starts later waits for the rebuild."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from domain import projection, use_cases
from domain.delivery import apply_pass
from infrastructure.bootstrap import Container
from infrastructure.settings import Settings

pytestmark = pytest.mark.postgres


@pytest.fixture
def container(pg_url: str) -> Iterator[Container]:
    built = Container(Settings(database_url=pg_url))
    yield built
    built.close()


def waiting_on_a_lock(container: Container, timeout_s: float = 5.0) -> list[str]:
    """The statements of other sessions waiting for a lock, once there is one."""
    deadline = time.monotonic() + timeout_s
    with container.engine.connect() as connection:
        while time.monotonic() < deadline:
            found = connection.execute(
                text(
                    "SELECT query FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalars()
            waiting = list(found)
            connection.rollback()  # pg_stat_activity is read once per transaction
            if waiting:
                return waiting
            time.sleep(0.05)
    return []


def test_a_rebuild_waits_for_a_prune_chunk_in_progress_and_counts_it_once(
    container: Container,
) -> None:
    use_cases.create_bars(container.uow(), 2, count=3)
    foos = [f for batch in use_cases.create_foos_in_batches(container.uow(), 3, 5) for f in batch]
    use_cases.complete_foos(container.uow(), foos)
    with container.engine.connect() as connection:
        first = connection.execute(text("SELECT min(id) FROM outbox_events")).scalar_one()
    apply_pass(container.uow(), first, coalesce=5)
    results: list[tuple[int, int]] = []

    with container.uow() as chunk:  # a prune's chunk: folded and deleted, not yet committed
        events = chunk.retention.lock_prunable(0, 2)
        chunk.retention.fold_and_delete(events, sum(e.event().delta for e in events))
        rebuilding = threading.Thread(
            target=lambda: results.append(projection.rebuild(container.uow()))
        )
        rebuilding.start()
        waiting = waiting_on_a_lock(container)
        assert len(events) == 2 and rebuilding.is_alive()  # work in hand on both sides
        assert any("projection_checkpoint" in query for query in waiting), waiting
        chunk.commit()
    rebuilding.join(timeout=10)

    assert results == [(5, 3)]  # two events from the checkpoint, three from the log
    with container.engine.connect() as connection:
        values = connection.execute(text("SELECT DISTINCT value FROM bars")).scalars()
        assert list(values) == [2 * 5 * 3]
    assert projection.verify(container.uow()).holds
