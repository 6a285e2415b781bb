"""Figure 8, history at scale: what a long event log costs postsave, and pruning it with the
workers on. Two databases hold the same application state; "full" has the history in its log,
"empty" has it pruned into the checkpoint already (the conditions below say how each is made
and measured). `python -m bench --only scale [--quick]` runs this figure alone."""

from __future__ import annotations

import contextlib
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg

from bench.harness import processes as procs
from bench.harness.contenders import Postsave, postsave_pg
from bench.harness.data import AMOUNT_SQL, DRIFT_SQL, execute, row
from bench.harness.processes import step
from bench.harness.product import postsave
from bench.harness.profile import OPEN_LOOP_CLIENTS, SETTINGS_ENV, Profile
from bench.harness.report import Results, median, summary_ms, table
from bench.harness.run import Figure, Run
from bench.harness.services import Database, purge
from bench.harness.workload import produce, start_producer, wait_processed
from domain import operations, projection, use_cases
from infrastructure.bootstrap import Container
from infrastructure.broker.names import POLL_QUEUE, RECALC_QUEUE
from infrastructure.ops.metrics import OutboxCollector

HISTORY_FOOS = 1_000  # the history's events are spread over this many completed foos
SPREAD_DAYS = 10  # the history occurred evenly over the past 10 days ...
OLDER_THAN_DAYS = 8  # ... so the prune takes its oldest fifth
OLDER_THAN = f"{OLDER_THAN_DAYS}d"
TABLES = ("outbox_events",)  # the log (a part's position is what guards against twice)
PENDING = 100  # events waiting for the relay in both databases while timing
DRAIN_TIMEOUT_S = 180.0
WARM_UP = 3  # untimed calls first (connections, plans, caches); rebuild: 1
POSTSAVE_BIN = Path(sys.executable).with_name("postsave")

GOALS = {"status": 1.1, "scrape": 1.1, "claim": 1.1}  # x empty
REBUILD_GOAL_S = 5.0  # for 10,000,000 events
REPLAYED = 10  # the replay row: the last tenth of the history, through the recalculation
P99_GOAL = 2.0  # p99 during the prune against without


