"""Figure 6b, the write path alone: postsave's domain service calls as an application makes them,
with one client and with four, side by side with a single-row INSERT + COMMIT per client (the
conditions below say exactly how). `python -m bench --only writepath [--quick]` runs it alone."""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg

from bench.harness.data import execute
from bench.harness.processes import step
from bench.harness.product import postsave
from bench.harness.profile import Profile
from bench.harness.report import Results, median, summary_ms, table
from bench.harness.run import Figure, Run
from domain import use_cases
from infrastructure.bootstrap import Container

CLIENTS = (1, 4)
OPERATIONS = ("create", "complete", "revise", "cancel")
AMOUNT = 10  # every prepared foo's amount; revise sets REVISED: a delta, so an event
REVISED = 11
PER_CLIENT_PER_S = 2_000  # foos prepared per client, operation and second: above any rate seen
REFERENCE_TABLE = "bench_writepath_reference"

Call = Callable[[int], object]  # one timed call, given the client's i-th foo (or i)


def _prepare(conninfo: str, state: str, count: int) -> list[int]:
    """`count` foos in `state`, in one INSERT (untimed): their ids in order."""
    with psycopg.connect(conninfo) as connection:
        rows = connection.execute(
            "INSERT INTO foos (amount, state, version) "
            "SELECT %s, %s, 1 FROM generate_series(1, %s) RETURNING id",
            (AMOUNT, state, count),
        ).fetchall()
    return sorted(row[0] for row in rows)


def _run_cell(calls: Sequence[tuple[Call, int]], seconds: float) -> dict[str, Any]:
    """One thread per (call, budget): an untimed first call, then calls until `seconds` have
    passed (or the client's budget of foos is spent), each timed whole; all start together."""
    ready = threading.Barrier(len(calls))

    def client(call: Call, budget: int) -> tuple[list[float], bool, float, float]:
        try:
            call(0)  # connections, plans, the nudge's broker connection: not timed
            ready.wait()
        except BaseException:
            ready.abort()  # the others stop waiting too
            raise
        latencies: list[float] = []
        started = time.perf_counter()
        i = 1
        while time.perf_counter() - started < seconds:
            if i >= budget:
                return latencies, True, started, time.perf_counter()
            before = time.perf_counter()
            call(i)
            latencies.append(time.perf_counter() - before)
            i += 1
        return latencies, False, started, time.perf_counter()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(client, call, budget) for call, budget in calls]
        done = [future.result() for future in futures]
    merged = [latency for latencies, *_ in done for latency in latencies]
    wall = max(d[3] for d in done) - min(d[2] for d in done)
    return {
        "clients": len(calls),
        "commits": len(merged),
        "seconds": wall,
        "per_s": len(merged) / wall,
        "exhausted": any(d[1] for d in done),
        "latencies": merged,
    }


