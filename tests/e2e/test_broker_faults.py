"""Faults of the broker and of the hosts around it, with real processes: RabbitMQ closing its
connections or a channel, clocks that differ between hosts, and a broker that blocks its
publishers. Each heals by itself: nothing lost, nothing twice, the broker's bound held."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from domain import use_cases
from infrastructure.broker.names import POLL_QUEUE, POLL_TASK, RECALC_QUEUE
from tests.e2e.pipeline import FAULT_REPORTS, Pipeline, finish, produce
from tests.e2e.rabbitmq_node import OWN_NODE, RabbitMQNode
from tests.rabbitmq import DepthSampler
from tests.services import rabbitmqctl

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.rabbitmq]
CELERY_LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+: ", re.M)


def vhost_of(pipeline: Pipeline) -> str:
    return unquote(urlparse(pipeline.broker_url).path[1:]) or "/"


def close_connections(vhost: str) -> int:
    """What a node restart in a cluster, a missed heartbeat or an operator does to clients."""
    listed = rabbitmqctl("-q", "list_connections", "pid", "vhost", "--no-table-headers")
    rows = [line.split("\t") for line in listed.splitlines() if line.strip()]
    pids = [pid for pid, connection_vhost in rows if connection_vhost == vhost]
    for pid in pids:
        rabbitmqctl("close_connection", pid, "postsave fault test")
    return len(pids)


@pytest.fixture
def bounded(pg_url: str, amqp_url: str, tmp_path: Path) -> Iterator[Pipeline]:
    """A small in-flight bound, to see whether anything publishes past it."""
    pipeline = Pipeline(
        pg_url,
        amqp_url,
        tmp_path,
        poll_interval_s=0.2,
        # Longer than the whole test takes on a loaded machine (39 s from the close to a
        # drained outbox in one run beside the cluster tests): a lease that ends while its
        # message waits in a worker's prefetch is dispatched again, and the broker then holds
        # both messages for a moment (RabbitMQ expires only messages not yet delivered; the
        # corner in docs/reliability.md, "What the bound means exactly"). Nothing here waits
        # for a lease: RabbitMQ requeues what the closed connections held.
        lease_seconds=60.0,
        max_in_flight=40,
        batch_size=20,
        coalesce_limit=0,
        part_size=100,  # three parts: an event's passes spread over both worker processes
    )
    yield pipeline
    pipeline.stop()


def test_the_pipeline_reconnects_when_rabbitmq_closes_its_connections_or_a_channel(
    bounded: Pipeline,
) -> None:
    use_cases.create_bars(bounded.container.uow(), 2, count=300)
    produce(bounded, 200)
    sampler = DepthSampler(bounded)
    try:
        # One relay process: its dispatcher has reconnected once work moves again, so its next
        # publish after the exchange is gone meets the channel error. (A second relay process
        # whose dispatcher was still to find its connection closed would reopen it, declare
        # the exchange anew, and no publish would ever meet the error.)
        bounded.start_worker("relay", queues=[POLL_QUEUE], concurrency=1)
        bounded.start_worker("recalc", queues=[RECALC_QUEUE])
        bounded.start_beat()
        sampler.start()
        bounded.wait_until_processed(20)

        in_hand = bounded.in_hand()
        closed = close_connections(vhost_of(bounded))
        faulted = time.monotonic()
        assert in_hand > 0
        assert closed >= 3  # the workers' consumers, the relay's dispatcher, beat at least
        produce(bounded, 150, seed=9)  # new work after the broker dropped every client
        # More than were in flight at the close: the relay has published since, reconnected.
        bounded.wait_until_processed(bounded.stats().processed + 50, timeout_s=90)
        reconnected_s = time.monotonic() - faulted

        # A channel error: publishing to an exchange that is gone makes the broker close the
        # relay's transactional channel. py-amqp reopens such a channel, untransacted.
        in_hand_at_channel_error = bounded.in_hand()
        with bounded.app.connection_for_write() as connection:
            connection.default_channel.exchange_delete(RECALC_QUEUE)
        produce(bounded, 100, seed=10)
        bounded.wait_for_log("NotFound", count=1)
        finish(
            bounded,
            "connections and a channel closed by RabbitMQ",
            faulted,
            in_hand=in_hand,
            connections_closed=closed,
            reconnected_s=round(reconnected_s, 1),
        )
        samples = sampler.stop()
    finally:
        sampler.stop()
    peak = max(sample[RECALC_QUEUE] for sample in samples)
    FAULT_REPORTS.append(
        f"connections closed: {len(samples)} samples, peak depth {peak} (bound 40); "
        f"in hand at the channel error {in_hand_at_channel_error}"
    )
    assert len(samples) >= 5
    assert peak <= bounded.max_in_flight, samples


def first_log_time(path: Path) -> datetime:
    match = CELERY_LOG_TIME.search(path.read_text(errors="replace"))
    assert match, path.read_text(errors="replace")[-2000:]
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S")


def test_clocks_that_differ_between_hosts_do_not_stop_the_pipeline(
    pg_url: str, amqp_url: str, tmp_path: Path
) -> None:
    """Beat and the application run 5 s behind the relay's worker, and the relay 10 s behind
    the recalculation worker: more than a tick's expiry, and more than the margin between a
    message's expiry and its lease."""
    pipeline = Pipeline(pg_url, amqp_url, tmp_path, poll_interval_s=0.2, lease_seconds=10.0)
    try:
        use_cases.create_bars(pipeline.container.uow(), 2, count=100)
        produce(pipeline, 150)
        assert pipeline.stats().pending > 0
        started, started_at = datetime.now(), time.monotonic()
        pipeline.start_beat()
        pipeline.start_worker("relay", queues=[POLL_QUEUE], concurrency=1, clock_offset_s=5)
        pipeline.start_worker("recalc", queues=[RECALC_QUEUE], clock_offset_s=15)
        finish(pipeline, "clocks 5 s and 15 s apart (recovered: from the start)", started_at)
        # The shifts were real: each worker logged its start at its own time.
        relay_ahead = (first_log_time(tmp_path / "worker-relay.log") - started).total_seconds()
        recalc_ahead = (first_log_time(tmp_path / "worker-recalc.log") - started).total_seconds()
        assert 4 <= relay_ahead <= 30
        assert 14 <= recalc_ahead <= 40
    finally:
        pipeline.stop()


