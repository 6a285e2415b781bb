"""Faults with real processes: kill, crash, restart and flood; nothing lost, nothing twice.

The workers run the order-sensitive digest recalculation (tests.recalculations) over parts of
250 bars. Each scenario prints its counts (`pytest -s` shows them) and ends with the outbox
drained, no dead events, every bar holding the digest of the one order of events after its
creation, and verify's replay agreeing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from domain import use_cases
from infrastructure.broker.names import POLL_QUEUE, RECALC_QUEUE
from infrastructure.cli import processes
from tests.e2e.pipeline import FAULT_REPORTS, Pipeline, finish, produce, wait_until
from tests.e2e.rabbitmq_node import OWN_NODE, RabbitMQNode
from tests.rabbitmq import DepthSampler

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.rabbitmq]


def test_a_worker_killed_while_holding_events_loses_none(faulty: Pipeline) -> None:
    use_cases.create_bars(faulty.container.uow(), 3, count=1000)  # four parts: passes to make
    produce(faulty, 300)
    doomed = faulty.start_worker("doomed")
    faulty.start_beat()
    faulty.wait_until_processed(20)
    in_hand, behind = faulty.in_hand(), faulty.parts_behind()
    processes.kill(doomed)  # SIGKILL the main process and its pool children
    killed_at = time.monotonic()
    assert in_hand > 0  # the kill met events dispatched and not yet applied ...
    assert behind > 0  # ... and parts with passes to make for them
    faulty.started.remove(doomed)
    faulty.start_worker("survivor")
    finish(faulty, "SIGKILL worker", killed_at, in_hand=in_hand, parts_behind=behind)


def test_a_poller_crash_between_publish_and_commit_loses_nothing(
    faulty: Pipeline, tmp_path: Path
) -> None:
    use_cases.create_bars(faulty.container.uow(), 2, count=100)
    produce(faulty, 120)
    # A real relay in its own process, killed in the crash window of every relay: after the
    # broker confirmed the messages, before the transaction marking them dispatched commits.
    script = textwrap.dedent(
        """
        import os
        from domain.relay import relay_once
        from infrastructure.bootstrap import Container
        from infrastructure.broker.dispatcher import CeleryDispatcher

        class CrashAfterPublish(CeleryDispatcher):
            def dispatch(self, event_ids, expires_in_s):
                super().dispatch(event_ids, expires_in_s)
                print(len(event_ids), flush=True)
                os._exit(9)

        container = Container()
        dispatcher = CrashAfterPublish(container.celery_app)
        relay_once(container.uow(), dispatcher, container.settings.relay_limits)
        """
    )
    crashed = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, **faulty.env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert crashed.returncode == 9, crashed.stderr
    published = int(crashed.stdout)
    assert published == faulty.batch_size
    stats = faulty.stats()
    assert (stats.in_flight, stats.processed) == (0, 0)  # nothing was marked dispatched
    assert faulty.queue_depths()[RECALC_QUEUE] == published  # but the broker has them
    restarted_at = time.monotonic()
    faulty.start_worker()
    faulty.start_beat()
    finish(faulty, "poller crash after publish", restarted_at, published_before_crash=published)


@OWN_NODE
def test_a_rabbitmq_restart_with_events_in_flight_loses_nothing(
    faulty_on_own_node: Pipeline, own_rabbitmq: RabbitMQNode
) -> None:
    faulty = faulty_on_own_node
    use_cases.create_bars(faulty.container.uow(), 2, count=750)
    produce(faulty, 300)
    faulty.start_worker()
    faulty.start_beat()
    faulty.wait_until_processed(20)
    in_hand = faulty.in_hand()
    own_rabbitmq.ctl("stop_app")
    stopped_at = time.monotonic()
    assert in_hand > 0
    try:
        produce(faulty, 60, seed=8)  # the application keeps saving while the broker is down
        faulty.wait_for_log("Connection to broker lost", count=1)  # the worker met the outage
    finally:
        own_rabbitmq.ctl("start_app")
    finish(faulty, "RabbitMQ restart", stopped_at, in_hand=in_hand)


def test_terminated_database_connections_lose_nothing(faulty: Pipeline) -> None:
    use_cases.create_bars(faulty.container.uow(), 2, count=750)
    produce(faulty, 300)
    faulty.start_worker()
    faulty.start_beat()
    faulty.wait_until_processed(10)
    admin = create_engine(faulty.database_url, isolation_level="AUTOCOMMIT")
    terminated, in_hand = 0, []
    first_at = time.monotonic()
    try:
        with admin.connect() as connection:
            for _ in range(3):
                in_hand.append(faulty.in_hand())
                # Each backend waited for until it has exited (10 s at most): its last message
                # is then on every client's socket, this test's own pool included.
                terminated += len(
                    connection.execute(
                        text(
                            "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                        )
                    ).all()
                )
                # Until the pipeline has reconnected and applied more: the next round meets
                # live connections again.
                faulty.wait_until_processed(faulty.stats().processed + 1)
    finally:
        admin.dispose()
    assert terminated > 0
    assert min(in_hand) > 0  # every round of terminations met events in hand
    finish(
        faulty,
        "pg_terminate_backend",
        first_at,
        connections_terminated=terminated,
        in_hand=in_hand,
    )


def test_two_beats_and_three_workers_on_different_pools_apply_each_event_once(
    faulty: Pipeline,
) -> None:
    use_cases.create_bars(faulty.container.uow(), 2, count=500)
    faulty.start_beat("beat-a")
    faulty.start_beat("beat-b")  # started by mistake
    faulty.start_worker("prefork", pool="prefork", concurrency=2)
    faulty.start_worker("threads", pool="threads", concurrency=4)
    faulty.start_worker("solo", pool="solo", concurrency=1)
    produce(faulty, 600)
    finish(faulty, "2 beats, 3 workers")


def test_a_sigterm_hands_back_or_finishes_the_work_in_hand(faulty: Pipeline) -> None:
    use_cases.create_bars(faulty.container.uow(), 3, count=1000)
    produce(faulty, 300)
    worker = faulty.start_worker("leaving")
    faulty.start_beat()
    faulty.wait_until_processed(20)
    in_hand = faulty.in_hand()
    worker.send_signal(signal.SIGTERM)
    signalled_at = time.monotonic()
    assert in_hand > 0
    assert worker.wait(60) == 0  # a warm shutdown
    faulty.started.remove(worker)
    faulty.start_worker("arriving")
    finish(faulty, "SIGTERM worker", signalled_at, in_hand=in_hand)


def test_garbage_messages_are_dropped_and_the_worker_stays_up(faulty: Pipeline) -> None:
    use_cases.create_bars(faulty.container.uow(), 2, count=20)
    worker = faulty.start_worker()
    for bad in ("abc", -1, 0, None, 1.5, True, [1], {"id": 1}, 10**12):
        faulty.deliver(bad)
    app = faulty.app
    app.send_task("recalculate_bars", args=(), queue=RECALC_QUEUE)
    app.send_task("recalculate_bars", args=(1, 2), queue=RECALC_QUEUE)
    app.send_task("recalculate_bars", kwargs={"nope": 1}, queue=RECALC_QUEUE)
    app.send_task("no_such_task", args=(1,), queue=RECALC_QUEUE)
    app.send_task("prune_outbox", args=("7d",), queue=RECALC_QUEUE)
    app.send_task("prune_outbox", kwargs={"older_than": 0}, queue=RECALC_QUEUE)
    with app.connection_for_write() as connection:
        producer = connection.Producer()
        producer.publish(
            b"\x80\x04not json at all",
            routing_key=RECALC_QUEUE,
            exchange=RECALC_QUEUE,
            content_type="application/json",
            content_encoding="utf-8",
            headers={"task": "recalculate_bars", "id": "garbage-1"},
        )
        producer.publish(
            {"args": [1]},
            routing_key=RECALC_QUEUE,
            exchange=RECALC_QUEUE,
            serializer="pickle",
            headers={"task": "recalculate_bars", "id": "pickled-1"},
        )
    faulty.wait_for_log("dropped a m", count=14)  # by the tasks: postsave's, malformed
    # By admission, before any task: another task's name, a body not JSON, pickle.
    faulty.wait_for_log("postsave worker: refused a message on postsave.recalc", count=3)
    faulty.wait_until_queues_empty()
    assert worker.poll() is None, faulty.logs()
    faulty.start_beat()
    produce(faulty, 30)  # real work still flows through the same worker
    finish(faulty, "garbage messages")
    assert worker.poll() is None


def test_the_broker_stays_bounded_through_an_outage_and_slow_consumers(
    pg_url: str, amqp_url: str, tmp_path: Path
) -> None:
    """No worker at all while beat ticks, then a relay with nobody consuming recalculations
    while leases end and their events go out again, then a full worker: RabbitMQ holds at
    most 2 ticks and at most the in-flight bound of recalculations, read once a second."""
    bound = 100
    pipeline = Pipeline(
        pg_url,
        amqp_url,
        tmp_path,
        poll_interval_s=0.5,
        lease_seconds=1.5,
        max_in_flight=bound,
        batch_size=50,
    )
    sampler = DepthSampler(pipeline)
    try:
        use_cases.create_bars(pipeline.container.uow(), 2, count=100)
        produce(pipeline, 300)  # a backlog of three bounds
        pipeline.start_beat()  # ticks, but no worker at all
        sampler.start()
        # Three readings, 2 s apart at least, each with a tick waiting: beat sent several.
        wait_until(
            lambda: sum(s[POLL_QUEUE] > 0 for s in sampler.done_since(sampler.started_at)) >= 3,
            "three readings with a tick waiting for a worker",
        )
        relay_started = time.monotonic()
        relay_only = pipeline.start_worker("relay", queues=[POLL_QUEUE], concurrency=1)

        def leased_again() -> int:
            with pipeline.container.engine.connect() as connection:
                query = text("SELECT count(*) FROM outbox_events WHERE dispatches > 1")
                return int(connection.execute(query).scalar_one())

        # Leases end, nobody consuming recalc: their events are dispatched again.
        wait_until(
            lambda: leased_again() > 0 and len(sampler.done_since(relay_started)) >= 3,
            "events leased again, and three readings meanwhile",
        )
        in_hand, waiting = pipeline.in_hand(), pipeline.stats().pending
        redispatched = leased_again()
        full_started = time.monotonic()
        pipeline.start_worker("full")
        finish(pipeline, "bounded broker")
        outage = sampler.between(sampler.started_at, relay_started)
        relayed = sampler.between(relay_started, full_started)
        samples = sampler.stop()
        peak = {q: max(s[q] for s in samples) for q in (POLL_QUEUE, RECALC_QUEUE)}
        FAULT_REPORTS.append(
            f"bounded broker: {len(samples)} samples, peak depth {peak} "
            f"(bound {bound} recalc, 2 poll); outage peak "
            f"{max(s[RECALC_QUEUE] for s in outage)}; relay-only peak "
            f"{max(s[RECALC_QUEUE] for s in relayed)}; events leased again {redispatched}, "
            f"in hand {in_hand}, waiting {waiting}"
        )
        assert relay_only.poll() is None
        assert all(s[POLL_QUEUE] <= 2 for s in samples), samples
        assert all(s[RECALC_QUEUE] <= bound for s in samples), samples
        assert max(s[RECALC_QUEUE] for s in relayed) > 0  # the relay did dispatch meanwhile
        assert 0 < in_hand <= bound  # work in hand, up to the bound ...
        assert waiting > 0  # ... and more waiting behind it in the outbox
    finally:
        sampler.stop()
        pipeline.stop()
