"""Figure 6, reference lines: what this machine allows, measured beside the results."""

from __future__ import annotations

import contextlib
import glob
import itertools
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from kombu import Connection, Exchange, Producer, Queue

from bench.harness.processes import step
from bench.harness.product import postsave
from bench.harness.profile import Profile
from bench.harness.report import Results, table
from bench.harness.run import Figure, Run
from domain import use_cases


def pg_test_fsync(seconds: int) -> dict[str, Any]:
    """Only the first section (one 8 kB write per sync) is read; the rest is not waited for."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_test_fsync"))
    if not found:
        return {"available": False}
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-fsync-", dir="/var/tmp") as directory:
        process = subprocess.Popen(
            [found[-1], "-s", str(seconds), "-f", str(Path(directory) / "fsync.test")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert process.stdout is not None
        deadline = time.monotonic() + 10 * seconds + 30
        try:
            for line in process.stdout:
                lines.append(line.rstrip())
                stripped = line.strip()
                if stripped.startswith("fdatasync") or time.monotonic() > deadline:
                    break
        finally:
            process.kill()
            process.wait()
    result: dict[str, Any] = {"available": True, "binary": found[-1], "seconds": seconds}
    for line in lines:
        parts = line.split()
        if parts and parts[0] in ("open_datasync", "fdatasync") and "ops/sec" in line:
            result[parts[0]] = line.strip()
            with contextlib.suppress(ValueError):  # "n/a*" where the method is unsupported
                result[f"{parts[0]}_ops_per_s"] = float(parts[1])
    return result


def _repeat_for(seconds: float, once: Callable[[int], object], unit: str) -> dict[str, Any]:
    """Call `once(i)` for i = 0, 1, ... until `seconds` have passed: `unit` is what a call is."""
    count = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        once(count)
        count += 1
    elapsed = time.perf_counter() - started
    return {unit: count, "seconds": elapsed, "per_s": count / elapsed}


def insert_commit_rate(dsn: str, seconds: float) -> dict[str, Any]:
    """Single-row INSERT and COMMIT from one client: the floor of any transactional write."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("CREATE TABLE bench_reference (id bigserial PRIMARY KEY, v int)")
        insert = "INSERT INTO bench_reference (v) VALUES (1)"
        found = _repeat_for(seconds, lambda _: connection.execute(insert), "commits")
        connection.execute("DROP TABLE bench_reference")
    return found


def kombu_publish_rate(amqp_url: str, seconds: float) -> dict[str, Any]:
    """kombu's Producer.publish of a small JSON body, no confirms: the broker client's floor."""
    queue = Queue("bench.kombu", Exchange("bench.kombu", type="direct"), routing_key="bench.kombu")
    with Connection(amqp_url) as connection:
        channel = connection.channel()
        queue(channel).declare()
        producer = Producer(channel, exchange=queue.exchange, routing_key="bench.kombu")
        found = _repeat_for(
            seconds, lambda i: producer.publish({"event_id": i}, serializer="json"), "messages"
        )
        queue(channel).delete()
    return found


def use_case_rate(database_url: str, amqp_url: str, seconds: float) -> dict[str, Any]:
    """postsave's write path as an application calls it (use_cases.complete_foo: a load,
    version-checked update, outbox insert, commit), one client, without and with the nudge.
    No worker runs: nudges wait in postsave.poll, which keeps only the newest."""
    result: dict[str, Any] = {}
    foo_ids = itertools.count(1)  # each foo completed once, across both loops
    for nudge in (False, True):
        with postsave(database_url, amqp_url, nudge=nudge) as container:
            use_cases.complete_foo(container.uow(), next(foo_ids))  # connections: not timed
            if container.relay_nudge is not None:
                container.relay_nudge.flush()  # the broker connection too
            result["with_nudge" if nudge else "without_nudge"] = _repeat_for(
                seconds, lambda _: use_cases.complete_foo(container.uow(), next(foo_ids)), "commits"
            )
    return result


def conditions(profile: Profile) -> dict[str, str]:
    return {
        "figure6": (
            f"pg_test_fsync -s {profile.fsync_seconds} on the PostgreSQL data filesystem; loops "
            f"of {profile.reference_seconds:.1f} s from one client"
        )
    }


def run(bench: Run) -> None:
    database, seconds = bench.roles["misc"], bench.profile.reference_seconds
    step(f"fig6: pg_test_fsync -s {bench.profile.fsync_seconds} (first section only)")
    fsync = pg_test_fsync(bench.profile.fsync_seconds)
    step("fig6: single-row insert-and-commit rate")
    inserts = insert_commit_rate(database.conninfo, seconds)
    step("fig6: raw kombu publish rate")
    kombu = kombu_publish_rate(bench.amqp_url, seconds)
    step("fig6: postsave's write path (use_cases.complete_foo), one client")
    bench.results["figure6"] = {
        "pg_test_fsync": fsync,
        "insert_commit": inserts,
        "kombu_publish": kombu,
        "complete_foo": use_case_rate(database.url, bench.amqp_url, seconds),
    }


def tables(results: Results) -> str | None:
    fig6 = results.get("figure6")
    if not fig6:
        return None
    fsync, use_case = fig6["pg_test_fsync"], fig6.get("complete_foo", {})
    rows = [
        [f"pg_test_fsync {m} (8 kB write + sync)", fsync.get(f"{m}_ops_per_s"), "ops/s"]
        for m in ("open_datasync", "fdatasync")
    ]
    rows += [
        ["single-row INSERT + COMMIT, one client", fig6["insert_commit"]["per_s"], "commits/s"],
        ["raw kombu publish, no confirms", fig6["kombu_publish"]["per_s"], "messages/s"],
    ]
    rows += [
        [
            f"postsave use_cases.complete_foo, one client, {label}",
            use_case[key]["per_s"],
            "commits/s",
        ]
        for label, key in (("no nudge", "without_nudge"), ("nudge=True", "with_nudge"))
        if key in use_case
    ]
    if biggest := results.get("figure5", [])[-1:]:
        rows.append(
            [
                f"set-based UPDATE over {biggest[0]['bars']:,} bars",
                biggest[0]["set_based_rows_per_s"],
                "rows/s",
            ]
        )
        if "passes_rows_per_s" in biggest[0]:
            rows.append(
                [
                    f"passes over {biggest[0]['bars']:,} bars (example recalculation), one process",
                    biggest[0]["passes_rows_per_s"],
                    "bars/s",
                ]
            )
    return table("6. Reference lines", results["conditions"]["figure6"], "what | rate | unit", rows)


FIGURE = Figure("reference", conditions, tables, run=run)
