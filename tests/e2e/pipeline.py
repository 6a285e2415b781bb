"""A running postsave: real `celery worker` and `celery beat` processes on a real broker."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from sqlalchemy import text

from domain import operations, projection, use_cases
from domain.outbox import OutboxStats
from infrastructure.bootstrap import Container
from infrastructure.broker.names import POLL_QUEUE, RECALC_QUEUE, RECALC_TASK
from infrastructure.cli import processes
from infrastructure.settings import BrokerTls, Settings
from infrastructure.urls import sqlalchemy_database_url
from tests.rabbitmq import PeakReady, broker_depths, purge_app_queues, ready_in
from tests.recalculations import DIGESTS, History
from tests.services import unavailable

# What the fault tests measured, printed at the end of the run (tests/conftest.py).
FAULT_REPORTS: list[str] = []
FAKETIME_LIBRARIES = sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))


def shifted_clock(offset_s: float) -> dict[str, str]:
    """Environment that shifts one process's wall clock by `offset_s` (Debian's faketime);
    its monotonic clock, which timers use, stays true."""
    if not offset_s:
        return {}
    if not FAKETIME_LIBRARIES:
        unavailable("faketime", "libfaketime is not installed (apt-get install faketime)")
    return {
        "LD_PRELOAD": str(FAKETIME_LIBRARIES[0]),
        "FAKETIME": f"{offset_s:+g}s",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_NO_CACHE": "1",
    }


def wait_until(found: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    """Poll `found` until it holds; fail, saying `what` never happened, after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not found():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(0.1)


