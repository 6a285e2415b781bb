"""postsave on a replicated broker: a three-node RabbitMQ cluster of the tests' own, quorum queues
(POSTSAVE_QUEUE_TYPE=quorum) and a broker list (POSTSAVE_BROKER_URL=url1;url2;url3).

The node that leads postsave.recalc dies with events in hand; a broker list whose first node
is down; a switch from classic to quorum queues; a message that reaches the quorum queue's
delivery limit. Each test has a vhost of its own on the cluster, which starts once for them all."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from amqp.exceptions import MessageNacked
from kombu import Connection, Queue
from sqlalchemy import text

from domain import use_cases
from infrastructure.broker.dispatcher import BatchConfirms
from infrastructure.broker.names import POLL_QUEUE, RECALC_QUEUE, RECALC_TASK
from infrastructure.broker.queues import QUORUM_DELIVERY_LIMIT
from infrastructure.cli import processes
from tests.e2e.pipeline import FAULT_REPORTS, Pipeline, finish, postsave, produce, wait_until
from tests.e2e.rabbitmq_cluster import OWN_CLUSTER, ClusterDepths, RabbitMQCluster, running_cluster
from tests.e2e.rabbitmq_node import free_port
from tests.rabbitmq import DepthSampler, PeakReady
from tests.recalculations import DIGEST, STEADY_DIGEST

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.rabbitmq, OWN_CLUSTER]
EX_CONFIG = 78
CELERY_ROOT_WARNING = re.compile(
    r"^\S*platforms\.py:\d+: SecurityWarning:.*?_warn_or_raise_security_error\(.*?\n", re.S | re.M
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQCluster]:
    with running_cluster(tmp_path_factory.mktemp("rabbitmq-cluster")) as started:
        yield started


def quorum_pipeline(pg_url: str, broker_url: str, tmp_path: Path, **options: Any) -> Pipeline:
    """tests/e2e/conftest.py's faulty pipeline (passes of 5 events, the order-sensitive digest
    over parts of 250 bars) on quorum queues, with an in-flight bound the broker's depth is
    held to, and leases longer than a failover: the messages the broker replicated, not the
    outbox's leases, are to carry the work over."""
    settings: dict[str, Any] = {
        "queue_type": "quorum",
        "poll_interval_s": 0.2,
        "lease_seconds": 10.0,
        "max_in_flight": 40,
        "batch_size": 20,
        "coalesce_limit": 5,
        "recalculation": DIGEST,
        "part_size": 250,
    }
    return Pipeline(pg_url, broker_url, tmp_path, **{**settings, **options})


def database_now(pipeline: Pipeline) -> datetime:
    """The database's clock, which stamps every dispatch."""
    with pipeline.container.engine.connect() as connection:
        return connection.execute(text("SELECT clock_timestamp()")).scalar_one()


def sent_since(pipeline: Pipeline, moment: datetime) -> tuple[int, int]:
    """Events whose message the relay sent after `moment`, and those of them applied: work
    that went through the broker as it was from then on."""
    with pipeline.container.engine.connect() as connection:
        query = text(
            "SELECT count(*), count(applied_at) FROM outbox_events WHERE dispatched_at > :moment"
        )
        sent, applied = connection.execute(query, {"moment": moment}).one()
    return int(sent), int(applied)


def redispatched(pipeline: Pipeline) -> int:
    """Events the relay sent more than one message for: their lease ended first."""
    with pipeline.container.engine.connect() as connection:
        query = text("SELECT count(*) FROM outbox_events WHERE dispatches > 1")
        return int(connection.execute(query).scalar_one())


def queue_types(cluster: RabbitMQCluster, vhost: str) -> set[object]:
    """The types of postsave's two queues (None for one that does not exist)."""
    queues = cluster.queues(vhost)
    return {queues.get(name, {}).get("type") for name in (POLL_QUEUE, RECALC_QUEUE)}


def redacted(url: str) -> str:
    return url.replace(":guest@", ":***@")


def broker_line(check: subprocess.CompletedProcess[str]) -> str:
    [line] = [line for line in check.stdout.splitlines() if line.startswith("broker: ")]
    return line


