"""The event producer, run as a subprocess: `python -m bench.producer '<json spec>'`.

Every contender's events come from here: the same foos completed in the same order, one foo per
transaction, by the same number of client threads. Closed loop (rate null: as fast as the
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

Commit = Callable[[int], None]


@dataclass
class Spec:
    kind: str  # postsave | direct | procrastinate | naive | ceiling
    first_foo: int
    count: int
    rate: float | None = None
    threads: int = 1
    dsn: str = ""
    deadline_s: float | None = None  # open loop: events not started by then are not produced


def _raw_commit(dsn: str, after: Callable[[Any, int, int], None] | None, hook: str) -> Commit:
    """Complete a foo and record a bench event in one transaction, as the legacy save does.

    `hook` is 'inside' (call `after` in the transaction, procrastinate's defer) or 'after'
    (call it once committed, direct's apply_async)."""
    import psycopg

    connection = psycopg.connect(dsn, autocommit=True)

    def commit(foo_id: int) -> None:
        with connection.transaction():
            row = connection.execute(
                "UPDATE foos SET state = 'completed', version = version + 1 "
                "WHERE id = %s AND state = 'pending' RETURNING amount",
                (foo_id,),
            ).fetchone()
            assert row is not None, f"foo {foo_id} is not pending"
            (delta,) = row
            inserted = connection.execute(
                "INSERT INTO bench_events (foo_id, delta) VALUES (%s, %s) RETURNING id",
                (foo_id, delta),
            ).fetchone()
            assert inserted is not None
            event_id = inserted[0]
            if after is not None and hook == "inside":
                after(connection, event_id, delta)
        if after is not None and hook == "after":
            after(connection, event_id, delta)

    return commit


def _commit_factory(spec: Spec) -> Callable[[], Commit]:
    """One commit function per client thread (each with its own connection)."""
    if spec.kind == "postsave":
        from domain import use_cases
        from infrastructure.bootstrap import Container

        # As the README tells an application to: settings from POSTSAVE_*, the relay nudged
        # after each commit that wrote events.
        container = Container(nudge=True)

        def postsave() -> Commit:
            return lambda foo_id: use_cases.complete_foo(container.uow(), foo_id)

        return postsave
    if spec.kind == "direct":
        from bench.direct_app import direct_apply

        def publish(_connection: Any, event_id: int, delta: int) -> None:
            direct_apply.apply_async((event_id, delta))

        return lambda: _raw_commit(spec.dsn, publish, "after")
    if spec.kind == "procrastinate":
        from bench.procrastinate_app import apply_delta

        def defer(connection: Any, event_id: int, delta: int) -> None:
            apply_delta.configure(connection=connection).defer(event_id=event_id, delta=delta)

        return lambda: _raw_commit(spec.dsn, defer, "inside")
    if spec.kind == "naive":
        return lambda: _raw_commit(spec.dsn, None, "after")
    if spec.kind == "ceiling":
        from bench.ceiling_app import noop

        return lambda: lambda _foo_id: noop.apply_async()
    raise ValueError(f"unknown producer kind {spec.kind!r}")


@dataclass
class Tally:
    committed: int = 0
    failed: int = 0
    first: float | None = None
    last: float | None = None
    error: str | None = None


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
