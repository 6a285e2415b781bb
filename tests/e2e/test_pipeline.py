"""End to end: foos change, bars appear mid-flight, messages arrive twice; the invariant holds."""

from __future__ import annotations

import random

import pytest

from domain import projection, use_cases
from tests.e2e.pipeline import Pipeline


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

    before = projection.verify(pipeline.container.uow())
    assert before.mismatched == [], pipeline.logs()
    redelivered = range(1, stats.processed + 1, 2)
    for event_id in redelivered:
        pipeline.deliver(event_id)  # every other processed event, delivered again
    pipeline.wait_until_queues_empty()
    pipeline.wait_until_drained()
    pipeline.wait_for_log("'already_applied'", count=len(redelivered))
    after = projection.verify(pipeline.container.uow())
    assert after.mismatched == []
    assert after.completed_total == before.completed_total
    pipeline.assert_processes_alive()


@pytest.mark.e2e
@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_pipeline_on_postgresql_and_rabbitmq(pg_pipeline: Pipeline) -> None:
    _run_flow(pg_pipeline, foos=150, bars=100)


@pytest.mark.e2e
def test_pipeline_on_the_embedded_default(embedded_pipeline: Pipeline) -> None:
    _run_flow(embedded_pipeline, foos=80, bars=50)
