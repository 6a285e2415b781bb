"""Logs a real worker and beat write: JSON lines that name the event of each failure, Celery
told of a failed delivery without a traceback, and idle ticks kept out of INFO."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from domain import use_cases
from infrastructure.broker.names import POLL_TASK, RECALC_TASK
from infrastructure.cli import processes
from infrastructure.ops.logs import TICK_LOGGERS
from tests.e2e.pipeline import Pipeline, wait_until

FIELDS = {"time", "level", "logger", "message", "process_name", "pid"}


@pytest.fixture
def pipeline(pg_url: str, amqp_url: str, tmp_path: Path) -> Iterator[Pipeline]:
    # Three attempts: the blocked event fails once or twice, then is applied.
    built = Pipeline(pg_url, amqp_url, tmp_path, max_attempts=3, coalesce_limit=0)
    yield built
    built.stop()


def start(pipeline: Pipeline, name: str, command: list[str], **env: str) -> None:
    """Logs to `--logfile`, as a deployment may; Celery's banner goes to stdout, elsewhere."""
    log = pipeline.workdir / f"{name}.log"
    with (pipeline.workdir / f"{name}.out").open("ab") as out:
        process = subprocess.Popen(
            [*command, f"--logfile={log}"],
            env={**os.environ, **pipeline.env, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pipeline.started.append(process)


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every complete line, each one JSON object (a line being written is left for later)."""
    lines = path.read_text().split("\n")[:-1] if path.exists() else []
    records = [json.loads(line) for line in lines]
    assert all(isinstance(r, dict) and r.keys() >= FIELDS for r in records), lines[:5]
    return records


def wait_for(path: Path, found: Callable[[dict[str, Any]], bool], timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while not any(found(r) for r in json_lines(path)):
        assert time.monotonic() < deadline, f"no such line in {path.name}:\n{path.read_text()}"
        time.sleep(0.1)


def relay_counters(pipeline: Pipeline) -> Any:
    """The relay's heartbeat: passes run, events dispatched (outbox_counters)."""
    with pipeline.container.engine.connect() as connection:
        query = text("SELECT relay_passes, events_dispatched FROM outbox_counters")
        return connection.execute(query).one()


def about(
    records: list[dict[str, Any]], event_id: int, level: str, logger: str
) -> list[dict[str, Any]]:
    wanted = (event_id, level, logger)
    return [r for r in records if (r.get("event_id"), r["level"], r["logger"]) == wanted]


@pytest.mark.e2e
@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_json_logs_name_the_failing_part_and_the_dead_event_and_stay_quiet_when_idle(
    pipeline: Pipeline,
) -> None:
    worker_log = pipeline.workdir / "worker.log"
    beat_log = pipeline.workdir / "beat.log"
    # The worker logs JSON; beat keeps text, the default, so both shapes are seen.
    start(
        pipeline,
        "worker",
        processes.worker_command(),
        POSTSAVE_LOG_FORMAT="json",
        POSTSAVE_STATEMENT_TIMEOUT="1",  # a pass blocked on a bar fails within 1 s
    )
    start(
        pipeline,
        "beat",
        processes.celery_command("beat", "--loglevel=INFO"),
        POSTSAVE_LOG_FORMAT="text",
    )
    uow = pipeline.container.uow
    [bar] = use_cases.create_bars(uow(), 2)
    with pipeline.container.engine.connect() as blocker:
        # An application holds the bar: the pass over its part cannot write it.
        blocker.execute(text("SELECT * FROM bars WHERE id = :id FOR UPDATE"), {"id": bar})
        use_cases.complete_foo(uow(), use_cases.create_foos(uow(), 10)[0])
        with pipeline.container.engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO outbox_events (event_type, payload)"
                    " VALUES ('FooCompleted', '{\"foo_id\": 1}')"  # no delta: unreadable
                )
            )
        waiting, dead = (row.id for row in pipeline.events())
        wait_for(worker_log, lambda r: r.get("part_id") == 1 and r["level"] == "WARNING")
        blocker.rollback()
    pipeline.wait_until_drained(timeout_s=30)
    # Idle ticks: beat's ticks run relay passes that dispatch nothing, three of them at least.
    idle_from = relay_counters(pipeline)
    wait_until(
        lambda: relay_counters(pipeline).relay_passes >= idle_from.relay_passes + 3,
        "three relay passes after the drain",
        timeout_s=15,
    )
    idle_to = relay_counters(pipeline)
    assert idle_to.events_dispatched == idle_from.events_dispatched  # idle indeed

    records = json_lines(worker_log)
    # The part failed, in the delivery of the event waiting for it: both named.
    [warning, *_] = [r for r in records if r.get("part_id") == 1 and r["level"] == "WARNING"]
    assert warning["logger"] == "domain.passes"
    assert warning["message"].startswith("part 1 failed (failure 1 of 3), next try in")
    assert "statement timeout" in warning["message"]
    assert (warning["event_id"], warning["failures"], warning["task_name"]) == (
        waiting,
        1,
        RECALC_TASK,
    )
    # The unreadable event is dead at the relay, before it had a place in the order.
    [error] = about(records, dead, "ERROR", "domain.relay")
    assert error["message"].startswith(f"event {dead} (FooCompleted) is dead: InvalidEventError")
    assert error["task_name"] == POLL_TASK
    # The waiting event's delivery did not fail: its part did, and backs off.
    results = {
        r["event_id"]: r["message"]
        for r in records
        if r["logger"] == "celery.app.trace" and r.get("event_id") is not None
    }
    assert "succeeded" in results[waiting], results
    assert dead not in results  # never dispatched
    # Idle: no line about a tick, in either process, though ticks ran.
    ticks = [r for r in records if r["logger"] in TICK_LOGGERS and POLL_TASK in r["message"]]
    assert ticks == []
    beat = beat_log.read_text()
    assert "beat: Starting..." in beat
    assert "Sending due task" not in beat
    assert all(line.startswith("[") for line in beat.splitlines())  # text, Celery's shape