# --- the two databases --------------------------------------------------------------------
def _state(database: Database, history: int, pending_foos: int) -> int:
    """The application state both databases share: `pending_foos` more pending foos (the
    producer's stream), the history foos (completed), the bars and the projection at the
    history's total: every part and bar at position `history`, their baselines there too (as a
    prune leaves them: a replay starts there). Returns the first of those pending foos. Both
    databases are copies of one template, so the ids agree."""
    with psycopg.connect(database.conninfo) as connection:
        found = connection.execute("SELECT coalesce(max(id), 0) + 1 FROM foos").fetchone()
        assert found is not None
        first = int(found[0])
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
        connection.execute(
            "UPDATE bars SET value = value + weight * %s::numeric, position = %s",
            (history, history),
        )
        connection.execute(
            "UPDATE bar_parts SET position = %s, applied_total = applied_total + %s::numeric,"
            " baseline_position = %s, baseline_total = baseline_total + %s::numeric",
            (history, history, history, history),
        )
        connection.execute(
            "UPDATE bar_baselines SET position = bars.position, state = jsonb_build_object("
            "'weight', bars.weight, 'value', bars.value) FROM bars WHERE bars.id = bar_id"
        )
        connection.execute(
            "UPDATE bar_projection SET head_position = %s, head_total = head_total + %s::numeric,"
            " applied_position = %s, counted_position = %s,"
            " events_applied = events_applied + %s::bigint",
            (history, history, history, history, history),
        )
        connection.execute(
            "UPDATE outbox_counters SET events_dispatched = events_dispatched + %s::bigint,"
            " relay_passes = relay_passes + %s::bigint",
            (history, max(history // 100, 1)),
        )
    return first


def _load_log(database: Database, history: int, history_base: int) -> None:
    """The history into the log of "full": one INSERT of `history` processed events at
    positions 1 to `history`. occurred_at runs evenly from 10 days ago to now, in id order."""
    spread = f"interval '{SPREAD_DAYS} days'"
    with psycopg.connect(database.conninfo) as connection:
        step(f"scale: full: inserting {history:,} processed events (one generate_series INSERT)")
        connection.execute(
            "INSERT INTO outbox_events (event_type, payload, state, dispatches, occurred_at,"
            " available_at, dispatched_at, applied_at, position)"
            f" SELECT CASE WHEN g <= {HISTORY_FOOS} THEN 'FooCompleted' ELSE 'FooRevised' END,"
            f" jsonb_build_object('foo_id', {history_base} + 1 + (g - 1) %% {HISTORY_FOOS},"
            " 'delta', 1),"
            " 'processed', 1, t, t, t + interval '20 ms', t + interval '30 ms', g"
            " FROM (SELECT now() AS now) n, generate_series(1, %s::bigint) g,"
            f" LATERAL (SELECT n.now - {spread} + {spread} * (g - 1) / %s::bigint) AS s(t)",
            (history, history),
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
    """`count` foos completed through the use case, their events sequenced as the relay does
    (positions after the history's): they wait for the relay's dispatch."""
    with postsave(database.url) as container:
        use_cases.complete_foos(container.uow(), list(range(first_foo, first_foo + count)))
        with container.uow() as uow:
            assert uow.relay_queue.try_lock()
            fresh = uow.relay_queue.claim_unsequenced(count)
            uow.relay_queue.sequence([(stored.id, stored.event().delta) for stored in fresh])
            uow.commit()


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


def _status(container: Container) -> None:
    operations.status(container.uow())


def _rebuild(container: Container) -> None:
    projection.rebuild(container.uow, container.heavy_step)


# name: (what the table calls it, the call), in the order they are timed
OPERATIONS: dict[str, tuple[str, Callable[[Container], object]]] = {
    "status": ("postsave status (operations.status)", _status),
    "scrape": ("metrics scrape (OutboxCollector.collect)", _scrape),
    "claim": ("relay claim_pending(100), rolled back", _claim),
    "verify": ("postsave verify (Container.verify)", lambda c: c.verify()),
    "rebuild": ("postsave rebuild (projection.rebuild)", _rebuild),
}  # fmt: skip


def _time_operations(
    containers: list[Container], repetitions: int, rebuilds: int
) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for name, (what, operation) in OPERATIONS.items():
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
            "what": what,
            "repetitions": times,
            "empty_ms": empty_ms,
            "full_ms": full_ms,
            "ratio": full_ms / empty_ms,
            "goal_ratio": GOALS.get(name),
        }
    return found


def _replay(database: Database, history: int) -> dict[str, Any]:
    """A rebuild of "full" with its baselines moved back over the last tenth of the history
    (every history event has delta 1): what a replay through the recalculation costs."""
    events = history // REPLAYED
    before = row(database.conninfo, DRIFT_SQL)
    with psycopg.connect(database.conninfo) as connection:
        connection.execute(
            "UPDATE bar_baselines b SET position = b.position - %s, state = jsonb_set(b.state,"
            " '{value}', to_jsonb((b.state->>'value')::numeric - bars.weight * %s))"
            " FROM bars WHERE bars.id = b.bar_id",
            (events, events),
        )
        connection.execute(
            "UPDATE bar_parts SET baseline_position = baseline_position - %s,"
            " baseline_total = baseline_total - %s",
            (events, events),
        )
    step(f"scale: rebuild replaying the last {events:,} events of the history, once")
    with postsave(database.url) as container:
        started = time.perf_counter()
        _rebuild(container)
        seconds = time.perf_counter() - started
    # The bars as they were (a verify now would replay every event once more).
    holds = row(database.conninfo, DRIFT_SQL) == before
    return {"events": events, "seconds": seconds, "per_s": events / seconds, "holds": holds}


# --- 2. sizes, the prune, latency -----------------------------------------------------------
def _sizes(database: Database) -> dict[str, Any]:
    query = "SELECT pg_total_relation_size(%s::regclass), count(*) FROM {}"
    sizes = {name: row(database.conninfo, query.format(name), name) for name in TABLES}
    return {
        name: {"mb": size / 1_048_576, "rows": int(rows)} for name, (size, rows) in sizes.items()
    }


def _window(
    contender: Postsave, window: int, start: float = 0.0, end: float = math.inf
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


def _prune_under_load(contender: Postsave, profile: Profile, workdir: Path) -> dict[str, Any]:
    """Open-loop load, and `postsave prune` started once it runs; the producer stops when the
    prune ends (or at the profile's cap, when the prune is then stopped too)."""
    assert contender.log is not None
    log, rate, cap = contender.log, profile.scale_rate, profile.scale_prune_cap_s
    window = log.watermark()
    producer = start_producer(
        contender, round(rate * cap), rate, threads=OPEN_LOOP_CLIENTS, deadline_s=cap
    )
    log_path = workdir / "scale-prune.log"
    try:
        first_events = max(1, round(rate * 0.5))
        procs.wait_until(
            lambda: len(log.times(window)) >= first_events,
            f"{contender.name}: the producer's first events",
            alive=contender.started,
        )
        step(f"scale: postsave prune --older-than {OLDER_THAN}, {rate:.0f} events/s offered")
        env = contender.producer_env()
        with log_path.open("ab") as errors:
            started = time.time()
            command = [str(POSTSAVE_BIN), "prune", "--older-than", OLDER_THAN]
            prune = subprocess.Popen(
                command, env=env, stdout=subprocess.PIPE, stderr=errors, text=True
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
    wait_processed(contender, window, 120.0)
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
    produce(contender, round(rate * seconds), rate, deadline_s=seconds + 2.0)
    wait_processed(contender, window, 60.0 + seconds)
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
        result = container.verify()
        with container.uow() as uow:
            checkpoint = uow.projection_log.checkpoint()
    return {
        "verify_holds": result.holds, "completed_total": result.completed_total,
        "checkpoint_events": checkpoint.events, "checkpoint_total": checkpoint.total,
    }  # fmt: skip


@contextlib.contextmanager
def _running(full: Database, amqp_url: str, workdir: Path) -> Iterator[Postsave]:
    step("scale: starting postsave's workers on the full database")
    name, description = "postsave-scale", "postsave on the full database"
    contender = postsave_pg(workdir, full, amqp_url, SETTINGS_ENV, name, description)
    contender.threads = OPEN_LOOP_CLIENTS
    contender.start()
    try:
        yield contender
    finally:
        step("scale: stopping the workers; their queues purged")
        contender.stop()
        # Messages of events already applied may still wait (an applied event stays in flight
        # until its own message is back): no later contender's worker must get them.
        for queue in (RECALC_QUEUE, POLL_QUEUE):
            purge(amqp_url, queue)


# --- the figure ------------------------------------------------------------------------------
def pending_foos(profile: Profile) -> int:
    """Pending foos each database gets for this figure: the 100 pending events and the
    producer's stream (the windows before and after the prune, and during it up to the cap)."""
    windows_s = 2 * (profile.scale_window_s + 2.0) + profile.scale_prune_cap_s
    return PENDING + round(profile.scale_rate * windows_s) + 1000


def run(bench: Run) -> None:
    """Its own postsave workers, on the run's vhost before any contender's: no other postsave
    message is out yet. Its databases are dropped as soon as it is done."""
    empty, full = bench.roles["scale_empty"], bench.roles["scale_full"]
    profile, history = bench.profile, bench.profile.scale_history
    parts: dict[str, float] = {}
    clock = time.monotonic()

    def done(part: str) -> None:
        nonlocal clock
        parts[part], clock = time.monotonic() - clock, time.monotonic()

    step(f"scale: the same state in both databases ({history:,} events' worth of foos, bars)")
    firsts = {_state(db, history, pending_foos(profile)) for db in (empty, full)}
    assert len(firsts) == 1, "the two databases differ"
    (first_pending,) = firsts
    _pruned_already(empty, history)
    _load_log(full, history, history_base=first_pending + pending_foos(profile) - 1)
    for database in (empty, full):
        _complete(database, first_pending, PENDING)
    done("load_s")
    step("scale: VACUUM ANALYZE both databases")
    for database in (empty, full):
        execute(database.conninfo, "VACUUM ANALYZE")
    done("vacuum_analyze_s")
    # The load leaves gigabytes to write back: flushed now, not in the middle of a timing.
    step("scale: CHECKPOINT (the load's writes, flushed before anything is timed)")
    execute(full.conninfo, "CHECKPOINT")
    done("checkpoint_s")

    with contextlib.ExitStack() as stack:
        containers = [stack.enter_context(postsave(db.url)) for db in (empty, full)]
        timings = _time_operations(
            containers, profile.scale_repetitions, profile.scale_rebuild_repetitions
        )
    replay = _replay(full, history)
    done("timings_s")

    with _running(full, bench.amqp_url, bench.workdir) as contender:
        contender.next_foo = first_pending + PENDING
        # Each window starts from a drained outbox: no message of an earlier one still out.
        _drained(full, DRAIN_TIMEOUT_S)  # the 100 pending events
        before = contender.drift()
        done("workers_start_s")
        without = _without_prune(contender, profile, "before the prune")
        _drained(full, DRAIN_TIMEOUT_S)
        done("window_before_s")
        sizes = {"before": _sizes(full)}
        prunable = execute(
            full.conninfo,
            "SELECT count(*) FROM outbox_events WHERE state = 'processed'"
            f" AND occurred_at <= clock_timestamp() - interval '{OLDER_THAN_DAYS} days'",
        )
        prune = _prune_under_load(contender, profile, bench.workdir)
        _drained(full, DRAIN_TIMEOUT_S)
        done("prune_under_load_s")
        sizes["after_prune"] = _sizes(full)
        step("scale: plain VACUUM of outbox_events")
        vacuum_started = time.monotonic()
        for name in TABLES:
            execute(full.conninfo, f"VACUUM {name}")
        vacuum_s = time.monotonic() - vacuum_started
        sizes["after_vacuum"] = _sizes(full)
        done("sizes_vacuum_s")
        # Again without: brackets the prune, so a disturbance of the machine in one short
        # window is told apart from the prune's own cost.
        after_prune = _without_prune(contender, profile, "after the prune and the VACUUM")
        done("window_after_s")
        after = _verifies(full) | contender.invariant(before)
        done("verify_s")
    for database in (empty, full):
        bench.services.drop_database(database)
    bench.results["scale"] = {
        "history": history,
        "pending": PENDING,
        "history_foos": HISTORY_FOOS,
        "operations": timings,
        "replay": replay,
        "rebuild_goal_s": REBUILD_GOAL_S,
        "p99_goal": P99_GOAL,
        "older_than": OLDER_THAN,
        "prunable_before": int(prunable),
        "prune": prune,
        "without_prune": without,
        "after_prune": after_prune,
        "p99_ratio": prune["during"]["p99_ms"] / without["p99_ms"],
        "sizes": sizes,
        "vacuum_s": vacuum_s,
        "after": after,
        "parts_s": parts,
    }


def conditions(profile: Profile) -> dict[str, str]:
    history, window = f"{profile.scale_history:,}", f"{profile.scale_window_s:g} s"
    return {
        "scale": (
            "two databases with the same state (100 bars in one part, 1,000 completed foos "
            f"whose amounts sum to {history}, every part and bar at position {history} with its "
            "baselines there, as a prune leaves them, 100 pending events of foos completed "
            "through the use case and sequenced after them): 'empty' has the "
            f"{history} events already pruned into the checkpoint, 'full' has them in the log "
            "(processed, delta 1, positions 1 on, occurred evenly over the past 10 days, one "
            "generate_series INSERT), then VACUUM ANALYZE and a CHECKPOINT; each operation in "
            "process, as the command line calls it, timed whole (unit of work included), "
            "alternating between the two databases, median of "
            f"{profile.scale_repetitions} after 3 untimed (rebuild: "
            f"{profile.scale_rebuild_repetitions} after 1; verify and rebuild replay from the "
            "baselines: here the 100 pending events); goals: status, scrape and claim within "
            "1.1x of empty, rebuild of 10,000,000 events under 5 s; replay: the full "
            "database's baselines moved back over the last tenth of the history, then one "
            "rebuild (example recalculation, in process)"
        ),
        "scale_sizes": (
            "the full database: pg_total_relation_size (table, indexes, TOAST) and count(*) "
            "before `postsave prune --older-than 8d`, after it, and after a plain VACUUM "
            "(autovacuum as the server has it)"
        ),
        "scale_prune": (
            "the full database with postsave's relay worker, recalc worker (2) and beat "
            f"running; open loop {profile.scale_rate:.0f} events/s (figure 1's SQL producer, "
            f"{OPEN_LOOP_CLIENTS} clients): {window} without a prune, then from the producer's "
            "first commits `postsave prune --older-than 8d` as a subprocess (the command line, "
            "1,000 per transaction) and the producer stopped when it ends, then (after 8b's "
            f"VACUUM) {window} without a prune again; each window starts from a drained outbox; "
            "during = events committed while the command ran (its start-up included); commit to "
            "applied from the database clock; load 1m = the machine's load average as the window "
            "ended (it is shared); goal: p99 during within 2x of without"
        ),
    }


def tables(results: Results) -> str | None:
    found, conditions = results.get("scale"), results["conditions"]
    if not found:
        return None
    history, rows = found["history"], []
    for name, op in found["operations"].items():
        goal = f"<= {op['goal_ratio']:g}x" if op.get("goal_ratio") else "-"
        if name == "rebuild":
            goal = f"< {found['rebuild_goal_s']:g} s at 10,000,000"
        rows.append(
            [op["what"], op["repetitions"], op["empty_ms"], op["full_ms"], op["ratio"], goal]
        )
    if replay := found.get("replay"):
        rows.append(
            [
                f"rebuild replaying {replay['events']:,} events ({replay['per_s']:,.0f}/s), "
                f"the bars {'as' if replay['holds'] else 'NOT as'} before",
                1, None, replay["seconds"] * 1000.0, None, "-",
            ]
        )  # fmt: skip
    operations = table(
        f"8. History at scale: {history:,} processed events in the log against none",
        conditions["scale"],
        f"operation | times | empty ms | {history:,} ms | x empty | goal",
        rows,
    )

    sizes, labels = (
        found["sizes"],
        {
            "before": "before the prune",
            "after_prune": f"after prune --older-than {found['older_than']}",
            "after_vacuum": "after a plain VACUUM",
        },
    )
    rows = [
        [label, *(sizes[key][t][k] for t in TABLES for k in ("mb", "rows"))]
        for key, label in labels.items()
    ]
    note = f"; the VACUUM took {found['vacuum_s']:.2f} s"
    megabytes = {key: sum(sizes[key][t]["mb"] for t in TABLES) for key in labels}
    if megabytes["after_vacuum"] > 0.9 * megabytes["before"]:
        note += (
            "; the files keep their size: the prune deletes rows and a plain VACUUM makes their "
            "space reusable by new rows, it does not give it back (the pruned rows are the "
            "oldest, at the start of the files: nothing to truncate at the end); VACUUM FULL "
            "or pg_repack would, under a lock"
        )
    sizes_table = table(
        "8b. History at scale: the full database's tables",
        conditions["scale_sizes"] + note,
        "when | " + " | ".join(f"{name} MB | rows" for name in TABLES),
        rows,
    )

    prune, without, after = found["prune"], found["without_prune"], found["after"]
    keys = ("seconds", "events", "achieved_per_s", "p50_ms", "p99_ms", "max_ms")
    windows = [("no prune, before", without), ("during the prune", prune["during"])]
    if "after_prune" in found:
        windows.append(("no prune, after (vacuumed)", found["after_prune"]))
    summary = (
        f"; pruned {prune['pruned'] or 0:,} events ({found['prunable_before']:,} were older "
        f"than {found['older_than']} just before) in {prune['seconds']:.1f} s: "
        f"{prune['pruned_per_s'] or 0:,.0f} events/s"
        + ("" if prune["finished"] else " (stopped at the cap: it had not finished)")
        + f"; afterwards verify {'holds' if after['verify_holds'] else 'FAILS'}, the checkpoint "
        f"holds {after['checkpoint_events']:,} events, invariant over the run "
        f"{'holds' if after.get('invariant_holds') else 'BROKEN'}"
    )
    prune_table = table(
        "8c. History at scale: prune with the workers running",
        conditions["scale_prune"] + summary,
        "window | seconds | events | achieved/s | "
        "p50 ms | p99 ms | max ms | x p99 before | load 1m",
        [
            [
                label,
                *(e[key] for key in keys),
                e["p99_ms"] / without["p99_ms"],
                e.get("load_1m_at_end"),
            ]
            for label, e in windows
        ],
    )
    return "\n".join((operations, sizes_table, prune_table))


FIGURE = Figure("scale", conditions, tables, run=run)
