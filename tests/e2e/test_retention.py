"""POSTSAVE_RETENTION: beat prunes on its own while events flow, and nothing is lost or
counted twice: every event ends in the checkpoint, the bars hold, a rebuild agrees."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import text

from domain import projection, use_cases
from domain.outbox import Checkpoint
from tests.e2e.pipeline import Pipeline

FOOS, AMOUNT, BARS, WEIGHT = 600, 3, 20, 2


def checkpoint(pipeline: Pipeline) -> Checkpoint:
    with pipeline.container.uow() as uow:
        return uow.projection_log.checkpoint()


def wait_for_checkpoint(pipeline: Pipeline, events: int, timeout_s: float = 30.0) -> Checkpoint:
    deadline = time.monotonic() + timeout_s
    while (found := checkpoint(pipeline)).events < events and time.monotonic() < deadline:
        pipeline.assert_processes_alive()
        time.sleep(0.2)
    return found


@pytest.mark.e2e
@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_beat_prunes_on_its_own_while_events_flow(
    pg_url: str, amqp_url: str, tmp_path: Path
) -> None:
    pipeline = Pipeline(pg_url, amqp_url, tmp_path, retention="1s", prune_interval_s=2.0)
    uow = pipeline.container.uow
    try:
        use_cases.create_bars(uow(), WEIGHT, count=BARS)
        foos = use_cases.create_foos(uow(), AMOUNT, count=FOOS)
        pipeline.start_worker()
        pipeline.start_beat()
        # Samples, each right after a commit, where the checkpoint had grown since the last
        # one (a prune ran) and events were unfinished (the workers had work in hand).
        prunes_beside_work = 0
        last = 0
        for start in range(0, FOOS, 10):
            use_cases.complete_foos(uow(), foos[start : start + 10])
            stats, folded = pipeline.stats(), checkpoint(pipeline).events
            prunes_beside_work += folded > last and stats.pending + stats.in_flight > 0
            last = folded
            time.sleep(0.1)

        pipeline.wait_until_drained()
        folded_all = wait_for_checkpoint(pipeline, FOOS)

        assert prunes_beside_work > 0, pipeline.logs()
        assert folded_all == Checkpoint(AMOUNT * FOOS, FOOS, folded_all.last_pruned_id)
        with pipeline.container.engine.connect() as connection:
            left = connection.execute(text("SELECT count(*) FROM outbox_events")).scalar_one()
        assert left == 0
        container = pipeline.container
        assert container.verify().holds
        with container.engine.begin() as connection:
            connection.execute(text("UPDATE bars SET value = 0"))  # damaged
        # Every event is pruned: the bars come back from their baselines, the prunes' record.
        started = projection.rebuild(container.uow, container.heavy_step)
        assert started.events == 0
        assert container.verify().holds
        assert "prune: folded" in pipeline.logs(tail=None)
        pipeline.assert_processes_alive()
    finally:
        pipeline.stop()