def test_a_broker_list_whose_first_node_is_down_serves_check_commits_and_workers(
    pg_url: str, cluster: RabbitMQCluster, tmp_path: Path
) -> None:
    vhost = cluster.add_vhost()
    closed = f"amqp://guest:guest@127.0.0.1:{free_port()}/{vhost}"  # nothing listens there
    pipeline = quorum_pipeline(pg_url, f"{closed};{cluster.broker_url(vhost)}", tmp_path)
    try:
        use_cases.create_bars(pipeline.container.uow(), 2, count=300)
        pipeline.start_worker()
        pipeline.start_beat()
        created = postsave(pipeline.env, "foo", "create", "--amount", "7", "--count", "40")
        assert created.returncode == 0, created.stderr
        started = time.monotonic()
        completed = postsave(pipeline.env, "foo", "complete", *created.stdout.split())
        complete_s = time.monotonic() - started
        # The commit's nudge went to the next node: no "broker refused the relay's nudge".
        assert (completed.returncode, completed.stderr) == (0, ""), completed.stderr
        finish(
            pipeline,
            "broker list whose first node is down",
            started,
            foo_complete_s=round(complete_s, 1),
        )
        check = postsave(pipeline.env, "check")
    finally:
        pipeline.stop()
    assert check.returncode == 0, check.stdout + check.stderr
    line = broker_line(check)
    FAULT_REPORTS.append(f"first node down: {line}")
    live = cluster.live()
    assert line.startswith(f"broker: ok, {len(live)} of {len(cluster.nodes) + 1} nodes answered: ")
    assert f"{redacted(closed)}: " in line  # the node that did not answer, and what it said
    for node in live:
        assert f"{redacted(node.url(vhost))} answered" in line


def test_switching_from_classic_to_quorum_queues(
    pg_url: str, cluster: RabbitMQCluster, tmp_path: Path
) -> None:
    vhost = cluster.add_vhost()
    url = cluster.broker_url(vhost)
    # A deployment before the switch: its queues, classic.
    classic = Pipeline(pg_url, url, tmp_path, queue_type="classic")
    quorum_env = {**classic.env, "POSTSAVE_QUEUE_TYPE": "quorum"}
    classic.stop()
    assert cluster.queues(vhost)[RECALC_QUEUE]["type"] == "classic"

    refused_log = tmp_path / "worker-refused.log"
    refused = processes.start_worker(quorum_env, refused_log, name="refused")
    try:
        code = refused.wait(60)
    finally:
        processes.kill(refused)
    said = refused_log.read_text(errors="replace")
    assert code == EX_CONFIG, said
    assert "Traceback" not in said
    # One line, postsave's; Celery warns before it when it runs as root.
    [line] = CELERY_ROOT_WARNING.sub("", said).strip().splitlines()
    assert line.startswith("postsave worker: queue postsave.")
    assert "POSTSAVE_QUEUE_TYPE=quorum" in line
    assert "delete postsave's queues with every worker stopped and the queues empty" in line

    # What the line says to do: with every worker stopped and the queues empty, delete them.
    queues = cluster.queues(vhost)
    assert [queues[name]["messages_ready"] for name in (POLL_QUEUE, RECALC_QUEUE)] == [0, 0]
    cluster.delete_queues([POLL_QUEUE, RECALC_QUEUE], vhost)

    worker = processes.start_worker(quorum_env, tmp_path / "worker-quorum.log", name="quorum")
    pipeline: Pipeline | None = None
    try:
        # The worker declares the queues, quorum this time, before anything else does.
        wait_until(lambda: queue_types(cluster, vhost) == {"quorum"}, "quorum queues declared")
        pipeline = Pipeline(pg_url, url, tmp_path, queue_type="quorum")
        pipeline.started.append(worker)
        use_cases.create_bars(pipeline.container.uow(), 3, count=200)
        pipeline.start_beat()
        produce(pipeline, 100)
        finish(pipeline, "classic -> quorum: the worker after the queues' deletion")
        queues = cluster.queues(vhost)
        consumers = cluster.ctl(
            "list_consumers", "-p", vhost, "queue_name", "prefetch_count", "--no-table-headers"
        )
        channels = cluster.ctl(
            "list_channels",
            "vhost",
            "consumer_count",
            "prefetch_count",
            "global_prefetch_count",
            "--no-table-headers",
        )
        exchanges = cluster.ctl("list_exchanges", "-p", vhost, "name", "--no-table-headers")
        pipeline.assert_processes_alive()
    finally:
        if pipeline is not None:
            pipeline.stop()
        processes.stop(worker)
    assert not [name for name in queues if name.startswith("celery_delayed")], sorted(queues)
    assert not [name for name in exchanges.split() if name.startswith("celery_delayed")]
    assert queue_types(cluster, vhost) == {"quorum"}
    # Per-consumer prefetch: one message per pool process, set on the consumer, none global.
    assert f"{RECALC_QUEUE}\t2" in consumers.splitlines(), consumers
    consuming = [
        row.split("\t")
        for row in channels.splitlines()
        if row.startswith(f"{vhost}\t") and row.split("\t")[1] != "0"
    ]
    assert consuming, channels
    assert all(row[3] == "0" for row in consuming), channels
    FAULT_REPORTS.append(
        f"classic -> quorum: refused with exit {code}: {line!r}; then queues "
        f"{sorted(queues)}, consumer channels (vhost, consumers, prefetch, global) {consuming}"
    )


