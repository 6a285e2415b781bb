"""History at scale: what a long event log costs postsave, and pruning it with the workers on.

Two databases hold the same application state: the same bars, the same completed foos (the
"history foos", whose amounts sum to `history`), the projection at that total, and the same
100 pending events. In "full" the history is in the log: `history` processed events (delta 1
each, occurred and applied evenly over the past 10 days) and their `applied_events` rows. In
"empty" it has already been pruned: the checkpoint holds it and the log holds nothing else.
`postsave verify` and `rebuild` give the same bars on both; only the length of the log differs.

1. The operators' and the relay's reads, timed in process on both, alternating between the
   two so that the machine's noise falls on both alike: `postsave status`, a metrics scrape,
   the relay's claim (rolled back), `verify` and `rebuild`.
2. Then on "full", with postsave's relay, recalculation worker and beat running and an
   open-loop producer offering a steady load: commit-to-applied latency without a prune, then
   during `postsave prune --older-than 8d` (the real command line, a subprocess); the tables'
   sizes before and after it and after a plain VACUUM; the invariant afterwards.

`python -m bench.scale [--quick | --full] [--history N]` runs this figure alone."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg

from bench import alone, procs, report, scenarios
from bench.conditions import LEASE_S, POLL_INTERVAL_S, PRODUCER_THREADS
from bench.contenders import Postsave, invariant, postsave_pg
from bench.eventlog import Window
from bench.product import postsave
from bench.profile import Profile
from bench.progress import step
from bench.schema import AMOUNT_SQL
from bench.services import Database, RunServices
from bench.stats import median, summary_ms
from domain import operations, projection, use_cases
from infrastructure.bootstrap import Container
from infrastructure.broker.names import POLL_QUEUE, RECALC_QUEUE
from infrastructure.ops.metrics import OutboxCollector
from tests import rabbitmq as amqp

HISTORY_FOOS = 1_000  # the history's events are spread over this many completed foos
SPREAD_DAYS = 10  # the history occurred evenly over the past 10 days ...
OLDER_THAN_DAYS = 8  # ... so the prune takes its oldest fifth
OLDER_THAN = f"{OLDER_THAN_DAYS}d"
PENDING = 100  # events waiting for the relay in both databases while timing
DRAIN_TIMEOUT_S = 180.0
WARM_UP = 3  # untimed calls first (connections, plans, caches); rebuild: 1
POSTSAVE_BIN = Path(sys.executable).with_name("postsave")

GOALS = {"status": 1.1, "scrape": 1.1, "claim": 1.1}  # x empty, from the issue
REBUILD_GOAL_S = 5.0  # for 10,000,000 events
P99_GOAL = 2.0  # p99 during the prune against without


# --- the two databases --------------------------------------------------------------------
def _one(connection: psycopg.Connection, query: str, *params: object) -> Any:
    row = connection.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def _state(database: Database, history: int, pending_foos: int) -> int:
    """The application state both databases share: `pending_foos` more pending foos (the
    producer's stream), the history foos (completed), the bars and the projection at the
    history's total. Returns the first of those pending foos. Both databases are copies of one
    template, so the ids agree."""
    with psycopg.connect(database.conninfo) as connection:
        first = int(_one(connection, "SELECT coalesce(max(id), 0) + 1 FROM foos"))
        connection.execute(
            f"INSERT INTO foos (id, amount, state, version) SELECT g, {AMOUNT_SQL}, 'pending', 1"
            " FROM generate_series(%s::bigint, %s::bigint) g",
            (first, first + pending_foos - 1),
        )
        # History foo j was completed, then revised up one unit per event: its amount is the
        # number of history events that name it, and together they sum to `history`.
        base = first + pending_foos - 1
        connection.execute(
            "INSERT INTO foos (id, amount, state, version)"
            " SELECT %s::bigint + j, (%s::bigint - j) / %s + 1, 'completed', 1"
            " FROM generate_series(1, least(%s::bigint, %s::bigint)) j",
            (base, history, HISTORY_FOOS, HISTORY_FOOS, history),
        )
        connection.execute("SELECT setval(pg_get_serial_sequence('foos', 'id'), max(id)) FROM foos")
        connection.execute("UPDATE bars SET value = value + weight * %s::numeric", (history,))
        connection.execute(
            "UPDATE bar_projection SET applied_total = applied_total + %s::numeric,"
            " events_applied = events_applied + %s::bigint",
            (history, history),
        )
        connection.execute(
            "UPDATE outbox_counters SET events_dispatched = events_dispatched + %s::bigint,"
            " relay_passes = relay_passes + %s::bigint",
            (history, max(history // 100, 1)),
        )
    return first


def _history_foo(base: int) -> str:
    return f"{base} + 1 + (g - 1) %% {HISTORY_FOOS}"  # %%: psycopg's literal %


def _load_log(database: Database, history: int, history_base: int) -> None:
    """The history into the log of "full": one INSERT of `history` processed events, then
    their guard rows. occurred_at runs evenly from 10 days ago to now, in id order."""
    spread = f"interval '{SPREAD_DAYS} days'"
    with psycopg.connect(database.conninfo) as connection:
        step(f"scale: full: inserting {history:,} processed events (one generate_series INSERT)")
        connection.execute(
            "INSERT INTO outbox_events (event_type, payload, state, dispatches, occurred_at,"
            " available_at, dispatched_at, applied_at)"
            f" SELECT CASE WHEN g <= {HISTORY_FOOS} THEN 'FooCompleted' ELSE 'FooRevised' END,"
            f" jsonb_build_object('foo_id', {_history_foo(history_base)}, 'delta', 1),"
            " 'processed', 1, t, t, t + interval '20 ms', t + interval '30 ms'"
            " FROM (SELECT now() AS now) n, generate_series(1, %s::bigint) g,"
            f" LATERAL (SELECT n.now - {spread} + {spread} * (g - 1) / %s::bigint) AS s(t)",
            (history, history),
        )
        step(f"scale: full: inserting their {history:,} applied_events rows")
        # Made from the events themselves, so the foreign key holds by construction: its
        # per-row check is skipped (a replica's load), which makes this 4x faster.
        connection.execute("SET LOCAL session_replication_role = replica")
        connection.execute(
            "INSERT INTO applied_events (event_id, applied_at)"
            " SELECT id, applied_at FROM outbox_events WHERE applied_at IS NOT NULL ORDER BY id"
        )


def _pruned_already(database: Database, history: int) -> None:
    """The "empty" database: the same history, already folded into the checkpoint."""
    with psycopg.connect(database.conninfo) as connection:
        connection.execute(
            "UPDATE projection_checkpoint SET applied_total = %s::numeric,"
            " events_applied = %s::bigint, last_pruned_id = %s::bigint, pruned_at = now()",
            (history, history, history),
        )
        connection.execute(
            "SELECT setval(pg_get_serial_sequence('outbox_events', 'id'), %s)", (history,)
        )


def _complete(database: Database, first_foo: int, count: int) -> None:
    """`count` foos completed through the use case: their events wait for the relay."""
    with postsave(database.url) as container:
        use_cases.complete_foos(container.uow(), list(range(first_foo, first_foo + count)))


def _vacuum_analyze(database: Database) -> None:
    with psycopg.connect(database.conninfo, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")


# --- 1. the reads, timed --------------------------------------------------------------------
def _claim(container: Container) -> None:
    """The relay's claim of one batch, rolled back (the unit of work never commits)."""
    with container.uow() as uow:
        claimed = len(uow.relay_queue.claim_pending(PENDING))
    assert claimed == PENDING, f"claimed {claimed} of {PENDING} pending events"


def _scrape(container: Container) -> None:
    """What the exporter's registry does on GET /metrics: collect() to the end."""
    families = list(OutboxCollector(container.uow).collect())
    up = next(f for f in families if f.name == "postsave_database_up")
    assert up.samples[0].value == 1, "the scrape could not read the database"


def _verify(container: Container) -> None:
    projection.verify(container.uow())


def _rebuild(container: Container) -> None:
    projection.rebuild(container.uow())


OPERATIONS: dict[str, Callable[[Container], object]] = {
    "status": lambda c: operations.outbox_stats(c.uow()),
    "scrape": _scrape,
    "claim": _claim,
    "verify": _verify,
    "rebuild": _rebuild,
}
DESCRIPTIONS = {
    "status": "postsave status (operations.outbox_stats)",
    "scrape": "metrics scrape (OutboxCollector.collect)",
    "claim": "relay claim_pending(100), rolled back",
    "verify": "postsave verify (projection.verify)",
    "rebuild": "postsave rebuild (projection.rebuild)",
}


def _time_operations(
    containers: list[Container], repetitions: int, rebuilds: int
) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for name, operation in OPERATIONS.items():
        times = rebuilds if name == "rebuild" else repetitions
        warm = 1 if name == "rebuild" else WARM_UP
        step(f"scale: {name}: {times} times on each database, alternating, after {warm} untimed")
        timings: list[list[float]] = [[], []]
        for repetition in range(warm + times):
            for index, container in enumerate(containers):
                started = time.perf_counter()
                operation(container)
                seconds = time.perf_counter() - started
                if repetition >= warm:
                    timings[index].append(seconds)
        empty_ms, full_ms = (median(t) * 1000.0 for t in timings)
        found[name] = {
            "what": DESCRIPTIONS[name],
            "repetitions": times,
            "empty_ms": empty_ms,
            "full_ms": full_ms,
            "ratio": full_ms / empty_ms,
            "goal_ratio": GOALS.get(name),
        }
    return found


# --- 2. sizes, the prune, latency -----------------------------------------------------------
def _sizes(database: Database) -> dict[str, Any]:
    found: dict[str, Any] = {}
    with psycopg.connect(database.conninfo, autocommit=True) as connection:
        for table in ("outbox_events", "applied_events"):
            found[table] = {
                "mb": _one(connection, "SELECT pg_total_relation_size(%s::regclass)", table)
                / 1_048_576,
                "rows": int(_one(connection, f"SELECT count(*) FROM {table}")),
            }
    return found


def _prunable(database: Database) -> int:
    with psycopg.connect(database.conninfo, autocommit=True) as connection:
        return int(
            _one(
                connection,
                "SELECT count(*) FROM outbox_events WHERE state = 'processed'"
                f" AND occurred_at <= clock_timestamp() - interval '{OLDER_THAN_DAYS} days'",
            )
        )


def _vacuum(database: Database) -> float:
    started = time.monotonic()
    with psycopg.connect(database.conninfo, autocommit=True) as connection:
        connection.execute("VACUUM outbox_events")
        connection.execute("VACUUM applied_events")
    return time.monotonic() - started


def _window(
    contender: Postsave, window: Window, start: float = 0.0, end: float = math.inf
) -> dict[str, Any]:
    """Commit-to-applied latency of the window's events committed between `start` and `end`
    (epoch seconds; the database's clock, on this host)."""
    assert contender.log is not None
    times = [(c, a) for c, a in contender.log.times(window) if start <= c <= end]
    latencies = [a - c for c, a in times if a is not None]
    committed = [c for c, _ in times]
    span = (end if end < math.inf else max(committed)) - max(start, min(committed))
    return {
        "events": len(times),
        "seconds": span,
        "achieved_per_s": len(times) / span if span > 0 else None,
        "unapplied": sum(1 for _, a in times if a is None),
        **summary_ms(latencies),
        # The machine is shared: what else ran shows here (the prune's own CPU included).
        "load_1m_at_end": os.getloadavg()[0],
    }


def _wait_for(contender: Postsave, window: Window, events: int, timeout_s: float) -> None:
    assert contender.log is not None
    log = contender.log
    procs.wait_until(
        lambda: len(log.times(window)) >= events,
        f"{contender.name}: the producer's first events",
        timeout_s=timeout_s,
        alive=contender.alive(),
    )


def _prune_under_load(contender: Postsave, profile: Profile, workdir: Path) -> dict[str, Any]:
    """Open-loop load, and `postsave prune` started once it runs; the producer stops when the
    prune ends (or at the profile's cap, when the prune is then stopped too)."""
    assert contender.log is not None
    rate, cap = profile.scale_rate, profile.scale_prune_cap_s
    window = contender.log.watermark()
    producer = scenarios.start_producer(
        contender, round(rate * cap), rate, threads=PRODUCER_THREADS, deadline_s=cap
    )
    log_path = workdir / "scale-prune.log"
    try:
        _wait_for(contender, window, max(1, round(rate * 0.5)), 60.0)
        step(f"scale: postsave prune --older-than {OLDER_THAN}, {rate:.0f} events/s offered")
        env = procs.env_for(contender.producer_env())
        with log_path.open("ab") as log:
            started = time.time()
            prune = subprocess.Popen(
                [str(POSTSAVE_BIN), "prune", "--older-than", OLDER_THAN],
                env=env,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
            try:
                out, _ = prune.communicate(timeout=cap)
                finished = True
            except subprocess.TimeoutExpired:
                prune.terminate()  # the chunk in hand rolls back; those committed stay pruned
                out, _ = prune.communicate()
                finished = False
            ended = time.time()
    finally:
        producer.terminate()  # its events are read back from the database
        producer.wait()
    if finished and prune.returncode != 0:
        raise RuntimeError(f"postsave prune failed (exit {prune.returncode}); see {log_path}")
    match = re.search(r"pruned (\d+) finished events", out)
    pruned = int(match[1]) if match else None
    scenarios.wait_processed(contender, window, 120.0)
    return {
        "pruned": pruned,
        "finished": finished,
        "output": out.strip(),
        "seconds": ended - started,
        "pruned_per_s": pruned / (ended - started) if pruned else None,
        "during": _window(contender, window, started, ended),
    }


def _without_prune(contender: Postsave, profile: Profile, when: str) -> dict[str, Any]:
    rate, seconds = profile.scale_rate, profile.scale_window_s
    step(f"scale: {rate:.0f} events/s offered for {seconds:g} s, no prune ({when})")
    assert contender.log is not None
    window = contender.log.watermark()
    scenarios.produce(contender, round(rate * seconds), rate, deadline_s=seconds + 2.0)
    scenarios.wait_processed(contender, window, 60.0 + seconds)
    return _window(contender, window)


def _drained(database: Database, timeout_s: float) -> None:
    with postsave(database.url) as container:
        procs.wait_until(
            lambda: operations.outbox_stats(container.uow()).drained,
            "scale: every event applied and its message back",
            timeout_s=timeout_s,
            interval_s=0.2,
        )


def _verifies(database: Database) -> dict[str, Any]:
    with postsave(database.url) as container:
        result = projection.verify(container.uow())
        with container.uow() as uow:
            checkpoint = uow.projection_log.checkpoint()
    return {
        "verify_holds": result.holds,
        "completed_total": result.completed_total,
        "checkpoint_events": checkpoint.events,
        "checkpoint_total": checkpoint.total,
    }


def _contender(
    full: Database, amqp_url: str, workdir: Path, settings_env: dict[str, str]
) -> Postsave:
    contender = postsave_pg(
        workdir, full, amqp_url, settings_env, "postsave-scale", "postsave on the full database"
    )
    contender.threads = PRODUCER_THREADS
    return contender


@contextlib.contextmanager
def _running(contender: Postsave) -> Iterator[Postsave]:
    step("scale: starting postsave's workers on the full database")
    contender.start()
    try:
        yield contender
    finally:
        step("scale: stopping the workers; their queues purged")
        contender.stop()
        # Messages of events already applied may still wait (an applied event stays in flight
        # until its own message is back): no later contender's worker must get them.
        for queue in (RECALC_QUEUE, POLL_QUEUE):
            amqp.purge(contender.broker_url, queue)


# --- the figure ------------------------------------------------------------------------------
def pending_foos(profile: Profile) -> int:
    """Pending foos each database gets for this figure: the 100 pending events and the
    producer's stream (the windows before and after the prune, and during it up to the cap)."""
    windows_s = 2 * (profile.scale_window_s + 2.0) + profile.scale_prune_cap_s
    return PENDING + round(profile.scale_rate * windows_s) + 1000


def figure(
    empty: Database,
    full: Database,
    amqp_url: str,
    workdir: Path,
    profile: Profile,
    settings_env: dict[str, str],
) -> dict[str, Any]:
    history = profile.scale_history
    parts: dict[str, float] = {}
    clock = time.monotonic()

    def done(part: str) -> None:
        nonlocal clock
        parts[part] = time.monotonic() - clock
        clock = time.monotonic()

    step(f"scale: the same state in both databases ({history:,} events' worth of foos, bars)")
    firsts = {_state(db, history, pending_foos(profile)) for db in (empty, full)}
    assert len(firsts) == 1, "the two databases differ"
    (first_pending,) = firsts
    history_base = first_pending + pending_foos(profile) - 1
    _pruned_already(empty, history)
    _load_log(full, history, history_base)
    for database in (empty, full):
        _complete(database, first_pending, PENDING)
    done("load_s")
    step("scale: VACUUM ANALYZE both databases")
    for database in (empty, full):
        _vacuum_analyze(database)
    done("vacuum_analyze_s")
    # The load leaves gigabytes to write back: flushed now, not in the middle of a timing.
    step("scale: CHECKPOINT (the load's writes, flushed before anything is timed)")
    with psycopg.connect(full.conninfo, autocommit=True) as connection:
        connection.execute("CHECKPOINT")
    done("checkpoint_s")

    with contextlib.ExitStack() as stack:
        containers = [stack.enter_context(postsave(db.url)) for db in (empty, full)]
        timings = _time_operations(
            containers, profile.scale_repetitions, profile.scale_rebuild_repetitions
        )
    done("timings_s")

    with _running(_contender(full, amqp_url, workdir, settings_env)) as contender:
        contender.next_foo = first_pending + PENDING
        # Each window starts from a drained outbox: no message of an earlier one still out.
        _drained(full, DRAIN_TIMEOUT_S)  # the 100 pending events
        before = contender.drift()
        done("workers_start_s")
        without = _without_prune(contender, profile, "before the prune")
        _drained(full, DRAIN_TIMEOUT_S)
        done("window_before_s")
        sizes = {"before": _sizes(full)}
        prunable = _prunable(full)
        prune = _prune_under_load(contender, profile, workdir)
        _drained(full, DRAIN_TIMEOUT_S)
        done("prune_under_load_s")
        sizes["after_prune"] = _sizes(full)
        step("scale: plain VACUUM of outbox_events and applied_events")
        vacuum_s = _vacuum(full)
        sizes["after_vacuum"] = _sizes(full)
        done("sizes_vacuum_s")
        # Again without: brackets the prune, so a disturbance of the machine in one short
        # window is told apart from the prune's own cost.
        after_prune = _without_prune(contender, profile, "after the prune and the VACUUM")
        done("window_after_s")
        after = _verifies(full) | invariant(contender, before)
        done("verify_s")
    during = prune["during"]
    return {
        "history": history,
        "pending": PENDING,
        "history_foos": HISTORY_FOOS,
        "operations": timings,
        "rebuild_goal_s": REBUILD_GOAL_S,
        "p99_goal": P99_GOAL,
        "older_than": OLDER_THAN,
        "prunable_before": prunable,
        "prune": prune,
        "without_prune": without,
        "after_prune": after_prune,
        "p99_ratio": during["p99_ms"] / without["p99_ms"],
        "sizes": sizes,
        "vacuum_s": vacuum_s,
        "after": after,
        "parts_s": parts,
    }


# --- alone ---------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    found = alone.parser("python -m bench.scale", __doc__, "100,000 events", "10,000,000 events")
    found.add_argument("--history", type=int, help="processed events in the full log")
    args = found.parse_args(argv)
    profile = alone.profile_of(args)
    if args.history:
        profile = dataclasses.replace(profile, scale_history=args.history)

    def run(services: RunServices) -> dict[str, Any]:
        workdir = Path(tempfile.mkdtemp(prefix="postsave-bench-scale-"))
        step(f"scale alone: logs in {workdir}")
        template = alone.migrated(services, "template", profile)
        empty = services.create_database("scale_empty", template=template)
        full = services.create_database("scale_full", template=template)
        services.drop_database(template)
        os.environ["POSTSAVE_DATABASE_URL"] = full.url  # nothing falls back on ./var
        settings_env = {
            "POSTSAVE_POLL_INTERVAL": str(POLL_INTERVAL_S),
            "POSTSAVE_LEASE_SECONDS": str(LEASE_S),
        }
        try:
            found = figure(empty, full, services.amqp_url, workdir, profile, settings_env)
        except BaseException:
            print(f"bench.scale: logs kept in {workdir}", file=sys.stderr)
            raise
        shutil.rmtree(workdir, ignore_errors=True)
        return found

    return alone.run("scale", profile, args.json, run, report.scale)


if __name__ == "__main__":
    raise SystemExit(main())