def _combine(rounds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One cell per operation and clients from every round's: the median rate, the median of
    the ratios each round measured against its own reference (the machine is shared: side by
    side is what compares), latencies over every call."""
    cells = []
    for index, first in enumerate(rounds[0]):
        same = [cells_of_round[index] for cells_of_round in rounds]
        ratios = [
            cell["per_s"] / _reference(cells_of_round, cell["clients"])
            for cell, cells_of_round in zip(same, rounds, strict=True)
        ]
        latencies = [latency for cell in same for latency in cell["latencies"]]
        cells.append(
            {
                "operation": first["operation"],
                "clients": first["clients"],
                "commits": sum(cell["commits"] for cell in same),
                "seconds": sum(cell["seconds"] for cell in same),
                "per_s": median([cell["per_s"] for cell in same]),
                "x_reference": median(ratios),
                "x_reference_per_round": ratios,
                "exhausted": any(cell["exhausted"] for cell in same),
                **summary_ms(latencies),
            }
        )
    return cells


def _reference(cells: list[dict[str, Any]], clients: int) -> float:
    return float(
        next(c["per_s"] for c in cells if c["operation"] == "reference" and c["clients"] == clients)
    )


def _calls(container: Container, operation: str, ids: Sequence[Sequence[int]]) -> list[Call]:
    """One call per client; `ids[c]` are client c's own foos (none for create)."""
    make: dict[str, Callable[[Sequence[int]], Call]] = {
        "create": lambda _: lambda _i: use_cases.create_foos(container.uow(), AMOUNT),
        "complete": lambda mine: lambda i: use_cases.complete_foo(container.uow(), mine[i]),
        "revise": lambda mine: lambda i: use_cases.revise_foo(container.uow(), mine[i], REVISED),
        "cancel": lambda mine: lambda i: use_cases.cancel_foo(container.uow(), mine[i]),
    }
    return [make[operation](mine) for mine in ids]


def _reference_cell(conninfo: str, clients: int, seconds: float) -> dict[str, Any]:
    connections = [psycopg.connect(conninfo, autocommit=True) for _ in range(clients)]
    insert = f"INSERT INTO {REFERENCE_TABLE} (v) VALUES (1)"
    try:

        def call(connection: psycopg.Connection) -> Call:
            return lambda _: connection.execute(insert)

        return _run_cell([(call(c), sys.maxsize) for c in connections], seconds)
    finally:
        for connection in connections:
            connection.close()


def run(bench: Run) -> None:
    """`rounds` times: the reference, then each operation, for one client and then four."""
    database, seconds = bench.roles["writepath"], bench.profile.writepath_seconds
    conninfo, rounds = database.conninfo, bench.profile.writepath_rounds
    budget = max(1_000, math.ceil(seconds * PER_CLIENT_PER_S))
    per_op = budget * sum(CLIENTS) * rounds
    step(f"writepath: preparing {per_op:,} pending and {2 * per_op:,} completed foos")
    foos = {"create": [], "complete": _prepare(conninfo, "pending", per_op)}
    foos |= {op: _prepare(conninfo, "completed", per_op) for op in ("revise", "cancel")}
    execute(conninfo, "VACUUM ANALYZE foos")
    execute(conninfo, f"CREATE TABLE {REFERENCE_TABLE} (id bigserial PRIMARY KEY, v int)")
    count_events = "SELECT count(*) FROM outbox_events"
    outbox_before = execute(conninfo, count_events)
    measured: list[list[dict[str, Any]]] = []
    taken = dict.fromkeys(OPERATIONS, 0)
    with postsave(database.url, bench.amqp_url, nudge=True) as container:
        for round_no in range(1, rounds + 1):
            cells: list[dict[str, Any]] = []
            for clients in CLIENTS:
                label = f"writepath: round {round_no}/{rounds}"
                step(f"{label}: single-row INSERT + COMMIT, {clients} client(s)")
                cell = _reference_cell(conninfo, clients, seconds)
                cells.append({"operation": "reference", **cell})
                for operation in OPERATIONS:
                    step(f"{label}: {operation}, {clients} client(s), nudge=True")
                    start = taken[operation]
                    taken[operation] += clients * budget
                    ids = [
                        foos[operation][start + c * budget : start + (c + 1) * budget]
                        for c in range(clients)
                    ]
                    budgets = [budget if operation == "create" else len(mine) for mine in ids]
                    calls = zip(_calls(container, operation, ids), budgets, strict=True)
                    cells.append({"operation": operation, **_run_cell(list(calls), seconds)})
            measured.append(cells)
        nudge_problem = container.nudge_problem()
    execute(conninfo, f"DROP TABLE {REFERENCE_TABLE}")
    cells = _combine(measured)
    # Every complete, revise and cancel wrote one event, plus their untimed first calls.
    expected = sum(
        c["commits"] + c["clients"] * rounds for c in cells if c["operation"] in OPERATIONS[1:]
    )
    complete_1 = next(c for c in cells if c["operation"] == "complete" and c["clients"] == 1)
    bench.results["writepath"] = {
        "seconds": seconds,
        "rounds": rounds,
        "cells": cells,
        "goal_min": 0.4,
        "goal": 0.6,
        "complete_one_client_x_reference": complete_1["x_reference"],
        "events_written": execute(conninfo, count_events) - outbox_before,
        "events_expected": expected,
        "nudge_problem": nudge_problem,
    }


def conditions(profile: Profile) -> dict[str, str]:
    return {
        "writepath": (
            "postsave's domain service calls as an application makes them: "
            "domain.use_cases.create_foos (one foo), complete_foo (a pending foo), revise_foo "
            "(a completed foo, its amount changed: an event) and cancel_foo (a completed foo), "
            "each through Container(Settings(PostgreSQL, the run's vhost), nudge=True) and a "
            "container.uow() per call (no worker runs: the nudges wait in postsave.poll, which "
            "keeps only the newest); 1 client, then 4 threads in one process sharing the "
            "container, each on its own foos (prepared untimed in one INSERT); reference: "
            "single-row INSERT + COMMIT, one autocommit psycopg connection per client; each "
            f"cell a loop of {profile.writepath_seconds:g} s after one untimed call per client, "
            f"{profile.writepath_rounds} round(s) of every cell one after another; commits/s = "
            "the median of the rounds; latency = each call timed whole (time.perf_counter); x "
            "reference = the median of each round's ratio to its own reference with as many "
            "clients; goal: complete_foo, one client, nudge=True, at least 0.4x the single-row "
            "reference (goal 0.6x)"
        )
    }


def tables(results: Results) -> str | None:
    found = results.get("writepath")
    if not found:
        return None
    keys = ("operation", "clients", "per_s", "x_reference", "p50_ms", "p99_ms")
    ratio = found["complete_one_client_x_reference"]
    verdict = (
        "meets the goal"
        if ratio >= found["goal"]
        else "meets the minimum, not the goal"
        if ratio >= found["goal_min"]
        else "BELOW the minimum"
    )
    summary = f"; complete_foo, one client: {ratio:.2f}x: {verdict}"
    if found["events_written"] != found["events_expected"]:
        written, expected = found["events_written"], found["events_expected"]
        summary += f"; outbox rows written {written:,}, expected {expected:,}"
    if any(c.get("exhausted") for c in found["cells"]):
        summary += "; a client ran out of prepared foos (its loop ended early)"
    if found.get("nudge_problem"):
        summary += f"; the last nudge failed: {found['nudge_problem']}"
    return table(
        "6b. The write path alone",
        results["conditions"]["writepath"] + summary,
        "operation | clients | commits/s | x reference | p50 ms | p99 ms",
        [[c[key] for key in keys] for c in found["cells"]],
    )


FIGURE = Figure("writepath", conditions, tables, run=run)
