"""`postsave demo`: the whole pipeline, end to end, on whatever the settings name
(by default the embedded SQLite database and broker under ./var/, no servers needed)."""

from __future__ import annotations

import dataclasses
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from celery import Celery

from domain import operations, use_cases
from domain.operations import Status
from infrastructure.bootstrap import Container
from infrastructure.broker.names import RECALC_QUEUE, RECALC_TASK
from infrastructure.cli import processes
from infrastructure.files import create_private_file
from infrastructure.settings import VAR_DIR, Settings
from infrastructure.sql.migrate import upgrade
from infrastructure.urls import redact_url

BARS, FOOS, MID_FLIGHT_BARS, REVISIONS, CANCELLATIONS, DUPLICATES = 1000, 300, 40, 100, 50, 25
# Bars per part, unless POSTSAVE_PART_SIZE says otherwise: the demo's bars make several parts,
# and its progress shows them advancing on their own.
PART_SIZE = 200
DRAIN_TIMEOUT_S = 90.0


def _say(message: str) -> None:
    print(message, flush=True)


def _progress(status: Status, started: float) -> str:
    events, parts = status.events, status.parts
    return (
        f"  {time.monotonic() - started:5.1f}s  pending {events.pending:4d}  "
        f"in flight {events.in_flight:4d}  processed {events.processed:5d}  dead {events.dead}  "
        f"parts behind {parts.behind:2d}/{parts.parts}  lag {events.projection_lag_s:4.1f}s"
    )


def _show(line: str, last: list[str]) -> None:
    if sys.stdout.isatty():
        print(f"\r{line}", end="", flush=True)
    elif line != (last[0] if last else ""):
        print(line, flush=True)
    last[:] = [line]


def _wait_for_drain(container: Container, started: float) -> Status:
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    last: list[str] = []
    while True:
        status = operations.status(container.uow())
        _show(_progress(status, started), last)
        if status.events.drained:
            if sys.stdout.isatty():
                print()
            return status
        if time.monotonic() > deadline:
            print()
            raise TimeoutError(
                f"events still pending after {DRAIN_TIMEOUT_S:.0f}s; "
                f"see {VAR_DIR}/demo-worker.log and {VAR_DIR}/demo-beat.log"
            )
        time.sleep(0.5)


def _wait_for_ready(log_path: Path, worker: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited at start; see {log_path}")
        if log_path.exists() and " ready." in log_path.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise TimeoutError(f"the worker did not start within 60s; see {log_path}")


def _send_duplicates(app: Celery, count: int) -> list[int]:
    """Deliver already-applied events again, as a broker redelivery would."""
    ids = list(range(1, count + 1))
    for event_id in ids:
        app.send_task(RECALC_TASK, args=(event_id,), queue=RECALC_QUEUE)
    return ids


def _wait_for_empty_queue(app: Celery, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        while time.monotonic() < deadline:
            if channel.queue_declare(RECALC_QUEUE, passive=True).message_count == 0:
                time.sleep(1.0)  # let the last fetched messages finish
                return
            time.sleep(0.2)


def run_demo(settings: Settings) -> int:
    rng = random.Random(2016)
    database, broker = redact_url(settings.database_url), redact_url(settings.broker_url)
    _say(f"postsave demo: database {database}, broker {broker}")
    upgrade(settings.database_url)
    if not os.environ.get("POSTSAVE_PART_SIZE", "").strip():
        settings = dataclasses.replace(settings, part_size=PART_SIZE)
    container = Container(settings, nudge=True)
    env = {  # the worker and beat run with the demo's settings, the URLs given inline
        "POSTSAVE_DATABASE_URL": settings.database_url,
        "POSTSAVE_DATABASE_URL_FILE": "",
        "POSTSAVE_BROKER_URL": settings.broker_url,
        "POSTSAVE_BROKER_URL_FILE": "",
        "POSTSAVE_PART_SIZE": str(settings.part_size),
    }
    logs = Path(VAR_DIR)
    for name in ("demo-worker.log", "demo-beat.log"):
        if not create_private_file(logs / name):  # new: 0600, in a 0700 ./var; old: emptied
            (logs / name).write_text("")
    _say(f"starting a worker and beat (logs: {logs}/demo-worker.log, {logs}/demo-beat.log)")
    worker = processes.start_worker(env, logs / "demo-worker.log", name="demo")
    beat = processes.start_beat(env, logs / "demo-beat.log")
    try:
        _wait_for_ready(logs / "demo-worker.log", worker)
        before = operations.outbox_stats(container.uow())
        started = time.monotonic()
        use_cases.create_bars(container.uow(), 1, count=BARS // 2)
        use_cases.create_bars(container.uow(), 3, count=BARS - BARS // 2)
        foo_ids = use_cases.create_foos(container.uow(), 0, count=FOOS)
        for foo_id in foo_ids:  # pending foos: revising them emits nothing
            use_cases.revise_foo(container.uow(), foo_id, rng.randint(1, 100))
        _say(
            f"seeded {BARS} bars ({settings.part_size} a part) and {FOOS} pending foos; "
            "completing them in waves:"
        )
        last: list[str] = []
        waves = 6
        for wave in range(waves):
            batch = foo_ids[wave * FOOS // waves : (wave + 1) * FOOS // waves]
            for chunk in range(0, len(batch), 10):
                use_cases.complete_foos(container.uow(), batch[chunk : chunk + 10])
            if wave == waves // 2:
                use_cases.create_bars(container.uow(), 2, count=MID_FLIGHT_BARS)
                _show(f"  + {MID_FLIGHT_BARS} bars created while events are in flight", last)
            _show(_progress(operations.status(container.uow()), started), last)
            time.sleep(0.4)
        for foo_id in rng.sample(foo_ids, REVISIONS):
            use_cases.revise_foo(container.uow(), foo_id, rng.randint(0, 150))
        use_cases.cancel_foos(container.uow(), rng.sample(foo_ids, CANCELLATIONS))
        _show(f"  revised {REVISIONS} and cancelled {CANCELLATIONS} completed foos", last)
        produced = operations.outbox_stats(container.uow())
        events = produced.processed + produced.pending + produced.in_flight - before.processed
        _say(f"\ncommitted {events} events; waiting for the workers to drain the outbox:")
        _wait_for_drain(container, started)
        elapsed = time.monotonic() - started
        _send_duplicates(container.celery_app, DUPLICATES)
        _say(f"delivered {DUPLICATES} applied events again on purpose (a broker redelivery)")
        _wait_for_empty_queue(container.celery_app, 30.0)
        result = container.verify()
    finally:
        processes.stop(beat)
        processes.stop(worker)
        container.close()
    if not result.holds:
        _say(f"verify FAILED: {len(result.mismatched)}+ bars differ; run `postsave verify`")
        return 1
    if not result.outbox_drained:
        _say("verify FAILED: events are pending again; run `postsave status`")
        return 1
    checked = f"a replay of the log through {settings.recalculation}"
    if result.checked_closed_form:
        checked += f" and weight * {result.completed_total}"
    _say(
        f"verify: ok, all {result.bars} bars ({result.parts} parts) equal {checked}; "
        "duplicates changed nothing"
    )
    _say(f"summary: {events} events in {elapsed:.1f}s ({events / elapsed:.0f} events/s)")
    return 0
