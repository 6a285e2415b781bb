"""Celery's own tools on a running postsave: `celery inspect`, `celery status`, and the task
events that Flower and `celery events` read, from the start and without `enable_events`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import Celery

from domain import use_cases
from infrastructure.broker.names import POLL_QUEUE, POLL_TASK, RECALC_QUEUE, RECALC_TASK
from infrastructure.cli import processes
from tests.e2e.pipeline import Pipeline

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.rabbitmq]
HOST = socket.gethostname()  # what `--hostname=name@%h` expands to
RELAY, BOTH = f"relay@{HOST}", f"both@{HOST}"
WORKERS = f"{RELAY},{BOTH}"  # -d: an answer from each ends the wait
TIMEOUT_S = 20.0


class EventLog:
    """Task events as Flower captures them: Celery's event receiver, on a thread."""

    def __init__(self, app: Celery) -> None:
        self.events: list[dict[str, Any]] = []
        self._connection = app.connection_for_read()
        # Not exclusive: the queue is bound here, before anything happens, so no event is
        # missed while the thread starts; the receiver's own connection then consumes it.
        self._receiver = app.events.Receiver(
            self._connection, handlers={"*": self.events.append}, queue_exclusive=False
        )
        self._receiver.queue(self._connection.default_channel).declare()
        self._thread = threading.Thread(
            target=self._receiver.capture, kwargs={"wakeup": False}, daemon=True
        )
        self._thread.start()

    def wait_for(self, found: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
        deadline = time.monotonic() + TIMEOUT_S
        while not found(list(self.events)):
            assert time.monotonic() < deadline, f"events so far: {self.events}"
            time.sleep(0.1)
        return list(self.events)

    def stop(self) -> None:
        self._receiver.should_stop = True  # seen within a second (its drain timeout)
        self._thread.join(5)
        self._connection.release()


@pytest.fixture
def running(pg_pipeline: Pipeline) -> Iterator[Pipeline]:
    """A relay worker on postsave.poll, a worker without -Q (both queues), and beat."""
    use_cases.create_bars(pg_pipeline.container.uow(), 3, count=5)
    pg_pipeline.start_worker("relay", queues=[POLL_QUEUE], concurrency=1)
    pg_pipeline.start_worker("both", concurrency=1)
    pg_pipeline.start_beat()
    deadline = time.monotonic() + TIMEOUT_S
    while len(pg_pipeline.app.control.ping([RELAY, BOTH], timeout=1.0)) < 2:
        pg_pipeline.assert_processes_alive()
        assert time.monotonic() < deadline, f"workers did not answer\n{pg_pipeline.logs()}"
    yield pg_pipeline


def celery(pipeline: Pipeline, *args: str) -> str:
    """`celery -A tasks ...` with the workers' environment; its stdout."""
    done = subprocess.run(
        processes.celery_command(*args),
        env={**os.environ, **pipeline.env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done.stdout


def test_every_worker_answers_inspect_and_status_and_task_events_flow_from_the_start(
    running: Pipeline,
) -> None:
    """One running postsave shows both: starting its workers and beat is most of the time."""
    every_worker_answers_inspect_and_status(running)
    task_events_flow_from_the_start(running)


def every_worker_answers_inspect_and_status(running: Pipeline) -> None:
    pongs = json.loads(celery(running, "inspect", "ping", "--json", "-d", WORKERS, "-t", "10"))
    queues = json.loads(
        celery(running, "inspect", "active_queues", "--json", "-d", WORKERS, "-t", "10")
    )
    status = celery(running, "status", "-d", WORKERS, "-t", "10")

    assert pongs == {RELAY: {"ok": "pong"}, BOTH: {"ok": "pong"}}
    consumed = {node: sorted(queue["name"] for queue in found) for node, found in queues.items()}
    assert consumed == {RELAY: [POLL_QUEUE], BOTH: [POLL_QUEUE, RECALC_QUEUE]}
    assert f"{RELAY}: OK" in status and f"{BOTH}: OK" in status
    assert "2 nodes online." in status


def task_events_flow_from_the_start(running: Pipeline) -> None:
    log = EventLog(running.app)
    try:
        uow = running.container.uow
        (foo_id,) = use_cases.create_foos(uow(), 7)
        use_cases.complete_foo(uow(), foo_id)
        event_id = running.events()[-1].id

        def sent_for_event(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [
                e
                for e in events
                if e["type"] == "task-sent"
                and e.get("name") == RECALC_TASK
                and e.get("args") == repr((event_id,))
            ]

        sent = sent_for_event(log.wait_for(lambda events: bool(sent_for_event(events))))[0]
        task_id = sent["uuid"]
        wanted = {"task-received", "task-started", "task-succeeded"}

        def of_task(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
            return {e["type"]: e for e in events if e.get("uuid") == task_id}

        def tick_sent(events: list[dict[str, Any]]) -> bool:
            return any(e["type"] == "task-sent" and e.get("name") == POLL_TASK for e in events)

        # beat's ticks are sent by send_task: their task-sent events need no code of ours
        events = log.wait_for(lambda events: wanted <= set(of_task(events)) and tick_sent(events))
    finally:
        log.stop()

    seen = of_task(events)
    assert sent["queue"] == RECALC_QUEUE
    assert seen["task-received"]["name"] == RECALC_TASK
    assert seen["task-received"]["hostname"] == BOTH  # the only worker on postsave.recalc
    assert seen["task-succeeded"]["result"] == "'applied'"
    running.wait_until_drained()
