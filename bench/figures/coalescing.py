"""Figure 7, coalescing the heavy step: a burst of events over many bars drained with coalescing
on, against the same pipeline making one full pass per event (POSTSAVE_COALESCE_LIMIT=0: each
part's pass applies one event). That one is capped: its drain is then projected from its rate,
and coalescing, turned back on, drains the rest before the invariant is checked."""

from __future__ import annotations

import time
from typing import Any

import psycopg

from bench.harness import processes as procs
from bench.harness.contenders import Contender, Postsave
from bench.harness.data import execute, insert_bars
from bench.harness.processes import step
from bench.harness.profile import Profile
from bench.harness.report import Results, table
from bench.harness.run import Figure, Run
from bench.harness.workload import complete_in_one_transaction, nudge


def _burst(contender: Postsave, count: int, label: str, cap_s: float) -> dict[str, Any]:
    """Outbox rows committed in one transaction, the relay nudged right after, as the unit of
    work does; drained (or `cap_s` passed), and the part passes made meanwhile counted."""
    assert contender.log is not None
    window = contender.log.watermark()
    since = int(execute(contender.dsn, "SELECT coalesce(max(id), 0) FROM bench_passes"))
    step(f"fig7: {contender.name}: {count} events at once, {label}")
    complete_in_one_transaction(contender, count)
    nudge(contender)
    deadline = time.monotonic() + cap_s
    while contender.log.unfinished(window) and time.monotonic() < deadline:
        if dead := [p.args for p in contender.started if p.poll() is not None]:
            raise RuntimeError(f"{contender.name}: a process exited: {dead}")
        time.sleep(0.1)
    times = contender.log.times(window)
    applied = [a for _, a in times if a is not None]
    first = min(c for c, _ in times)
    passes = execute(contender.dsn, "SELECT count(*) FROM bench_passes WHERE id > %s", since)
    drained = len(applied) == len(times)
    return {
        "events": len(times),
        "applied": len(applied),
        # Capped: projected from the rate so far (the table marks it ~).
        "drain_s": (max(applied) - first) * (1 if drained else len(times) / max(len(applied), 1)),
        "capped_at_s": None if drained else cap_s,
        "passes": int(passes),
    }


def measure(run: Run, contender: Contender) -> None:
    assert isinstance(contender, Postsave)
    bars, events = run.profile.coalesce_bars, run.profile.coalesce_events
    before = contender.drift()
    step(f"fig7: {contender.name}: growing to {bars:,} bars")
    with psycopg.connect(contender.dsn) as connection:
        count = connection.execute("SELECT count(*) FROM bars").fetchone()
        assert count is not None
        insert_bars(connection, max(bars - count[0], 0))  # as create_bars makes them
    execute(contender.dsn, "VACUUM ANALYZE")
    default_env = dict(contender.settings_env)
    coalesced = _burst(contender, events, "coalescing on", 60.0 + events * 2.0)
    contender.restart_recalc({**default_env, "POSTSAVE_COALESCE_LIMIT": "0"})
    try:
        separate = _burst(contender, events, "one pass per event", run.profile.coalesce_cap_s)
    finally:
        contender.restart_recalc(default_env)
    if separate["capped_at_s"]:
        step(f"fig7: {contender.name}: the rest with coalescing on")
        nudge(contender)
        assert contender.log is not None
        procs.wait_until(
            lambda: contender.log is not None and contender.log.unfinished(0) == 0,
            f"{contender.name}: the rest of the burst applied",
            timeout_s=120.0 + events,
            alive=contender.started,
            interval_s=0.2,
        )
    run.results["figure7"] = {
        "bars": bars,
        "events": events,
        "coalesced": coalesced,
        "separate": separate,
        "ratio": coalesced["drain_s"] / separate["drain_s"],
        **contender.invariant(before),
    }


def conditions(profile: Profile) -> dict[str, str]:
    return {
        "figure7": (
            f"{profile.coalesce_events} events committed in one transaction over "
            f"{profile.coalesce_bars:,} bars (parts of 1,000), the relay nudged after the "
            "commit; drain = first commit to last apply (database clock); postsave-pg's workers "
            "(recalc prefork 2, the example's recalculation) with coalescing on "
            "(POSTSAVE_COALESCE_LIMIT 500), then restarted with POSTSAVE_COALESCE_LIMIT=0: one "
            "full pass (every part) per event, capped at "
            f"{profile.coalesce_cap_s:.0f} s and then projected from its rate (marked ~); "
            "passes = part passes made meanwhile (bench_passes, a trigger on bar_parts); one run "
            "each, after every other postsave-pg figure; invariant after the whole burst is "
            "applied"
        )
    }


def tables(results: Results) -> str | None:
    fig7 = results.get("figure7")
    if not fig7:
        return None
    rows = [
        [
            label,
            (found := fig7[key])["events"],
            found.get("applied", found["events"]),
            found["passes"],
            f"~{found['drain_s']:,.0f}" if found.get("capped_at_s") else found["drain_s"],
            found["drain_s"] / fig7["separate"]["drain_s"],
            invariant,
        ]
        for label, key, invariant in (
            ("coalescing on", "coalesced", fig7.get("invariant_holds")),
            ("one pass per event", "separate", None),
        )
    ]
    return table(
        f"7. Coalescing the heavy step ({fig7['bars']:,} bars)",
        results["conditions"]["figure7"],
        "postsave-pg | events | applied | part passes | drain s | x one pass per event | invariant",
        rows,
    )


# Last of postsave-pg's figures: it leaves the contender's database with many more bars.
FIGURE = Figure(
    "coalescing", conditions, tables, takes=lambda _: ("postsave-pg",), measure=measure, late=True
)
