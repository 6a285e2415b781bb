"""End to end: foos change, bars appear mid-flight, messages arrive twice; the invariant holds."""

from __future__ import annotations

import random
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from domain import use_cases
from infrastructure.broker.names import POLL_QUEUE, RECALC_QUEUE
from tests.e2e.pipeline import Pipeline, wait_until


def _run_flow(pipeline: Pipeline, foos: int, bars: int) -> None:
    rng = random.Random(42)
    uow = pipeline.container.uow
    use_cases.create_bars(uow(), 2, count=bars)
    pipeline.start_worker()
    pipeline.start_beat()
    foo_ids = [use_cases.create_foos(uow(), rng.randint(0, 50))[0] for _ in range(foos)]
    for start in range(0, foos, 7):
        use_cases.complete_foos(uow(), foo_ids[start : start + 7])
        use_cases.create_bars(uow(), rng.randint(0, 5))  # bars created while events flow
    for foo_id in rng.sample(foo_ids, foos // 3):
        use_cases.revise_foo(uow(), foo_id, rng.randint(0, 80))
    use_cases.cancel_foos(uow(), rng.sample(foo_ids, foos // 5))
    for event_id in range(1, 30, 3):
        pipeline.deliver(event_id)  # some deliveries happen twice, on purpose

    stats = pipeline.wait_until_drained()
    expected_events = foos + foos // 3 + foos // 5  # an upper bound: zero-delta revisions emit none
    assert 0 < stats.processed <= expected_events
    assert stats.dead == 0

    before = pipeline.container.verify()
    assert before.mismatched == [], pipeline.logs()
    counts = pipeline.counts()
    already = pipeline.logs(tail=None).count("'already_applied'")  # the duplicates above
    redelivered = range(1, stats.processed + 1, 2)
    for event_id in redelivered:
        pipeline.deliver(event_id)  # every other processed event, delivered twice again
        pipeline.deliver(event_id)
    pipeline.wait_for_log("'already_applied'", count=already + 2 * len(redelivered), timeout_s=60)
    pipeline.wait_until_drained()
    after = pipeline.container.verify()
    assert after.mismatched == []
    assert after.completed_total == before.completed_total
    assert pipeline.counts() == counts  # nothing applied twice, nothing new
    pipeline.assert_processes_alive()


@pytest.mark.e2e
@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_pipeline_on_postgresql_and_rabbitmq(pg_pipeline: Pipeline) -> None:
    _run_flow(pg_pipeline, foos=150, bars=100)


@pytest.mark.e2e
def test_pipeline_on_the_embedded_default(embedded_pipeline: Pipeline) -> None:
    _run_flow(embedded_pipeline, foos=80, bars=50)


@pytest.mark.e2e
def test_the_embedded_broker_holds_no_more_than_the_bound_while_nobody_consumes(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Its transport has no TTL: messages nobody took would stay while their events are
    dispatched again after every lease."""
    broker = tmp_path / "broker.db"
    pipeline = Pipeline(
        sqlite_url, f"sqla+sqlite:///{broker}", tmp_path, lease_seconds=1.0, max_in_flight=30
    )
    try:
        use_cases.create_foos(pipeline.container.uow(), 5, count=100)
        use_cases.complete_foos(pipeline.container.uow(), list(range(1, 101)))
        pipeline.start_beat()
        pipeline.start_worker("relay", queues=[POLL_QUEUE], concurrency=1)  # no recalc worker
        depths: list[int] = []

        def dispatched_three_times() -> bool:
            depths.append(waiting_messages(broker))
            return max(row.dispatches for row in pipeline.events()) >= 3

        # Several leases long: until leases ended and their events went out a third time.
        wait_until(dispatched_three_times, "an event dispatched three times", timeout_s=60)
        redispatched = max(row.dispatches for row in pipeline.events())
        logs = pipeline.logs()
    finally:
        pipeline.stop()
    assert redispatched >= 3, depths  # leases ended and their events went out again
    assert max(depths) > 0
    assert max(depths) <= 30, (depths, logs)


def waiting_messages(broker: Path) -> int:
    """Recalculation messages the embedded broker holds for a consumer."""
    with closing(sqlite3.connect(broker, timeout=30)) as connection:
        try:
            return int(
                connection.execute(
                    "SELECT count(*) FROM kombu_message m JOIN kombu_queue q"
                    " ON q.id = m.queue_id WHERE m.visible = 1 AND q.name = ?",
                    (RECALC_QUEUE,),
                ).fetchone()[0]
            )
        except sqlite3.OperationalError:
            return 0  # no table yet
