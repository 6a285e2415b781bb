"""Figure 2, commit-to-processed latency under an open-loop load (events due on a schedule,
whether or not the pipeline keeps up), and 2b, where postsave's latency goes."""

from __future__ import annotations

from typing import Any

from bench.figures.throughput import USE_CASES
from bench.harness.contenders import Contender, Postsave
from bench.harness.processes import step
from bench.harness.profile import OPEN_LOOP_CLIENTS, Profile
from bench.harness.report import Results, percentile, summary_ms, table
from bench.harness.run import Figure, Run
from bench.harness.workload import drain_budget, produce, wait_processed

BREAKDOWN = ("relay_p50_ms", "relay_p99_ms", "worker_p50_ms", "worker_p99_ms")


def conditions(profile: Profile) -> dict[str, str]:
    loads = ", ".join(f"{rate:.0f}/s for {seconds:g} s" for rate, seconds in profile.loads)
    embedded = "postsave-embedded" in profile.latency_contenders
    return {
        "figure2": (
            f"open loop ({loads}; 4 client threads on a schedule, 1 on SQLite, connected before "
            "it starts; figure 1's producers, postsave's through the use cases), "
            f"{profile.bars} bars; commit to applied from the database clock; one run per load; "
            "goal: postsave-pg's p99 at 1000/s offered at most 100 ms (goal 50 ms)"
            + (
                f"; embedded default only up to {profile.embedded_max_load:.0f}/s"
                if embedded
                else ""
            )
        )
    }


def breakdown(contender: Contender, window: int) -> dict[str, float | int]:
    """Commit to dispatch (the relay) and dispatch to applied (broker and worker); events
    applied by another event's pass before being dispatched have no dispatch time."""
    assert contender.log is not None
    rows = contender.log.rows(
        "SELECT extract(epoch FROM dispatched_at - occurred_at)::float8,"
        " extract(epoch FROM applied_at - dispatched_at)::float8"
        " FROM outbox_events WHERE id > %s",
        window,
    )
    relay = [r[0] for r in rows if r[0] is not None]
    worker = [r[1] for r in rows if r[1] is not None]
    return {
        "events": len(rows),
        "coalesced_before_dispatch": sum(1 for r in rows if r[0] is None),
        **{f"relay_p{q}_ms": percentile(relay, q) * 1000.0 for q in (50, 99)},
        **{f"worker_p{q}_ms": percentile(worker, q) * 1000.0 for q in (50, 99)},
    }


def measure(run: Run, contender: Contender) -> None:
    """Open loop at each offered load; commit-to-applied latency from the database clock."""
    assert contender.log is not None
    embedded = contender.name == "postsave-embedded"
    producer = USE_CASES if contender.kind == "postsave" else None  # as figure 1's headline
    runs = []
    for rate, seconds in run.profile.loads:
        if embedded and rate > run.profile.embedded_max_load:
            continue
        step(f"fig2: {contender.name}: {rate:.0f} events/s offered for {seconds:g} s")
        count, window = max(1, round(rate * seconds)), contender.log.watermark()
        # Clients that cannot keep to the schedule stop 2 s after its end: bounded in time, and
        # "achieved" then tells the offered load apart from what the clients could commit.
        threads = 1 if embedded else OPEN_LOOP_CLIENTS
        produced = produce(contender, count, rate, seconds + 2.0, producer, threads)
        wait_processed(contender, window, drain_budget(count))
        times = contender.log.times(window)
        latencies = [a - c for c, a in times if a is not None]
        found: dict[str, Any] = {}
        if isinstance(contender, Postsave) and contender.dsn:
            found["breakdown"] = breakdown(contender, window)
        runs.append(
            found
            | {"offered_per_s": rate, "achieved_per_s": produced.rate, "events": len(times)}
            | summary_ms(latencies)
            | {"latencies_ms": [round(x * 1000.0, 1) for x in latencies]}
        )
    run.results.setdefault("figure2", {})[contender.name] = runs


def tables(results: Results) -> str | None:
    fig2 = results.get("figure2", {})
    if not fig2:
        return None
    keys = ("offered_per_s", "achieved_per_s", "events", "p50_ms", "p99_ms", "max_ms")
    latency = table(
        "2. Commit-to-processed latency, open loop",
        results["conditions"]["figure2"],
        "contender | offered/s | achieved/s | events | p50 ms | p99 ms | max ms",
        [[name, *(r[key] for key in keys)] for name, runs in fig2.items() for r in runs],
    )
    keys = ("events", "coalesced_before_dispatch", *BREAKDOWN)
    rows = [
        [name, r["offered_per_s"], *(b[key] for key in keys)]
        for name, runs in fig2.items()
        for r in runs
        if (b := r.get("breakdown"))
    ]
    if not rows:
        return latency
    return (
        latency
        + "\n"
        + table(
            "2b. Where postsave's latency goes",
            "from outbox_events: relay = dispatched_at - occurred_at, worker = applied_at - "
            "dispatched_at; coalesced = applied by another event's pass before any dispatch",
            "contender | offered/s | events | coalesced | "
            "relay p50 ms | relay p99 ms | worker p50 ms | worker p99 ms",
            rows,
        )
    )


FIGURE = Figure(
    "latency", conditions, tables, takes=lambda p: p.latency_contenders, measure=measure
)
