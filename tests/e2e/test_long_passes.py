"""A pass longer than the lease is normal: time limits follow one part's work, so a long pass
finishes, unkilled and unfailed, while the event's lease ends and its message comes again."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import text

from domain import use_cases
from tests.e2e.pipeline import Pipeline, finish
from tests.recalculations import SLOW_DIGEST

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.rabbitmq]


def test_a_pass_longer_than_the_lease_completes_and_nothing_fails(
    pg_url: str, amqp_url: str, tmp_path: Path
) -> None:
    pipeline = Pipeline(
        pg_url,
        amqp_url,
        tmp_path,
        lease_seconds=3.0,
        recalculation=SLOW_DIGEST,
        part_size=1_000,
    )
    try:
        use_cases.create_bars(pipeline.container.uow(), 1, count=1_000)  # one part: 5 s a pass
        use_cases.complete_foo(
            pipeline.container.uow(), use_cases.create_foos(pipeline.container.uow(), 4)[0]
        )
        started = time.monotonic()
        pipeline.start_worker()
        pipeline.start_beat()
        finish(pipeline, "a pass longer than the lease")
        took = time.monotonic() - started
        with pipeline.container.engine.connect() as connection:
            failures, passed = connection.execute(
                text("SELECT failures, position FROM bar_parts")
            ).one()
            dispatches = connection.execute(
                text("SELECT dispatches FROM outbox_events")
            ).scalar_one()
        assert took > pipeline.lease_seconds  # the pass did outlast the lease ...
        assert (failures, passed) == (0, 1)  # ... and was neither killed nor failed
        assert dispatches >= 2  # its lease ended meanwhile: the message came again
        assert "SoftTimeLimitExceeded" not in pipeline.logs(tail=None)
    finally:
        pipeline.stop()