def test_a_message_past_the_delivery_limit_is_dropped_and_the_lease_sends_another(
    pg_url: str, cluster: RabbitMQCluster, tmp_path: Path
) -> None:
    """What a worker that dies holding a message, again and again, does to it: each death
    returns it to the queue (the broker counts a delivery); past QUORUM_DELIVERY_LIMIT the
    broker drops it. The event waits in the outbox until its lease ends; the relay then sends
    a fresh message, which a healthy worker applies, once."""
    vhost = cluster.add_vhost()
    pipeline = quorum_pipeline(pg_url, cluster.broker_url(vhost), tmp_path, lease_seconds=5.0)
    try:
        use_cases.create_bars(pipeline.container.uow(), 2, count=10)
        [foo] = use_cases.create_foos(pipeline.container.uow(), 5)
        use_cases.complete_foos(pipeline.container.uow(), [foo])
        pipeline.start_worker("relay", queues=[POLL_QUEUE], concurrency=1)
        pipeline.start_beat()
        counts = deliveries_until_dropped(cluster.live()[0].url(vhost))
        [event] = pipeline.events()
        assert (event.state, event.dispatches, event.applied_at) == ("dispatched", 1, None)
        dropped_at = time.monotonic()
        wait_until(lambda: pipeline.events()[0].dispatches == 2, "a second message", 30)
        resent_s = time.monotonic() - dropped_at
        pipeline.start_worker("recalc", queues=[RECALC_QUEUE])
        finish(
            pipeline,
            "a message past the quorum delivery limit",
            dropped_at,
            deliveries=len(counts),
            resent_after_s=round(resent_s, 1),
        )
        [event] = pipeline.events()
    finally:
        pipeline.stop()
    assert event.dispatches == 2
    # The broker delivered it once, then once per return up to the limit, and no more.
    assert counts == list(range(QUORUM_DELIVERY_LIMIT + 1))
    FAULT_REPORTS.append(
        f"delivery limit {QUORUM_DELIVERY_LIMIT}: delivered {len(counts)} times "
        f"(x-delivery-count {counts[0]}..{counts[-1]}), then dropped; "
        f"the relay sent a fresh message {resent_s:.1f} s later (lease 5 s)"
    )


def deliveries_until_dropped(url: str, timeout_s: float = 30.0) -> list[int | None]:
    """Take the recalculation message and close the channel without acknowledging it, as a
    worker killed while holding it would, until the broker stops delivering it: the
    x-delivery-count header of each delivery (0 on the first)."""
    counts: list[int | None] = []
    deadline = time.monotonic() + timeout_s
    gone_since: float | None = None
    with Connection(url) as connection:
        while time.monotonic() < deadline:
            channel = connection.channel()
            try:
                message = channel.basic_get(RECALC_QUEUE, no_ack=False)
            finally:
                channel.close()  # the broker returns what the channel held
            if message is not None:
                assert message.headers["task"] == RECALC_TASK
                counts.append(message.headers.get("x-delivery-count"))
                gone_since = None
                continue
            if counts:  # a return takes a moment: gone for a second is dropped
                gone_since = gone_since or time.monotonic()
                if time.monotonic() - gone_since > 1.0:
                    return counts
            time.sleep(0.02)
    raise AssertionError(f"still delivered after {len(counts)} deliveries: {counts}")


def test_the_relays_batch_waits_for_the_confirms_of_a_quorum_queue(
    cluster: RabbitMQCluster,
) -> None:
    """On quorum queues the relay's dispatcher waits once per batch for the broker's confirms
    (dispatcher.BatchConfirms): a batch the broker takes passes, one it refuses raises. Here
    the refusal is a queue's that rejects publishes once it is over its length (a quorum
    queue finds itself over it after the fact, so the first batch gets in)."""
    vhost = cluster.add_vhost()
    arguments = {"x-queue-type": "quorum", "x-max-length": 1, "x-overflow": "reject-publish"}
    with Connection(cluster.live()[0].url(vhost)) as connection:
        channel = connection.channel()
        Queue("full", queue_arguments=arguments)(channel).declare()
        confirms = BatchConfirms(channel)
        producer = connection.Producer(channel)

        def batch() -> None:
            for number in range(3):
                producer.publish({"n": number}, routing_key="full", retry=False)
            confirms.wait(3, timeout_s=10)

        batch()
        assert (confirms.confirmed, confirms.nacked) == (3, 0)
        with pytest.raises(MessageNacked):
            batch()
        assert confirms.nacked > 0