@OWN_NODE
def test_a_blocked_broker_times_out_the_relay_which_recovers_when_it_unblocks(
    pg_url: str, own_rabbitmq: RabbitMQNode, tmp_path: Path
) -> None:
    pipeline = Pipeline(
        pg_url,
        own_rabbitmq.amqp_url,
        tmp_path,
        poll_interval_s=0.5,
        lease_seconds=10.0,
        broker_timeout_s=2.0,
        coalesce_limit=0,
    )
    try:
        use_cases.create_bars(pipeline.container.uow(), 2, count=100)
        produce(pipeline, 40)
        waiting = pipeline.stats().pending
        # A tick already in the poll queue: the relay starts only once the alarm is on, and
        # publishes into a broker that takes its messages but never confirms them.
        pipeline.app.send_task(POLL_TASK, queue=POLL_QUEUE, routing_key=POLL_QUEUE)
        watermark = own_rabbitmq.ctl("eval", "vm_memory_monitor:get_vm_memory_high_watermark().")
        watermark = watermark.strip()
        assert re.fullmatch(r"[0-9.]+", watermark), watermark  # relative, as set by default
        own_rabbitmq.ctl("set_vm_memory_high_watermark", "0")  # a memory alarm: node-wide
        try:
            blocked_at = time.monotonic()
            pipeline.start_worker()
            pipeline.wait_for_log("relay: broker did not take", count=1, timeout_s=30)
            timed_out_s = time.monotonic() - blocked_at
            stats = pipeline.stats()
            # The relay gave up within its timeout and rolled back: the events wait in the
            # outbox, none is leased to a message the broker never took, no lock is held.
            assert (stats.pending, stats.in_flight) == (waiting, 0)
            assert pipeline.advisory_locks() == 0
        finally:
            own_rabbitmq.ctl("set_vm_memory_high_watermark", watermark)
        unblocked_at = time.monotonic()
        pipeline.start_beat()
        finish(
            pipeline,
            "broker blocked by a memory alarm (recovered: from the alarm's end)",
            unblocked_at,
            relay_timed_out_after_s=round(timed_out_s, 1),
            claimed_when_blocked=waiting,
        )
    finally:
        pipeline.stop()