@dataclass
class Pipeline:
    database_url: str
    broker_url: str
    workdir: Path
    poll_interval_s: float = 0.2
    lease_seconds: float = 10.0
    max_in_flight: int = 1000
    batch_size: int = 100
    max_attempts: int = 10
    coalesce_limit: int = Settings.coalesce_limit
    broker_timeout_s: float = Settings.broker_timeout_s
    retention: str | None = None  # POSTSAVE_RETENTION: beat prunes every prune_interval_s
    recalculation: str = Settings.recalculation  # POSTSAVE_RECALCULATION
    part_size: int = Settings.part_size
    prune_interval_s: float = Settings.prune_interval_s
    queue_type: str = Settings.queue_type  # POSTSAVE_QUEUE_TYPE
    statement_timeout_s: float = Settings.statement_timeout_s
    # The workers' and beat's own database URL, where it is not the application's (a role
    # of their own).
    process_database_url: str | None = None
    broker_tls: BrokerTls | None = None  # amqps://: POSTSAVE_BROKER_CA_FILE and the client's
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)
    ready_watch: PeakReady | None = None

    def __post_init__(self) -> None:
        self.settings = Settings(
            database_url=sqlalchemy_database_url(self.database_url),  # as Settings.from_env
            broker_url=self.broker_url,
            poll_interval_s=self.poll_interval_s,
            lease_seconds=self.lease_seconds,
            max_in_flight=self.max_in_flight,
            batch_size=self.batch_size,
            max_attempts=self.max_attempts,
            coalesce_limit=self.coalesce_limit,
            broker_timeout_s=self.broker_timeout_s,
            recalculation=self.recalculation,
            part_size=self.part_size,
            queue_type=self.queue_type,
            statement_timeout_s=self.statement_timeout_s,
            broker_tls=self.broker_tls,
        )
        self.container = Container(self.settings, nudge=True)  # as an application would
        self.app = self.container.celery_app
        self.purge()
        with self.container.uow() as uow:
            recorded = uow.parts.projection().recalculation
        if recorded != self.recalculation:  # an operator's act, before the first bar here
            projection.start_rebuild(self.container.uow(), self.recalculation)

    @property
    def env(self) -> dict[str, str]:
        return {
            "POSTSAVE_DATABASE_URL": self.process_database_url or self.database_url,
            "POSTSAVE_BROKER_URL": self.broker_url,
            "POSTSAVE_POLL_INTERVAL": str(self.poll_interval_s),
            "POSTSAVE_LEASE_SECONDS": str(self.lease_seconds),
            "POSTSAVE_MAX_IN_FLIGHT": str(self.max_in_flight),
            "POSTSAVE_BATCH_SIZE": str(self.batch_size),
            "POSTSAVE_MAX_ATTEMPTS": str(self.max_attempts),
            "POSTSAVE_COALESCE_LIMIT": str(self.coalesce_limit),
            "POSTSAVE_BROKER_TIMEOUT": str(self.broker_timeout_s),
            "POSTSAVE_PRUNE_INTERVAL": str(self.prune_interval_s),
            "POSTSAVE_RECALCULATION": self.recalculation,
            "POSTSAVE_PART_SIZE": str(self.part_size),
            "POSTSAVE_QUEUE_TYPE": self.queue_type,
            "POSTSAVE_STATEMENT_TIMEOUT": str(self.statement_timeout_s),
            **({} if self.retention is None else {"POSTSAVE_RETENTION": self.retention}),
            **self._tls_env(),
        }

    def _tls_env(self) -> dict[str, str]:
        tls = self.broker_tls
        if tls is None:
            return {}
        files = {"CA_FILE": tls.ca_file, "CERT_FILE": tls.cert_file, "KEY_FILE": tls.key_file}
        return {f"POSTSAVE_BROKER_{key}": path for key, path in files.items() if path}

    def start_worker(
        self, name: str = "w1", clock_offset_s: float = 0.0, **options: object
    ) -> subprocess.Popen[bytes]:
        process = processes.start_worker(
            {**self.env, **shifted_clock(clock_offset_s)},
            self.workdir / f"worker-{name}.log",
            name=name,
            **options,  # type: ignore[arg-type]
        )
        self.started.append(process)
        return process

    def start_beat(
        self, name: str = "beat", clock_offset_s: float = 0.0
    ) -> subprocess.Popen[bytes]:
        process = processes.start_beat(
            {**self.env, **shifted_clock(clock_offset_s)}, self.workdir / f"{name}.log"
        )
        self.started.append(process)
        return process

    def stats(self) -> OutboxStats:
        return operations.outbox_stats(self.container.uow())

    def wait_until_drained(self, timeout_s: float = 120.0) -> OutboxStats:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.assert_processes_alive()
            stats = self.stats()
            if stats.drained:
                return stats
            time.sleep(0.2)
        raise AssertionError(
            f"outbox not drained after {timeout_s}s: {self.stats()}\n{self.logs()}"
        )

    def queue_depths(self) -> dict[str, int]:
        with self.app.connection_for_write() as connection:
            channel = connection.default_channel
            return {queue: ready_in(channel, queue) for queue in (POLL_QUEUE, RECALC_QUEUE)}

    def watch_ready(self) -> None:
        """Track the peak of ready recalculation messages until `finish` reports it."""
        self.ready_watch = PeakReady(self.broker_url, RECALC_QUEUE)

    def broker_depths(self) -> dict[str, int]:
        """Messages RabbitMQ holds per queue, ready plus delivered-but-unacknowledged."""
        depths = broker_depths(unquote(urlparse(self.broker_url).path[1:]) or "/")
        return {queue: depths.get(queue, 0) for queue in (POLL_QUEUE, RECALC_QUEUE)}

    def counts(self) -> dict[str, int]:
        """What the fault tests report: events lost, and bars off the one order (with the
        digest recalculation: an event missed, applied twice or out of order)."""
        stats = self.stats()
        off = []
        if self.recalculation in DIGESTS:
            with self.container.engine.connect() as connection:
                off = History().problems(connection)
        return {
            "events": stats.processed + stats.pending + stats.in_flight + stats.dead,
            "processed": stats.processed,
            "lost": stats.pending + stats.in_flight + stats.dead,
            "bars_off_the_one_order": len(off),
        }

    def parts_behind(self) -> int:
        """Parts not yet through every sequenced event: passes to come, or under way."""
        with self.container.uow() as uow:
            return uow.parts.stats().behind

    def events(self) -> list[Any]:
        with self.container.engine.connect() as connection:
            return list(connection.execute(text("SELECT * FROM outbox_events ORDER BY id")))

    def in_hand(self) -> int:
        """Events dispatched and not yet applied: the work a fault can hit."""
        with self.container.engine.connect() as connection:
            query = text(
                "SELECT count(*) FROM outbox_events"
                " WHERE state = 'dispatched' AND applied_at IS NULL"
            )
            return int(connection.execute(query).scalar_one())

    def messages_out(self) -> tuple[int, int]:
        """Events whose message is out (dispatched), and events not yet applied to every part:
        the messages a broker fault can hit, and the work they drive. Under load most events
        are applied by passes that the messages out lend, before a message of their own."""
        with self.container.engine.connect() as connection:
            query = text(
                "SELECT count(*) FILTER (WHERE state = 'dispatched'),"
                " count(*) FILTER (WHERE applied_at IS NULL AND state <> 'dead')"
                " FROM outbox_events"
            )
            out, unapplied = connection.execute(query).one()
            return int(out), int(unapplied)

    def advisory_locks(self) -> int:
        """Advisory locks held in this database: the relay's, while a pass runs."""
        with self.container.engine.connect() as connection:
            query = text(
                "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
                " WHERE l.locktype = 'advisory' AND d.datname = current_database()"
            )
            return int(connection.execute(query).scalar_one())

    def wait_until_processed(self, at_least: int, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.assert_processes_alive()
            if self.stats().processed >= at_least:
                return
            time.sleep(0.05)
        raise AssertionError(f"fewer than {at_least} processed after {timeout_s}s\n{self.logs()}")

    def wait_until_queues_empty(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.queue_depths()[RECALC_QUEUE] == 0:
                return
            time.sleep(0.2)
        raise AssertionError(f"{RECALC_QUEUE} not empty after {timeout_s}s")

    def deliver(self, event_id: object) -> None:
        """Publish a recalculate_bars message by hand, as a redelivery would."""
        self.app.send_task(RECALC_TASK, args=(event_id,), queue=RECALC_QUEUE)

    def purge(self) -> None:
        purge_app_queues(self.app)

    def assert_processes_alive(self) -> None:
        dead = [p.args for p in self.started if p.poll() is not None]
        assert not dead, f"processes died: {dead}\n{self.logs()}"

    def wait_for_log(self, text: str, count: int, timeout_s: float = 30.0) -> None:
        """Wait until the worker logs show `text` at least `count` times."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.logs(tail=None).count(text) >= count:
                return
            time.sleep(0.2)
        raise AssertionError(f"fewer than {count} log lines with {text!r}\n{self.logs()}")

    def logs(self, tail: int | None = 3000) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-(tail or 0) :]}"
            for path in sorted(self.workdir.glob("*.log"))
        )

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM to every process at once, then wait for them: their warm shutdowns overlap
        instead of adding up. A process still running after `timeout_s` is SIGKILLed."""
        if self.ready_watch is not None:
            self.ready_watch.stop()
        running = [p for p in reversed(self.started) if p.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for process in running:
            try:
                process.wait(max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                processes.kill(process)
        self.started.clear()
        self.container.close()


POSTSAVE = str(Path(sys.executable).parent / "postsave")


def postsave(
    env: dict[str, str], *argv: str, timeout_s: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """The `postsave` command line in a process of its own, as an operator or a script runs
    it, with `env` over this process's environment."""
    return subprocess.run(
        [POSTSAVE, *argv],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def produce(pipeline: Pipeline, foos: int, seed: int = 7) -> list[int]:
    """Completed foos (one event each), with a few revisions and cancellations."""
    rng = random.Random(seed)
    uow = pipeline.container.uow
    ids = use_cases.create_foos(uow(), 0, count=foos)
    for foo_id in ids:
        use_cases.revise_foo(uow(), foo_id, rng.randint(1, 90))  # pending: no event
    for start in range(0, foos, 25):
        use_cases.complete_foos(uow(), ids[start : start + 25])
    for foo_id in rng.sample(ids, foos // 10):
        use_cases.revise_foo(uow(), foo_id, rng.randint(0, 90))
    use_cases.cancel_foos(uow(), rng.sample(ids, foos // 20))
    return ids


def finish(
    pipeline: Pipeline, scenario: str, fault_at: float | None = None, **extra: object
) -> None:
    """Drain, then check and print what every scenario guarantees: nothing lost, nothing
    twice, the invariant; and, where measured, the time from the fault to a drained outbox
    and the peak of ready recalculation messages against the in-flight bound."""
    stats = pipeline.wait_until_drained(timeout_s=180)
    if fault_at is not None:
        extra["recovered_s"] = round(time.monotonic() - fault_at, 1)
    peak = None if pipeline.ready_watch is None else pipeline.ready_watch.stop()
    if peak is not None:
        extra["peak_ready"] = f"{peak} of {pipeline.max_in_flight}"
    counts = pipeline.counts()
    result = pipeline.container.verify()
    order = (
        f", bars off the one order {counts['bars_off_the_one_order']} of {result.bars}"
        if pipeline.recalculation in DIGESTS
        else ""
    )
    FAULT_REPORTS.append(
        f"{scenario}: lost {counts['lost']}{order}, events {counts['events']} {extra or ''}"
    )
    assert peak is None or peak <= pipeline.max_in_flight
    assert stats.dead == 0, pipeline.logs()
    assert counts["lost"] == 0
    assert counts["bars_off_the_one_order"] == 0
    assert result.mismatched == [], pipeline.logs()
