"""The write path alone: postsave's domain service calls as an application makes them.

`domain.use_cases.create_foos` (one foo), `complete_foo`, `revise_foo` and `cancel_foo`, each
through `Container(Settings(...), nudge=True)` and a `container.uow()` per call, with one
client and with four (threads in one process sharing the container, each on its own foos),
side by side with the floor of any transactional write: a single-row INSERT + COMMIT from one
psycopg connection per client. No worker runs: the nudges wait in postsave.poll, which keeps
only the newest.

`python -m bench.writepath [--quick | --full]` runs this figure alone."""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg

from bench import alone, report
from bench.product import postsave
from bench.progress import step
from bench.services import Database, RunServices
from bench.stats import median, summary_ms
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


def _reference_calls(conninfo: str, clients: int) -> tuple[list[Any], list[Call]]:
    connections = [psycopg.connect(conninfo, autocommit=True) for _ in range(clients)]

    def insert(connection: psycopg.Connection) -> Call:
        return lambda _: connection.execute(f"INSERT INTO {REFERENCE_TABLE} (v) VALUES (1)")

    return connections, [insert(connection) for connection in connections]


def _use_case_calls(
    container: Container, operation: str, ids: Sequence[Sequence[int]]
) -> list[Call]:
    """One call per client; `ids[c]` are client c's own foos (none for create)."""

    def make(mine: Sequence[int]) -> Call:
        if operation == "create":
            return lambda _: use_cases.create_foos(container.uow(), AMOUNT)
        if operation == "complete":
            return lambda i: use_cases.complete_foo(container.uow(), mine[i])
        if operation == "revise":
            return lambda i: use_cases.revise_foo(container.uow(), mine[i], REVISED)
        if operation == "cancel":
            return lambda i: use_cases.cancel_foo(container.uow(), mine[i])
        raise ValueError(operation)

    return [make(mine) for mine in ids]


def _outbox_rows(conninfo: str) -> int:
    with psycopg.connect(conninfo) as connection:
        row = connection.execute("SELECT count(*) FROM outbox_events").fetchone()
    return int(row[0]) if row else 0


def figure(database: Database, amqp_url: str, seconds: float, rounds: int = 1) -> dict[str, Any]:
    """`rounds` times: the reference, then each operation, for one client and then four."""
    conninfo = database.conninfo
    budget = max(1_000, math.ceil(seconds * PER_CLIENT_PER_S))
    per_op = budget * sum(CLIENTS) * rounds
    step(f"writepath: preparing {per_op:,} pending and {2 * per_op:,} completed foos")
    pending = _prepare(conninfo, "pending", per_op)
    completed = {op: _prepare(conninfo, "completed", per_op) for op in ("revise", "cancel")}
    foos = {"create": [], "complete": pending, **completed}
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE foos")
        connection.execute(
            f"CREATE TABLE IF NOT EXISTS {REFERENCE_TABLE} (id bigserial PRIMARY KEY, v int)"
        )
    outbox_before = _outbox_rows(conninfo)
    measured: list[list[dict[str, Any]]] = []
    try:
        with postsave(database.url, amqp_url, nudge=True) as container:
            taken = dict.fromkeys(OPERATIONS, 0)
            for clients in [c for _ in range(rounds) for c in CLIENTS]:
                if clients == CLIENTS[0]:
                    measured.append([])
                cells = measured[-1]
                round_no = f"round {len(measured)}/{rounds}"
                step(f"writepath: {round_no}: single-row INSERT + COMMIT, {clients} client(s)")
                connections, calls = _reference_calls(conninfo, clients)
                try:
                    cell = _run_cell([(call, sys.maxsize) for call in calls], seconds)
                finally:
                    for connection in connections:
                        connection.close()
                cells.append({"operation": "reference", **cell})
                for operation in OPERATIONS:
                    step(f"writepath: {round_no}: {operation}, {clients} client(s), nudge=True")
                    start = taken[operation]
                    ids = [
                        foos[operation][start + c * budget : start + (c + 1) * budget]
                        for c in range(clients)
                    ]
                    taken[operation] += clients * budget
                    calls = _use_case_calls(container, operation, ids)
                    budgets = [budget if operation == "create" else len(mine) for mine in ids]
                    cell = _run_cell(list(zip(calls, budgets, strict=True)), seconds)
                    cells.append({"operation": operation, **cell})
            nudge_problem = container.nudge_problem()
    finally:
        with psycopg.connect(conninfo, autocommit=True) as connection:
            connection.execute(f"DROP TABLE IF EXISTS {REFERENCE_TABLE}")
    cells = _combine(measured)
    # Every complete, revise and cancel wrote one event, plus their untimed first calls.
    expected = sum(
        c["commits"] + c["clients"] * rounds for c in cells if c["operation"] in OPERATIONS[1:]
    )
    complete_1 = next(c for c in cells if c["operation"] == "complete" and c["clients"] == 1)
    return {
        "seconds": seconds,
        "rounds": rounds,
        "cells": cells,
        "goal_min": 0.4,
        "goal": 0.6,
        "complete_one_client_x_reference": complete_1["x_reference"],
        "events_written": _outbox_rows(conninfo) - outbox_before,
        "events_expected": expected,
        "nudge_problem": nudge_problem,
    }


# --- alone ---------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = alone.parser(
        "python -m bench.writepath", __doc__, "0.5 s per cell, one round", "2 s per cell, 3 rounds"
    ).parse_args(argv)
    profile = alone.profile_of(args)

    def run(services: RunServices) -> dict[str, Any]:
        database = alone.migrated(services, "writepath", profile)
        os.environ["POSTSAVE_DATABASE_URL"] = database.url  # nothing falls back on ./var
        seconds, rounds = profile.writepath_seconds, profile.writepath_rounds
        return figure(database, services.amqp_url, seconds, rounds)

    return alone.run("writepath", profile, args.json, run, report.writepath)


if __name__ == "__main__":
    raise SystemExit(main())
