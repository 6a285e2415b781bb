"""The event producer, run as a subprocess: `python -m bench.harness.producer '<json spec>'`.

Every contender's events come from here: the same foos completed in the same order, one foo per
transaction, by the same number of client threads, through the same SQL (postsave's event row
goes to outbox_events instead of bench_events; `postsave-use-cases` goes through the domain's
use cases instead, as an application does). Closed loop (rate null: as fast as the clients go)
or open loop (event i is due at start + i / rate, committed then or at once when the clients are
behind). Its own process keeps its CPU, imports and settings (POSTSAVE_* from the environment)
apart from the bench's. Prints one JSON line: committed, failed, first and last commit."""

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
Hook = Callable[[Any, int, int], None]  # (connection, event id, delta)
Record = Callable[[int, int], tuple[str, tuple[Any, ...]]]  # the event row's INSERT, its params


def _bench_event(foo_id: int, delta: int) -> tuple[str, tuple[Any, ...]]:
    return "INSERT INTO bench_events (foo_id, delta) VALUES (%s, %s) RETURNING id", (foo_id, delta)


def _outbox_event(foo_id: int, delta: int) -> tuple[str, tuple[Any, ...]]:
    """The outbox row exactly as postsave's unit of work writes it, of the domain's own type."""
    event = FooCompleted(foo_id=foo_id, delta=delta, amount=delta, state="completed")
    query = "INSERT INTO outbox_events (event_type, payload) VALUES (%s, %s) RETURNING id"
    return query, (event.type_name, Jsonb(event.payload()))


def _sql_commit(
    dsn: str, record: Record = _bench_event, inside: Hook | None = None, after: Hook | None = None
) -> Commit:
    """Complete a foo and `record` its event (an INSERT returning its id) in one transaction, as
    the legacy save does; `inside` runs in the transaction (procrastinate's defer), `after`
    once committed (direct's apply_async, postsave's nudge)."""
    connection = psycopg.connect(dsn, autocommit=True)

    def commit(foo_id: int) -> None:
        with connection.transaction():
            found = connection.execute(
                "UPDATE foos SET state = 'completed', version = version + 1 "
                "WHERE id = %s AND state = 'pending' RETURNING amount",
                (foo_id,),
            ).fetchone()
            assert found is not None, f"foo {foo_id} is not pending"
            delta = found[0]
            inserted = connection.execute(*record(foo_id, delta)).fetchone()
            assert inserted is not None
            if inside is not None:
                inside(connection, inserted[0], delta)
        if after is not None:
            after(connection, inserted[0], delta)

    return commit


def _warmed_container() -> Container:
    """Settings from POSTSAVE_*, the relay nudged after each commit that wrote events, as the
    README tells an application to; the nudge's broker connection opened before the start."""
    container = Container(nudge=True)
    if container.relay_nudge is not None:
        container.relay_nudge()
        container.relay_nudge.flush()
    return container


def _commit_factory(kind: str, dsn: str) -> Callable[[], Commit]:
    """One commit function per client thread (each with its own connection)."""
    if kind == "postsave-use-cases":
        container = _warmed_container()

        def client() -> Commit:
            with container.engine.connect():
                pass  # connected before the schedule starts, like the SQL clients
            return lambda foo_id: use_cases.complete_foo(container.uow(), foo_id)

        return client
    if kind == "postsave":
        nudge = _warmed_container().relay_nudge

        def nudged(*_: Any) -> None:
            if nudge is not None:
                nudge()

        return lambda: _sql_commit(dsn, _outbox_event, after=nudged)
    # The bench's own apps are imported for their kind only: each reads its broker when imported.
    if kind == "direct":
        from bench.harness.apps import direct_apply

        def publish(_connection: Any, event_id: int, delta: int) -> None:
            direct_apply.apply_async((event_id, delta))

        return lambda: _sql_commit(dsn, after=publish)
    if kind == "procrastinate":
        from bench.harness.job_app import apply_delta

        def defer(connection: Any, event_id: int, delta: int) -> None:
            apply_delta.configure(connection=connection).defer(event_id=event_id, delta=delta)

        return lambda: _sql_commit(dsn, inside=defer)
    if kind == "naive":
        return lambda: _sql_commit(dsn)
    if kind == "ceiling":
        from bench.harness.apps import noop

        return lambda: lambda _foo_id: noop.apply_async()
    raise ValueError(f"unknown producer kind {kind!r}")


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


def produce(
    kind: str,
    first_foo: int,
    count: int,
    rate: float | None = None,
    threads: int = 1,
    dsn: str = "",
    deadline_s: float | None = None,  # open loop: events not started by then are not produced
) -> Tally:
    make_commit = _commit_factory(kind, dsn)
    tally, lock, next_index, started = Tally(), threading.Lock(), [0], [0.0]
    # The schedule starts when every client has its connection open: the barrier's action
    # runs before any thread is released, so no client ever reads an unset start.
    ready = threading.Barrier(threads + 1, action=lambda: started.__setitem__(0, time.monotonic()))

    def client() -> None:
        commit = make_commit()
        ready.wait()
        while True:
            with lock:
                index = next_index[0]
                if index >= count:
                    return
                next_index[0] += 1
            if deadline_s is not None and time.monotonic() - started[0] > deadline_s:
                return  # the clients fell behind the schedule: a bounded run, not a backlog
            if rate and (delay := started[0] + index / rate - time.monotonic()) > 0:
                time.sleep(delay)
            try:
                commit(first_foo + index)
            except Exception as error:  # noqa: BLE001 - counted: direct loses these events
                with lock:
                    tally.failed += 1
                    tally.error = f"{type(error).__name__}: {error}"[:300]
                continue
            now = time.time()
            with lock:
                tally.committed += 1
                tally.first = min(tally.first or now, now)
                tally.last = max(tally.last or now, now)

    running = [threading.Thread(target=client, daemon=True) for _ in range(threads)]
    for thread in running:
        thread.start()
    ready.wait()
    for thread in running:
        thread.join()
    return tally


if __name__ == "__main__":
    print(json.dumps(produce(**json.loads(sys.argv[1])).__dict__), flush=True)