def test_killing_the_node_that_leads_the_recalculation_queue_loses_nothing(
    pg_url: str, cluster: RabbitMQCluster, tmp_path: Path
) -> None:
    """The relay, beat, the worker and the application all connect to the list's first node,
    which leads postsave's queues; SIGKILL it with events in hand. The messages survive on the
    other two, a new leader takes over, and every process moves on to the next node."""
    vhost = cluster.add_vhost()
    # 1 ms a bar: the 200 events take 40 passes of about 0.3 s on each part, so the kill, a
    # second or two in, meets events not yet applied however fast the machine.
    pipeline = quorum_pipeline(
        pg_url, cluster.broker_url(vhost), tmp_path, recalculation=STEADY_DIGEST
    )
    # Not pipeline.watch_ready(), whose peak `finish` holds to the bound: a failover hands
    # back the deliveries whose acks died with the leader, messages of events already applied,
    # so the broker may briefly hold more than the bound. Measured and reported instead.
    ready = PeakReady(pipeline.broker_url, RECALC_QUEUE)
    depths = ClusterDepths(cluster, vhost)
    sampler = DepthSampler(depths)
    try:
        assert len(cluster.members_of(RECALC_QUEUE, vhost)) == len(cluster.live()) == 3
        use_cases.create_bars(pipeline.container.uow(), 2, count=500)
        produce(pipeline, 200)
        pipeline.start_worker()
        pipeline.start_beat()
        pipeline.wait_until_processed(20)
        leader = cluster.leader_of(RECALC_QUEUE, vhost)
        assert leader is cluster.nodes[0]  # declared there: the queue's leader is local to it
        out, unapplied = pipeline.messages_out()
        sampler.start()  # for the failover: each reading boots an Erlang VM
        leader.kill()
        killed_at, killed_at_db = time.monotonic(), database_now(pipeline)
        # The kill met messages out and events not yet applied, which only passes that those
        # messages lend (or their own, once the bound has room) will apply.
        assert out > 0 and unapplied > 0
        # The application keeps saving: each commit nudges the relay through the broker list,
        # whose first node (the one every connection had chosen) is the one that died.
        produce(pipeline, 40, seed=8)
        # New work: relayed after the kill (through the new leader, which confirmed it), and
        # applied.
        relayed_s = None
        while (progress := sent_since(pipeline, killed_at_db))[1] == 0:
            if progress[0] and relayed_s is None:
                relayed_s = time.monotonic() - killed_at
            assert time.monotonic() - killed_at < 90, f"no new work applied\n{pipeline.logs()}"
            time.sleep(0.05)
        new_work_s = time.monotonic() - killed_at
        relayed_s = new_work_s if relayed_s is None else relayed_s
        time.sleep(3)  # the first batches the relay sends after the failover, too
        samples = sampler.stop()
        new_leader = cluster.leader_of(RECALC_QUEUE, vhost)
        use_cases.create_bars(pipeline.container.uow(), 5)  # bars created after the fault too
        produce(pipeline, 10, seed=9)
        assert pipeline.container.nudge_problem() is None  # the latest nudge got through
        check = postsave(pipeline.env, "check")
        finish(
            pipeline,
            "quorum queue leader's node SIGKILLed",
            killed_at,
            messages_out=out,
            unapplied=unapplied,
            relayed_s=round(relayed_s, 1),
            new_work_applied_s=round(new_work_s, 1),
            redispatched=redispatched(pipeline),
        )
    finally:
        peak_ready = ready.stop()
        sampler.stop()
        pipeline.stop()
    assert new_leader is not leader
    assert check.returncode == 0, check.stdout + check.stderr
    assert broker_line(check).startswith("broker: ok, 2 of 3 nodes answered: ")
    assert f"{redacted(leader.url(vhost))}: " in broker_line(check)
    answered = [sample for sample in samples if sample]
    peak = max(sample.get(RECALC_QUEUE, 0) for sample in answered)
    FAULT_REPORTS.append(
        f"quorum leader killed: postsave.recalc bound {pipeline.max_in_flight}, peak ready "
        f"{peak_ready} (polled every 0.25 s), peak ready+unacked {peak} over {len(answered)} "
        f"readings from the kill to 3 s after new work was applied ({depths.failed} "
        f"unanswered); leader {leader.name} -> "
        f"{new_leader.name}; {broker_line(check)}"
    )
    assert len(answered) >= 3, depths.failures
