"""RabbitMQ's queue depths as the end-to-end tests and the benchmark watch them: ready messages
over AMQP (cheap), or ready plus unacknowledged through rabbitmqctl (an Erlang VM per reading)."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from celery import Celery
from kombu import Connection

from tests.services import rabbitmqctl


class DepthSource(Protocol):
    def broker_depths(self) -> dict[str, int]:
        """Messages RabbitMQ holds per queue, ready plus delivered-but-unacknowledged."""
        ...


def broker_depths(vhost: str, nice: bool = False) -> dict[str, int]:
    """Every queue of `vhost`, ready plus unacknowledged: the AMQP passive declare counts
    ready messages only."""
    out = rabbitmqctl(
        "-q",
        "list_queues",
        "-p",
        vhost,
        "name",
        "messages_ready",
        "messages_unacknowledged",
        "--formatter",
        "json",
        nice=nice,
    )
    return {
        row["name"]: int(row["messages_ready"]) + int(row["messages_unacknowledged"])
        for row in json.loads(out or "[]")
    }


class DepthSampler:
    """Reads the broker's queue depths once a second, on the second.

    Each reading starts a `rabbitmqctl` (an Erlang VM boot, 0.5 s idle, seconds on a busy
    machine), so readings overlap instead of queueing behind each other: a slow reading never
    stretches the cadence."""

    def __init__(self, source: DepthSource, overlap: int = 6) -> None:
        self._source = source
        self._pool = ThreadPoolExecutor(max_workers=overlap, thread_name_prefix="depths")
        self._readings: list[tuple[float, Future[dict[str, int]]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.started_at = 0.0

    def start(self) -> None:
        self.started_at = time.monotonic()
        self._thread.start()

    def _run(self) -> None:
        tick = self.started_at
        while not self._stop.is_set():
            self._readings.append((tick, self._pool.submit(self._source.broker_depths)))
            tick += 1.0
            self._stop.wait(max(tick - time.monotonic(), 0.0))

    def between(self, start: float, end: float) -> list[dict[str, int]]:
        """The readings scheduled in [start, end) (monotonic clock), waiting for their results."""
        return [f.result(60) for tick, f in list(self._readings) if start <= tick < end]

    def done_since(self, start: float) -> list[dict[str, int]]:
        """The readings scheduled from `start` on that have their result, without waiting."""
        return [f.result(0) for tick, f in list(self._readings) if tick >= start and f.done()]

    def stop(self) -> list[dict[str, int]]:
        self._stop.set()
        if self._thread.is_alive():  # never started (setup failed) or already stopped
            self._thread.join(10)
        self._pool.shutdown(wait=True)
        return [f.result(0) for _, f in self._readings]


def ready_in(channel: Any, queue: str) -> int:
    """Messages ready in `queue` (a passive declare: unacknowledged ones are not counted)."""
    return int(channel.queue_declare(queue, passive=True)[1])


def ready(amqp_url: str, queue: str) -> int:
    with Connection(amqp_url) as connection:
        return ready_in(connection.default_channel, queue)


def purge(amqp_url: str, queue: str) -> None:
    with Connection(amqp_url) as connection:
        connection.default_channel.queue_purge(queue)


def purge_app_queues(app: Celery) -> None:
    """Declare and empty every queue the app routes to."""
    with app.connection_for_write() as connection:
        # Over a broker list, each node in turn until one answers.
        retries = max(len(connection.alt), 1) - 1
        connection.ensure_connection(max_retries=retries, interval_start=0)
        channel = connection.default_channel
        for queue in app.conf.task_queues:
            queue(channel).declare()
            queue(channel).purge()


class ReadyWatch:
    """`ready()` on a connection kept open: cheap enough to poll every 10 ms."""

    def __init__(self, amqp_url: str, queue: str) -> None:
        self.amqp_url = amqp_url
        self.queue = queue
        self._connection: Connection | None = None

    def ready(self) -> int:
        if self._connection is None:
            self._connection = Connection(self.amqp_url)
        return ready_in(self._connection.default_channel, self.queue)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.release()
            self._connection = None


class PeakReady:
    """The highest number of ready messages `queue` held, polled four times a second."""

    def __init__(self, amqp_url: str, queue: str, every_s: float = 0.25) -> None:
        self._watch = ReadyWatch(amqp_url, queue)
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peak = 0
        self.samples = 0
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            try:
                self.peak = max(self.peak, self._watch.ready())
                self.samples += 1
            except Exception:  # noqa: BLE001 - the broker may be down on purpose
                self._watch.close()

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        self._watch.close()
        return self.peak
