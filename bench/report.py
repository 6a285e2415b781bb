"""The tables on stdout, one section per figure, and the results as JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.table import table

Results = dict[str, Any]

BREAKDOWN_KEYS = (
    "events",
    "coalesced_before_dispatch",
    "relay_p50_ms",
    "relay_p99_ms",
    "worker_p50_ms",
    "worker_p99_ms",
)
BREAKDOWN_HEADER = ("relay p50 ms", "relay p99 ms", "worker p50 ms", "worker p99 ms")


def header(results: Results) -> str:
    machine = results["machine"]
    return (
        f"postsave benchmark, profile {results['profile']['name']}: {machine['cpus']} CPUs "
        f"({machine['cpu_model']}), PostgreSQL {machine['postgresql']}, RabbitMQ "
        f"{machine['rabbitmq']}, Python {machine['python']}, Celery {machine['celery']}, "
        f"procrastinate {machine['procrastinate']}; {results['started_at']}; "
        f"{results['duration_s']:.0f} s; load average at start "
        f"{', '.join(f'{x:.1f}' for x in machine.get('load_average_at_start', []))}\n"
    )


def restart_warning(results: Results) -> str | None:
    if not results.get("services_restarted_during_run"):
        return None
    return (
        "WARNING: RabbitMQ or PostgreSQL restarted during this run (another suite on the "
        "machine?); its numbers are not comparable.\n"
    )


def contenders(results: Results) -> str:
    fig1 = results.get("figure1", {})
    return (
        "Contenders:\n"
        + "".join(f"- {name}: {entry['description']}\n" for name, entry in fig1.items())
        + "invariant (every table): over that scenario the bars moved by exactly weight x the "
        "amounts of the foos it completed: nothing lost, nothing applied twice.\n"
    )


def throughput(results: Results) -> str | None:
    fig1 = results.get("figure1", {})
    if not fig1:
        return None
    ceiling = fig1.get("ceiling", {}).get("events_per_s")
    rows = []
    for name, entry in fig1.items():
        rate = entry.get("events_per_s")
        rows.append(
            [
                name,
                entry.get("events"),
                rate,
                entry.get("min_per_s"),
                entry.get("max_per_s"),
                rate / ceiling if rate and ceiling else None,
                entry.get("producer_per_s"),
                entry.get("rows_per_event"),
                entry.get("invariant_holds"),
            ]
        )
    return table(
        "1. End-to-end throughput",
        results["conditions"]["figure1"],
        [
            "contender",
            "events",
            "events/s",
            "min",
            "max",
            "x ceiling",
            "producer/s",
            "rows/event",
            "invariant",
        ],
        rows,
    )


def latency(results: Results) -> str | None:
    fig2 = results.get("figure2", {})
    if not fig2:
        return None
    keys = ("offered_per_s", "achieved_per_s", "events", "p50_ms", "p99_ms", "max_ms")
    rows = [[name, *(run[key] for key in keys)] for name, runs in fig2.items() for run in runs]
    return table(
        "2. Commit-to-processed latency, open loop",
        results["conditions"]["figure2"],
        ["contender", "offered/s", "achieved/s", "events", "p50 ms", "p99 ms", "max ms"],
        rows,
    )


def latency_breakdown(results: Results) -> str | None:
    rows = [
        [name, run["offered_per_s"], *(b[key] for key in BREAKDOWN_KEYS)]
        for name, runs in results.get("figure2", {}).items()
        for run in runs
        if (b := run.get("breakdown"))
    ]
    if not rows:
        return None
    return table(
        "2b. Where postsave's latency goes",
        "from outbox_events: relay = dispatched_at - occurred_at, worker = applied_at - "
        "dispatched_at; coalesced = applied by another event's pass before any dispatch",
        ["contender", "offered/s", "events", "coalesced", *BREAKDOWN_HEADER],
        rows,
    )


def dispatch(results: Results) -> str | None:
    fig3 = results.get("figure3")
    if not fig3:
        return None
    confirm = fig3["celery_confirm_publish"]["per_s"]
    methods = (
        ("relay: CeleryDispatcher.dispatch, batches of 100", "relay_dispatch"),
        ("Celery apply_async, confirm_publish=True", "celery_confirm_publish"),
        ("Celery apply_async, no confirms", "celery_unconfirmed"),
    )
    rows = [
        [label, fig3[key]["per_s"], fig3[key]["per_s"] / confirm, fig3[key]["in_queue_after"]]
        for label, key in methods
    ]
    return table(
        "3. Confirmed dispatch rate",
        results["conditions"]["figure3"],
        ["method", "messages/s", "x confirm_publish", "in queue after"],
        rows,
    )


def flood(results: Results) -> str | None:
    fig4 = results.get("figure4", {})
    if not fig4:
        return None
    rows = [
        [
            name,
            r["events"],
            f"~{r['drain_s']:,.0f}" if r.get("capped_at_s") else r["drain_s"],
            r["per_s"],
            r.get("broker_empty_s"),
            r["peak_depth_rabbitmqctl"],
            r["peak_ready_amqp"],
            r.get("invariant_holds"),
        ]
        for name, r in fig4.items()
    ]
    return table(
        "4. Flood drain and broker depth",
        results["conditions"]["figure4"],
        [
            "contender",
            "events",
            "drain s",
            "events/s",
            "broker empty s",
            "peak depth (rabbitmqctl)",
            "peak ready (AMQP)",
            "invariant",
        ],
        rows,
    )


def heavy_step(results: Results) -> str | None:
    fig5 = results.get("figure5", [])
    if not fig5:
        return None
    keys = ("bars", "set_based_ms", "set_based_rows_per_s", "orm_loop_ms", "orm_loop_rows_per_s")
    rows = [[*(r[key] for key in keys), r["speedup"]] for r in fig5]
    return table(
        "5. The heavy step",
        results["conditions"]["figure5"],
        ["bars", "set-based ms", "rows/s", "ORM loop ms", "rows/s", "speedup"],
        rows,
    )


def coalescing(results: Results) -> str | None:
    fig7 = results.get("figure7")
    if not fig7:
        return None
    rows = [
        [
            label,
            fig7[key]["events"],
            fig7[key]["passes"],
            fig7[key]["drain_s"],
            fig7[key]["drain_s"] / fig7["separate"]["drain_s"],
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
        ["postsave-pg", "events", "passes", "drain s", "x one pass per event", "invariant"],
        rows,
    )


def reference_lines(results: Results) -> str | None:
    fig6 = results.get("figure6")
    if not fig6:
        return None
    fsync = fig6["pg_test_fsync"]
    rows = [
        [
            "pg_test_fsync open_datasync (8 kB write + sync)",
            fsync.get("open_datasync_ops_per_s"),
            "ops/s",
        ],
        ["pg_test_fsync fdatasync (8 kB write + sync)", fsync.get("fdatasync_ops_per_s"), "ops/s"],
        ["single-row INSERT + COMMIT, one client", fig6["insert_commit"]["per_s"], "commits/s"],
        ["raw kombu publish, no confirms", fig6["kombu_publish"]["per_s"], "messages/s"],
    ]
    use_case = fig6.get("complete_foo")
    if use_case:
        rows += [
            [
                f"postsave use_cases.complete_foo, one client, {label}",
                use_case[key]["per_s"],
                "commits/s",
            ]
            for label, key in (("no nudge", "without_nudge"), ("nudge=True", "with_nudge"))
        ]
    fig5 = results.get("figure5", [])
    if fig5:
        biggest = fig5[-1]
        rows.append(
            [
                f"set-based UPDATE over {biggest['bars']:,} bars",
                biggest["set_based_rows_per_s"],
                "rows/s",
            ]
        )
    return table(
        "6. Reference lines", results["conditions"]["figure6"], ["what", "rate", "unit"], rows
    )


def writepath(results: Results) -> str | None:
    found = results.get("writepath")
    if not found:
        return None
    rows = [
        [
            c["operation"],
            c["clients"],
            c["per_s"],
            c["x_reference"],
            c["p50_ms"],
            c["p99_ms"],
        ]
        for c in found["cells"]
    ]
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
        summary += (
            f"; outbox rows written {found['events_written']:,}, "
            f"expected {found['events_expected']:,}"
        )
    if any(c.get("exhausted") for c in found["cells"]):
        summary += "; a client ran out of prepared foos (its loop ended early)"
    if found.get("nudge_problem"):
        summary += f"; the last nudge failed: {found['nudge_problem']}"
    return table(
        "6b. The write path alone",
        results["conditions"]["writepath"] + summary,
        ["operation", "clients", "commits/s", "x reference", "p50 ms", "p99 ms"],
        rows,
    )


def scale(results: Results) -> str | None:
    found = results.get("scale")
    if not found:
        return None
    history = found["history"]
    conditions = results["conditions"]
    rows = []
    for name, op in found["operations"].items():
        goal = f"<= {op['goal_ratio']:g}x" if op.get("goal_ratio") else "-"
        if name == "rebuild":
            goal = f"< {found['rebuild_goal_s']:g} s at 10,000,000"
        rows.append(
            [op["what"], op["repetitions"], op["empty_ms"], op["full_ms"], op["ratio"], goal]
        )
    operations = table(
        f"8. History at scale: {history:,} processed events in the log against none",
        conditions["scale"],
        ["operation", "times", "empty ms", f"{history:,} ms", "x empty", "goal"],
        rows,
    )
    sizes = found["sizes"]
    labels = (
        ("before the prune", "before"),
        (f"after prune --older-than {found['older_than']}", "after_prune"),
        ("after a plain VACUUM", "after_vacuum"),
    )
    size_rows = [
        [
            label,
            sizes[key]["outbox_events"]["mb"],
            sizes[key]["outbox_events"]["rows"],
            sizes[key]["applied_events"]["mb"],
            sizes[key]["applied_events"]["rows"],
        ]
        for label, key in labels
    ]
    note = ""
    before_mb = sizes["before"]["outbox_events"]["mb"] + sizes["before"]["applied_events"]["mb"]
    vacuumed_mb = (
        sizes["after_vacuum"]["outbox_events"]["mb"] + sizes["after_vacuum"]["applied_events"]["mb"]
    )
    if vacuumed_mb > 0.9 * before_mb:
        note = (
            "; the files keep their size: the prune deletes rows and a plain VACUUM makes their "
            "space reusable by new rows, it does not give it back (the pruned rows are the "
            "oldest, at the start of the files: nothing to truncate at the end); VACUUM FULL "
            "or pg_repack would, under a lock"
        )
    size_table = table(
        "8b. History at scale: the full database's tables",
        conditions["scale_sizes"] + f"; the VACUUM took {found['vacuum_s']:.2f} s" + note,
        ["when", "outbox_events MB", "rows", "applied_events MB", "rows"],
        size_rows,
    )
    prune, without = found["prune"], found["without_prune"]
    during = prune["during"]
    keys = ("seconds", "events", "achieved_per_s", "p50_ms", "p99_ms", "max_ms")
    windows = [("no prune, before", without), ("during the prune", during)]
    if "after_prune" in found:
        windows.append(("no prune, after (vacuumed)", found["after_prune"]))
    latency_rows = [
        [
            label,
            *(entry[key] for key in keys),
            entry["p99_ms"] / without["p99_ms"],
            entry.get("load_1m_at_end"),
        ]
        for label, entry in windows
    ]
    after = found["after"]
    summary = (
        f"; pruned {prune['pruned'] or 0:,} events ({found['prunable_before']:,} were older "
        f"than {found['older_than']} just before) in {prune['seconds']:.1f} s: "
        f"{prune['pruned_per_s'] or 0:,.0f} events/s"
        + ("" if prune["finished"] else " (stopped at the cap: it had not finished)")
        + f"; afterwards verify {'holds' if after['verify_holds'] else 'FAILS'}, the checkpoint "
        f"holds {after['checkpoint_events']:,} events, invariant over the run "
        f"{'holds' if after.get('invariant_holds') else 'BROKEN'}"
    )
    latency_table = table(
        "8c. History at scale: prune with the workers running",
        conditions["scale_prune"] + summary,
        [
            "window",
            "seconds",
            "events",
            "achieved/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "x p99 before",
            "load 1m",
        ],
        latency_rows,
    )
    return "\n".join((operations, size_table, latency_table))


def loss(results: Results) -> str | None:
    runs = results.get("loss", {})
    if not runs:
        return None
    keys = ("events", "lost", "stuck", "stuck_applied", "applied_twice", "invariant_holds")
    return table(
        "Work lost when the workers are SIGKILLed mid-run",
        results["conditions"]["loss"],
        ["contender", "events", "lost", "stuck", "stuck, applied", "twice", "invariant"],
        [[name, *(r.get(key) for key in keys)] for name, r in runs.items()],
    )


def outage(results: Results) -> str | None:
    runs = results.get("outage", {})
    if not runs:
        return None
    keys = ("events", "publish_failed", "lost", "applied_twice", "invariant_holds")
    return table(
        "Work lost when the broker is unreachable at publish time",
        results["conditions"]["outage"],
        ["contender", "events", "publish failed", "lost", "applied twice", "invariant"],
        [[name, *(r[key] for key in keys)] for name, r in runs.items()],
    )


# In print order; a section with nothing to show returns None.
SECTIONS: tuple[Callable[[Results], str | None], ...] = (
    header,
    restart_warning,
    contenders,
    throughput,
    latency,
    latency_breakdown,
    dispatch,
    flood,
    heavy_step,
    coalescing,
    reference_lines,
    writepath,
    scale,
    loss,
    outage,
)


def tables(results: Results) -> str:
    return "\n".join(part for section in SECTIONS if (part := section(results)) is not None)


def _dumps(value: Any, depth: int = 0) -> str:
    """Indented JSON, but a list of plain values (the latencies) on one line: the file stays
    a few hundred lines and its diffs readable."""
    pad = " " * (depth + 1)
    if isinstance(value, dict) and value:
        items = [f"{pad}{json.dumps(str(k))}: {_dumps(v, depth + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * depth + "}"
    if isinstance(value, (list, tuple)) and any(isinstance(v, (dict, list)) for v in value):
        items = [pad + _dumps(v, depth + 1) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + " " * depth + "]"
    return json.dumps(value, default=str)


def write_json(results: Results, path: Path) -> None:
    path.write_text(_dumps(results) + "\n")
