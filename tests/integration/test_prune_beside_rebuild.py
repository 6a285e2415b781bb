"""A rebuild replays from the bars' baselines the events after them; a prune deletes events
that every baseline is past. The rebuild locks the checkpoint first: a prune chunk in progress
holds it off until it commits (its events are then gone, and the baselines past them), and
one that starts later waits for the rebuild to have reopened what it replays."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from domain import projection, retention, use_cases
from infrastructure.bootstrap import Container
from infrastructure.settings import Settings
from tests.deliveries import apply_events

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
        ids = list(connection.execute(text("SELECT id FROM outbox_events ORDER BY id")).scalars())
    apply_events(container, ids[:2])
    through = retention.take_baselines(container.uow)  # at position 2
    apply_events(container, ids[2:])
    results: list[projection.RebuildStart] = []

    with container.uow() as chunk:  # a prune's chunk: folded and deleted, not yet committed
        events = chunk.retention.lock_prunable(0, 5, through_position=through)
        chunk.retention.fold_and_delete(events, sum(e.event().delta for e in events))
        rebuilding = threading.Thread(
            target=lambda: results.append(projection.rebuild(container.uow, container.heavy_step))
        )
        rebuilding.start()
        waiting = waiting_on_a_lock(container)
        assert len(events) == 2 and rebuilding.is_alive()  # work in hand on both sides
        assert any("projection_checkpoint" in query for query in waiting), waiting
        chunk.commit()
    rebuilding.join(timeout=10)

    # The two pruned events are in the baselines; the three after them are replayed.
    assert results == [projection.RebuildStart(parts=1, from_position=2, events=3)]
    with container.engine.connect() as connection:
        values = connection.execute(text("SELECT DISTINCT value FROM bars")).scalars()
        assert list(values) == [2 * 5 * 3]
    assert container.verify().holds
