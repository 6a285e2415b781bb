"""Figure 1, end-to-end throughput: each contender's events/s from the first commit until every
event has reached every bar (the ceiling: first publish to an empty queue)."""

from __future__ import annotations

import time
from typing import Any

from kombu import Connection

from bench.harness.contenders import CeleryContender, Contender, NaiveTimer
from bench.harness.data import row
from bench.harness.processes import step
from bench.harness.profile import LEASE_S, POLL_INTERVAL_S, Profile
from bench.harness.report import Results, median, summary_ms, table
from bench.harness.run import Figure, Run
from bench.harness.services import ready as queue_ready
from bench.harness.workload import (
    drain_budget,
    finish_producer,
    produce,
    start_producer,
    wait_processed,
)

USE_CASES = "postsave-use-cases"  # the producer that completes foos as applications do
SQL_REFERENCE = "hand-written SQL, reference"
CONTENDERS = ("ceiling", "naive", "direct", "procrastinate", "postsave-pg", "postsave-embedded")


def conditions(profile: Profile) -> dict[str, str]:
    return {
        "figure1": (
            f"{profile.events} events (embedded default: {profile.embedded_events}), one foo "
            f"completed per transaction by {profile.producer_threads} client threads as fast as "
            f"they go, {profile.bars} bars; postsave's producers call "
            "domain.use_cases.complete_foo as an application does (Container(nudge=True), a "
            "unit of work per call: the foo's load, then its version-checked update with its "
            "event); every other producer runs the same hand-written SQL (complete the foo, "
            "insert its event row), and so does 'postsave-pg (hand-written SQL, reference)', "
            "whose event row is the outbox row, the relay nudged after the commit; first commit "
            "to last apply, database clock; median of "
            f"{profile.repetitions}; ceiling: first publish to empty queue; postsave poll "
            f"interval {POLL_INTERVAL_S:.0f} s, batch 100, max in flight 1000, "
            f"lease {LEASE_S:.0f} s; goal: postsave-pg, fed through the use cases, "
            "at least 0.5x the ceiling (goal 0.7x)"
        )
    }


def throughput_run(contender: Contender, count: int, producer: str | None = None) -> dict[str, Any]:
    """Figure 1: events/s from the first commit until every event has reached every bar."""
    if isinstance(contender, CeleryContender) and contender.log is None:  # the ceiling
        return _ceiling_run(contender, count)
    assert contender.log is not None
    window = contender.log.watermark()
    produced = produce(contender, count, producer=producer)
    wait_processed(contender, window, drain_budget(count))
    times = contender.log.times(window)
    first = min(c for c, _ in times)
    last = max(a for _, a in times if a is not None)
    result: dict[str, Any] = {
        "events": len(times),
        "seconds": last - first,
        "events_per_s": len(times) / (last - first),
        "producer_per_s": produced.rate,
        **summary_ms([a - c for c, a in times if a is not None]),
    }
    if isinstance(contender, NaiveTimer):  # ticks, foos scanned and bars rewritten meanwhile
        found = row(
            contender.dsn,
            "SELECT count(*), coalesce(sum(foos_scanned), 0), coalesce(sum(bars_updated), 0)"
            " FROM bench_ticks WHERE ticked_at BETWEEN to_timestamp(%s) AND to_timestamp(%s)",
            first,
            last,
        )
        result["work"] = work = dict(
            zip(("ticks", "foos_scanned", "bars_updated"), map(int, found), strict=True)
        )
        result["rows_per_event"] = (work["foos_scanned"] + work["bars_updated"]) / len(times)
    return result


def _ceiling_run(contender: CeleryContender, count: int) -> dict[str, Any]:
    """First publish to the last time the queue was seen empty, watched while publishing (so
    the producer's own exit is not counted); the last <= 2 messages are then in the pool."""
    process = start_producer(contender, count, None)
    empty_since: float | None = None
    deadline = time.monotonic() + drain_budget(count)
    watch = Connection(contender.amqp_url)  # kept open: the queue is polled every 10 ms
    while time.monotonic() < deadline:
        ready = queue_ready(contender.amqp_url, contender.queue, watch)
        now = time.time()
        if ready:
            empty_since = None
        elif empty_since is None:
            empty_since = now
        if ready == 0 and process.poll() is not None:
            break
        time.sleep(0.01)
    else:
        process.kill()
        raise TimeoutError("ceiling queue not drained in time")
    watch.release()
    produced = finish_producer(process, 30.0)
    assert produced.first is not None and produced.last is not None and empty_since is not None
    drained = max(empty_since, produced.last)
    return {
        "events": produced.committed,
        "seconds": drained - produced.first,
        "events_per_s": produced.committed / (drained - produced.first),
        "producer_per_s": produced.rate,
    }


def measure(run: Run, contender: Contender) -> None:
    """postsave on PostgreSQL gets two rows: fed through the use cases (what applications get,
    under its name) and through the other contenders' SQL, as a reference."""
    profile = run.profile
    feeds = [(USE_CASES, contender.name), (None, f"{contender.name} ({SQL_REFERENCE})")]
    events = profile.embedded_events if contender.name == "postsave-embedded" else profile.events
    for producer, name in feeds if contender.kind == "postsave" else [(None, contender.name)]:
        runs = []
        before = contender.drift()
        for repetition in range(profile.repetitions):
            step(f"fig1: {name}: {events} events, run {repetition + 1}/{profile.repetitions}")
            runs.append(throughput_run(contender, events, producer))
        rates = [r["events_per_s"] for r in runs]
        fed = "" if producer is None else f"; fed by the producer {producer!r}"
        run.results.setdefault("figure1", {})[name] = {
            **sorted(runs, key=lambda r: r["events_per_s"])[len(runs) // 2],
            "events_per_s": median(rates),
            "min_per_s": min(rates),
            "max_per_s": max(rates),
            "runs": runs,
            **contender.invariant(before),
            "description": contender.description + fed,
        }


def tables(results: Results) -> str | None:
    fig1 = results.get("figure1", {})
    if not fig1:
        return None
    ceiling = fig1.get("ceiling", {}).get("events_per_s")
    keys = ("events", "events_per_s", "min_per_s", "max_per_s")
    rows = [
        [
            name,
            *(e.get(key) for key in keys),
            e["events_per_s"] / ceiling if ceiling else None,
            *(e.get(key) for key in ("producer_per_s", "rows_per_event", "invariant_holds")),
        ]
        for name, e in fig1.items()
    ]
    return table(
        "1. End-to-end throughput",
        results["conditions"]["figure1"],
        "contender | events | events/s | min | "
        "max | x ceiling | producer/s | rows/event | invariant",
        rows,
    )


FIGURE = Figure("throughput", conditions, tables, takes=lambda _: CONTENDERS, measure=measure)
