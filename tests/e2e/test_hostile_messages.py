"""Whoever can publish to postsave's queues can at most make postsave do work it would do
anyway (infrastructure/broker/admission.py): real workers on real RabbitMQ, fed what a hostile
or mistaken publisher sends, then real work through the same worker."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from celery import signature

from domain import use_cases
from infrastructure.broker.names import POLL_QUEUE, POLL_TASK, RECALC_QUEUE, RECALC_TASK
from infrastructure.cli import processes
from tests.e2e.pipeline import FAULT_REPORTS, Pipeline, finish, postsave, produce, wait_until
from tests.rabbitmq import PeakReady
from tests.recalculations import DIGEST

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.rabbitmq]

ETAS = 2_000
COUNTDOWNS = 500
BIG_BODY_BYTES = 23 * 1024 * 1024


def resident_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def celery_control(env: dict[str, str], *argv: str) -> str:
    done = subprocess.run(
        [*processes.celery_command("control"), *argv, "--timeout", "5"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


@pytest.fixture
def hostile(pg_url: str, amqp_url: str, tmp_path: Path) -> Iterator[Pipeline]:
    """The digest over parts of 250 bars, without `faulty`'s watch of the in-flight bound:
    the hostile messages are not postsave's, and a publisher may send as many as it likes."""
    pipeline = Pipeline(pg_url, amqp_url, tmp_path, recalculation=DIGEST, part_size=250)
    yield pipeline
    pipeline.stop()


def test_what_postsave_would_not_send_is_refused_and_real_work_flows(hostile: Pipeline) -> None:
    """Future etas and countdowns (held unacknowledged by a worker, they kept real events in
    flight), Celery's `celery.starmap` (a worker busy for a minute), a 23 MB body (hundreds of
    MB resident in the worker), pickle, and links to other tasks: each refused in one ERROR
    line, none held by the worker, and the same worker then applies real work."""
    use_cases.create_bars(hostile.container.uow(), 2, count=250)
    worker = hostile.start_worker()
    hostile.wait_for_log("ready.", count=1)
    resident_before = resident_mib(worker.pid)
    app = hostile.app
    later = datetime.now(UTC) + timedelta(hours=1)
    for event_id in range(1, ETAS + 1):
        app.send_task(RECALC_TASK, args=(event_id,), queue=RECALC_QUEUE, eta=later)
    for event_id in range(1, COUNTDOWNS + 1):
        app.send_task(RECALC_TASK, args=(event_id,), queue=RECALC_QUEUE, countdown=3600)
    burn = signature(RECALC_TASK, app=app)
    app.send_task("celery.starmap", args=(burn, [[n] for n in range(100_000)]), queue=RECALC_QUEUE)
    app.send_task(RECALC_TASK, args=(1,), queue=RECALC_QUEUE, link=burn.clone(args=(2,)))
    big = json.dumps([[1, "x" * BIG_BODY_BYTES], {}, {}]).encode()
    with app.connection_for_write() as connection:
        producer = connection.Producer()
        for body, content_type, encoding in (
            (big, "application/json", "utf-8"),
            (b"\x80\x04K\x01.", "application/x-python-serialize", "binary"),  # pickle's 1
        ):
            producer.publish(
                body,
                routing_key=RECALC_QUEUE,
                exchange=RECALC_QUEUE,
                content_type=content_type,
                content_encoding=encoding,
                headers={"task": RECALC_TASK, "id": "hostile"},
            )

    for said, count in (
        ("an eta (", ETAS + COUNTDOWNS),
        ("task 'celery.starmap' is not one of postsave's", 1),
        ("it links other tasks (callbacks)", 1),
        (f"a body of {len(big):,} bytes", 1),
        ("content type 'application/x-python-serialize'", 1),
    ):
        hostile.wait_for_log(said, count=count, timeout_s=120)
    # None is held: a worker that kept the etas would hold them unacknowledged for an hour.
    wait_until(lambda: hostile.broker_depths()[RECALC_QUEUE] == 0, "postsave.recalc empty")
    refused = hostile.logs(tail=None).count("postsave worker: refused a message on postsave.recalc")
    assert refused == ETAS + COUNTDOWNS + 4
    assert "Received task: celery.starmap" not in hostile.logs(tail=None)
    resident_after = resident_mib(worker.pid)

    hostile.start_beat()
    produce(hostile, 60)  # real work, through the same worker
    finish(
        hostile,
        "hostile messages",
        refused=refused,
        worker_resident_mib=f"{resident_before:.0f} -> {resident_after:.0f}",
    )
    assert worker.poll() is None
    # The 23 MB body is read off the socket and dropped undecoded: no lasting growth of the
    # order of the 250 MB that decoding it left behind.
    assert resident_after - resident_before < 100, (resident_before, resident_after)


def test_a_flood_of_ticks_keeps_one_waiting_and_the_relay_as_it_was(faulty: Pipeline) -> None:
    """10,000 ticks at once: the poll queue keeps its newest only (x-max-length 1,
    drop-head), so a flood costs the relay nothing it would not do on beat's ticks."""
    use_cases.create_bars(faulty.container.uow(), 2, count=250)
    produce(faulty, 40)
    peak = PeakReady(faulty.broker_url, POLL_QUEUE, every_s=0.05)
    try:
        for _ in range(10_000):
            faulty.app.send_task(POLL_TASK, queue=POLL_QUEUE)
        waiting = faulty.broker_depths()[POLL_QUEUE]
        faulty.start_worker()
        finish(faulty, "a flood of 10,000 ticks", poll_waiting_after_the_flood=waiting)
    finally:
        peak_waiting = peak.stop()
    assert waiting == 1
    assert peak_waiting <= 1


def test_check_fails_while_no_worker_consumes_a_queue(faulty: Pipeline) -> None:
    """`celery control cancel_consumer` leaves a worker that answers pings and a pipeline
    that stalls: `postsave check` says which queue nobody consumes, until `add_consumer`."""
    use_cases.create_bars(faulty.container.uow(), 2, count=250)
    faulty.start_worker()
    faulty.start_beat()
    produce(faulty, 20)
    faulty.wait_until_drained()
    assert postsave(faulty.env, "check").returncode == 0

    said = celery_control(faulty.env, "cancel_consumer", RECALC_QUEUE)
    assert "no longer consuming from" in said, said
    stalled = postsave(faulty.env, "check")
    produce(faulty, 20, seed=8)
    # The relay runs on and its messages wait, consumed by nobody. (They also expire by their
    # TTL and go out again after each lease, so a single reading may find none: wait for one.)
    readings: list[int] = []

    def waiting_for_a_consumer() -> bool:
        readings.append(faulty.broker_depths()[RECALC_QUEUE])
        return readings[-1] > 0

    wait_until(waiting_for_a_consumer, "recalculation messages waiting, with no consumer")
    waiting = readings[-1]
    celery_control(faulty.env, "add_consumer", RECALC_QUEUE)
    wait_until(lambda: postsave(faulty.env, "check").returncode == 0, "check passing again")
    FAULT_REPORTS.append(f"cancelled consumer: {stalled.stderr.strip()}; {waiting} waiting")
    finish(faulty, "a cancelled consumer, then added again")

    assert stalled.returncode == 1
    assert stalled.stderr.splitlines() == [
        "consumers: no worker consumes postsave.recalc (postsave.recalc 0, postsave.poll 1); "
        "start one (celery -A tasks worker), or `celery -A tasks control add_consumer QUEUE`"
    ]
