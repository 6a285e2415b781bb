"""The event producer, run as a subprocess: `python -m bench.harness.producer '<json spec>'`.

Every contender's events come from here: the same foos completed in the same order, one foo per
transaction, by the same number of client threads, through the same SQL (postsave's event row
goes to outbox_events instead of bench_events; `postsave-use-cases` goes through the domain's
use cases instead, as an application does). Closed loop (rate null: as fast as the
clients go) or open loop (a schedule: event i is due at start + i / rate and is committed then,
or at once when the clients are behind; nobody waits for processing). Its own process keeps
the producer's CPU and imports (and postsave's settings, read from the environment) apart from
the bench's. Prints one JSON line: committed, failed, first and last commit (epoch seconds)."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from domain import use_cases
from domain.events import FooCompleted
from infrastructure.bootstrap import Container

Commit = Callable[[int], None]


@dataclass
class Spec:
    kind: str  # postsave | postsave-use-cases | direct | procrastinate | naive | ceiling
    first_foo: int
    count: int
    rate: float | None = None
    threads: int = 1
    dsn: str = ""
    deadline_s: float | None = None  # open loop: events not started by then are not produced


BENCH_EVENT = "INSERT INTO bench_events (foo_id, delta) VALUES (%s, %s) RETURNING id"


def _raw_commit(
    dsn: str,
    after: Callable[[Any, int, int], None] | None,
    hook: str,
    record: Callable[[Any, int, int], int] | None = None,
) -> Commit:
    """Complete a foo and record its event in one transaction, as the legacy save does.

    `hook` is 'inside' (call `after` in the transaction, procrastinate's defer) or 'after'
    (call it once committed, direct's apply_async). `record` writes the event row (a
    bench_events row unless given)."""
    connection = psycopg.connect(dsn, autocommit=True)

    def bench_event(connection: Any, foo_id: int, delta: int) -> int:
        inserted = connection.execute(BENCH_EVENT, (foo_id, delta)).fetchone()
        assert inserted is not None
        return int(inserted[0])

    write_event = record or bench_event

    def commit(foo_id: int) -> None:
        with connection.transaction():
            row = connection.execute(
                "UPDATE foos SET state = 'completed', version = version + 1 "
                "WHERE id = %s AND state = 'pending' RETURNING amount",
                (foo_id,),
            ).fetchone()
            assert row is not None, f"foo {foo_id} is not pending"
            (delta,) = row
            event_id = write_event(connection, foo_id, delta)
            if after is not None and hook == "inside":
                after(connection, event_id, delta)
        if after is not None and hook == "after":
            after(connection, event_id, delta)

    return commit


def _commit_factory(spec: Spec) -> Callable[[], Commit]:
    """One commit function per client thread (each with its own connection)."""
    if spec.kind == "postsave":
        return _postsave_sql(spec.dsn)
    if spec.kind == "postsave-use-cases":
        # As the README tells an application to: settings from POSTSAVE_*, the relay nudged
        # after each commit that wrote events.
        container = Container(nudge=True)

        def postsave() -> Commit:
            with container.engine.connect():
                pass  # connected before the schedule starts, like the SQL clients
            _warm_up(container)
            return lambda foo_id: use_cases.complete_foo(container.uow(), foo_id)

        return postsave
    # The bench's own apps are imported for their kind only: each makes its app from the
    # environment when imported.
    if spec.kind == "direct":
        from bench.harness.apps import direct_apply

        def publish(_connection: Any, event_id: int, delta: int) -> None:
            direct_apply.apply_async((event_id, delta))

        return lambda: _raw_commit(spec.dsn, publish, "after")
    if spec.kind == "procrastinate":
        from bench.harness.job_app import apply_delta

        def defer(connection: Any, event_id: int, delta: int) -> None:
            apply_delta.configure(connection=connection).defer(event_id=event_id, delta=delta)

        return lambda: _raw_commit(spec.dsn, defer, "inside")
    if spec.kind == "naive":
        return lambda: _raw_commit(spec.dsn, None, "after")
    if spec.kind == "ceiling":
        from bench.harness.apps import noop

        return lambda: lambda _foo_id: noop.apply_async()
    raise ValueError(f"unknown producer kind {spec.kind!r}")


def _warm_up(container: Container) -> None:
    """The nudge's broker connection opened before the schedule starts."""
    nudge = container.relay_nudge
    if nudge is not None:
        nudge()
        nudge.flush()


def _postsave_sql(dsn: str) -> Callable[[], Commit]:
    """The same SQL as every contender; the event row is the outbox row that postsave's unit of
    work writes (FooCompleted, from the domain's own event type), and after the commit the
    relay is nudged, as the unit of work does."""
    container = Container(nudge=True)  # only for the nudge: settings from POSTSAVE_*
    nudge = container.relay_nudge

    def outbox_event(connection: Any, foo_id: int, delta: int) -> int:
        event = FooCompleted(foo_id=foo_id, delta=delta)
        inserted = connection.execute(
            "INSERT INTO outbox_events (event_type, payload) VALUES (%s, %s) RETURNING id",
            (event.type_name, Jsonb(event.payload())),
        ).fetchone()
        assert inserted is not None
        return int(inserted[0])

    def after(_connection: Any, _event_id: int, _delta: int) -> None:
        if nudge is not None:
            nudge()

    def client() -> Commit:
        _warm_up(container)
        return _raw_commit(dsn, after, "after", record=outbox_event)

    return client


@dataclass
class Tally:
    committed: int = 0
    failed: int = 0
    first: float | None = None
    last: float | None = None
    error: str | None = None

    @property
    def rate(self) -> float:
        """Commits per second between the first and the last."""
        if not self.first or not self.last or self.last <= self.first:
            return float("nan")
        return (self.committed - 1) / (self.last - self.first)


def produce(spec: Spec) -> Tally:
    make_commit = _commit_factory(spec)
    tally = Tally()
    lock = threading.Lock()
    next_index = [0]
    started = [0.0]
    # The schedule starts when every client has its connection open: the barrier's action
    # runs before any thread is released, so no client ever reads an unset start.
    ready = threading.Barrier(
        spec.threads + 1, action=lambda: started.__setitem__(0, time.monotonic())
    )

    def client() -> None:
        commit = make_commit()
        ready.wait()
        while True:
            with lock:
                index = next_index[0]
                if index >= spec.count:
                    return
                next_index[0] += 1
            if spec.deadline_s is not None and time.monotonic() - started[0] > spec.deadline_s:
                return  # the clients fell behind the schedule: a bounded run, not a backlog
            if spec.rate:
                delay = started[0] + index / spec.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            try:
                commit(spec.first_foo + index)
            except Exception as error:  # noqa: BLE001 - counted: direct loses these events
                with lock:
                    tally.failed += 1
                    tally.error = f"{type(error).__name__}: {error}"[:300]
                continue
            now = time.time()
            with lock:
                tally.committed += 1
                tally.first = now if tally.first is None else min(tally.first, now)
                tally.last = now if tally.last is None else max(tally.last, now)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(spec.threads)]
    for thread in threads:
        thread.start()
    ready.wait()
    for thread in threads:
        thread.join()
    return tally


def main() -> int:
    spec = Spec(**json.loads(sys.argv[1]))
    tally = produce(spec)
    print(json.dumps(tally.__dict__), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
