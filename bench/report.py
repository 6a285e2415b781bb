"""Tables on stdout, results as JSON, and the plot (matplotlib, Agg: no display needed)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(title: str, conditions: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]

    def line(values: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(
                v.rjust(w) if i else v.ljust(w)
                for i, (v, w) in enumerate(zip(values, widths, strict=True))
            )
            + " |"
        )

    out = [
        f"### {title}",
        f"_{conditions}_",
        "",
        line(header),
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    out += [line(row) for row in cells]
    return "\n".join(out) + "\n"


BREAKDOWN_KEYS = (
    "events",
    "coalesced_before_dispatch",
    "relay_p50_ms",
    "relay_p99_ms",
    "worker_p50_ms",
    "worker_p99_ms",
)
BREAKDOWN_HEADER = ("relay p50 ms", "relay p99 ms", "worker p50 ms", "worker p99 ms")


def tables(results: dict[str, Any]) -> str:
    parts: list[str] = []
    machine = results["machine"]
    parts.append(
        f"postsave benchmark, profile {results['profile']['name']}: {machine['cpus']} CPUs "
        f"({machine['cpu_model']}), PostgreSQL {machine['postgresql']}, RabbitMQ "
        f"{machine['rabbitmq']}, Python {machine['python']}, Celery {machine['celery']}, "
        f"procrastinate {machine['procrastinate']}; {results['started_at']}; "
        f"{results['duration_s']:.0f} s; load average at start "
        f"{', '.join(f'{x:.1f}' for x in machine.get('load_average_at_start', []))}\n"
    )
    if results.get("services_restarted_during_run"):
        parts.append(
            "WARNING: RabbitMQ or PostgreSQL restarted during this run (another suite on the "
            "machine?); its numbers are not comparable.\n"
        )
    fig1 = results.get("figure1", {})
    parts.append(
        "Contenders:\n"
        + "".join(f"- {name}: {entry['description']}\n" for name, entry in fig1.items())
        + "invariant (every table): over that scenario the bars moved by exactly weight x the "
        "amounts of the foos it completed: nothing lost, nothing applied twice.\n"
    )
    if fig1:
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
        parts.append(
            table(
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
        )
    fig2 = results.get("figure2", {})
    if fig2:
        rows = []
        for name, runs in fig2.items():
            for run in runs:
                rows.append(
                    [
                        name,
                        run["offered_per_s"],
                        run["achieved_per_s"],
                        run["events"],
                        run["p50_ms"],
                        run["p99_ms"],
                        run["max_ms"],
                    ]
                )
        parts.append(
            table(
                "2. Commit-to-processed latency, open loop",
                results["conditions"]["figure2"],
                ["contender", "offered/s", "achieved/s", "events", "p50 ms", "p99 ms", "max ms"],
                rows,
            )
        )
    breakdown = [
        [name, run["offered_per_s"], *(b[key] for key in BREAKDOWN_KEYS)]
        for name, runs in fig2.items()
        for run in runs
        if (b := run.get("breakdown"))
    ]
    if breakdown:
        parts.append(
            table(
                "2b. Where postsave's latency goes",
                "from outbox_events: relay = dispatched_at - occurred_at, worker = applied_at - "
                "dispatched_at; coalesced = applied by another event's pass before any dispatch",
                ["contender", "offered/s", "events", "coalesced", *BREAKDOWN_HEADER],
                breakdown,
            )
        )
    fig3 = results.get("figure3")
    if fig3:
        confirm = fig3["celery_confirm_publish"]["per_s"]
        rows = [
            [
                "relay: CeleryDispatcher.dispatch, batches of 100",
                fig3["relay_dispatch"]["per_s"],
                fig3["relay_dispatch"]["per_s"] / confirm,
                fig3["relay_dispatch"]["in_queue_after"],
            ],
            [
                "Celery apply_async, confirm_publish=True",
                confirm,
                1.0,
                fig3["celery_confirm_publish"]["in_queue_after"],
            ],
            [
                "Celery apply_async, no confirms",
                fig3["celery_unconfirmed"]["per_s"],
                fig3["celery_unconfirmed"]["per_s"] / confirm,
                fig3["celery_unconfirmed"]["in_queue_after"],
            ],
        ]
        parts.append(
            table(
                "3. Confirmed dispatch rate",
                results["conditions"]["figure3"],
                ["method", "messages/s", "x confirm_publish", "in queue after"],
                rows,
            )
        )
    fig4 = results.get("figure4", {})
    if fig4:
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
        parts.append(
            table(
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
        )
    fig5 = results.get("figure5", [])
    if fig5:
        rows = [
            [
                r["bars"],
                r["set_based_ms"],
                r["set_based_rows_per_s"],
                r["orm_loop_ms"],
                r["orm_loop_rows_per_s"],
                r["speedup"],
            ]
            for r in fig5
        ]
        parts.append(
            table(
                "5. The heavy step",
                results["conditions"]["figure5"],
                ["bars", "set-based ms", "rows/s", "ORM loop ms", "rows/s", "speedup"],
                rows,
            )
        )
    fig7 = results.get("figure7")
    if fig7:
        rows = [
            [
                label,
                fig7[key]["events"],
                fig7[key]["passes"],
                fig7[key]["drain_s"],
                fig7[key]["drain_s"] / fig7["separate"]["drain_s"],
            ]
            for label, key in (("coalescing on", "coalesced"), ("one pass per event", "separate"))
        ]
        rows[0].append(fig7.get("invariant_holds"))
        rows[1].append(None)
        parts.append(
            table(
                f"7. Coalescing the heavy step ({fig7['bars']:,} bars)",
                results["conditions"]["figure7"],
                ["postsave-pg", "events", "passes", "drain s", "x one pass per event", "invariant"],
                rows,
            )
        )
    fig6 = results.get("figure6")
    if fig6:
        fsync = fig6["pg_test_fsync"]
        rows = [
            [
                "pg_test_fsync open_datasync (8 kB write + sync)",
                fsync.get("open_datasync_ops_per_s"),
                "ops/s",
            ],
            [
                "pg_test_fsync fdatasync (8 kB write + sync)",
                fsync.get("fdatasync_ops_per_s"),
                "ops/s",
            ],
            ["single-row INSERT + COMMIT, one client", fig6["insert_commit"]["per_s"], "commits/s"],
            ["raw kombu publish, no confirms", fig6["kombu_publish"]["per_s"], "messages/s"],
        ]
        use_case = fig6.get("complete_foo")
        if use_case:
            rows += [
                [
                    "postsave use_cases.complete_foo, one client, no nudge",
                    use_case["without_nudge"]["per_s"],
                    "commits/s",
                ],
                [
                    "postsave use_cases.complete_foo, one client, nudge=True",
                    use_case["with_nudge"]["per_s"],
                    "commits/s",
                ],
            ]
        if fig5:
            biggest = fig5[-1]
            rows.append(
                [
                    f"set-based UPDATE over {biggest['bars']:,} bars",
                    biggest["set_based_rows_per_s"],
                    "rows/s",
                ]
            )
        parts.append(
            table(
                "6. Reference lines",
                results["conditions"]["figure6"],
                ["what", "rate", "unit"],
                rows,
            )
        )
    claim = results.get("claim")
    if claim:
        rows = [
            ["empty log (100 pending)", claim["empty_ms"], 1.0],
            [f"{claim['history']:,} processed + 100 pending", claim["history_ms"], claim["ratio"]],
        ]
        parts.append(
            table(
                "Claim time against the size of the log",
                results["conditions"]["claim"],
                ["log", "claim_pending(100) ms", "x empty"],
                rows,
            )
        )
    loss = results.get("loss", {})
    if loss:
        keys = ("events", "lost", "stuck", "stuck_applied", "applied_twice", "invariant_holds")
        rows = [[name, *(r.get(key) for key in keys)] for name, r in loss.items()]
        parts.append(
            table(
                "Work lost when the workers are SIGKILLed mid-run",
                results["conditions"]["loss"],
                ["contender", "events", "lost", "stuck", "stuck, applied", "twice", "invariant"],
                rows,
            )
        )
    outage = results.get("outage", {})
    if outage:
        rows = [
            [
                name,
                r["events"],
                r["publish_failed"],
                r["lost"],
                r["applied_twice"],
                r["invariant_holds"],
            ]
            for name, r in outage.items()
        ]
        parts.append(
            table(
                "Work lost when the broker is unreachable at publish time",
                results["conditions"]["outage"],
                ["contender", "events", "publish failed", "lost", "applied twice", "invariant"],
                rows,
            )
        )
    return "\n".join(parts)


# One colour per contender in every panel.
COLOURS = {
    "ceiling": "#888888",
    "naive": "#8c564b",
    "direct": "#ff7f0e",
    "procrastinate": "#2ca02c",
    "postsave-pg": "#1f77b4",
    "postsave-pg (use cases)": "#9ecae1",
    "postsave-embedded": "#17becf",
}


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


def write_json(results: dict[str, Any], path: Path) -> None:
    path.write_text(_dumps(results) + "\n")


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (bars_ax, cdf_ax, load_ax) = plt.subplots(1, 3, figsize=(17, 5.2))
    fig1 = results.get("figure1", {})
    names = list(fig1)
    rates = [fig1[n]["events_per_s"] for n in names]
    bars_ax.bar(names, rates, color=[COLOURS.get(n, "#444444") for n in names])
    for index, name in enumerate(names):
        low, high = fig1[name].get("min_per_s", rates[index]), fig1[name].get("max_per_s")
        if high is not None:  # the spread of the repetitions
            bars_ax.plot([index, index], [low, high], color="black", linewidth=1)
        bars_ax.annotate(
            f"{rates[index]:,.0f}",
            (index, rates[index]),
            ha="center",
            va="bottom",
            fontsize=8,
            xytext=(8, 2),
            textcoords="offset points",
        )
    bars_ax.set_ylabel("events/s (median; line: min to max)")
    bars_ax.set_title("1. end-to-end throughput, first commit to every bar updated", fontsize=9)
    bars_ax.tick_params(axis="x", rotation=30, labelsize=8)

    fig2 = results.get("figure2", {})
    target = 200.0
    for name, runs in fig2.items():
        for run in runs:
            if run["offered_per_s"] == target and run["latencies_ms"]:
                values = sorted(max(v, 0.1) for v in run["latencies_ms"])
                fraction = [(i + 1) / len(values) for i in range(len(values))]
                cdf_ax.plot(values, fraction, label=name, color=COLOURS.get(name))
    cdf_ax.set_xscale("log")
    cdf_ax.set_xlabel("commit to processed, ms (database clock)")
    cdf_ax.set_ylabel("fraction of events")
    cdf_ax.set_title(f"2. latency distribution (CDF) at {target:.0f} events/s offered", fontsize=9)
    cdf_ax.grid(True, which="both", alpha=0.3)
    if fig2:
        cdf_ax.legend(fontsize=8)

    for name, runs in fig2.items():
        loads = [run["offered_per_s"] for run in runs]
        colour = COLOURS.get(name)
        load_ax.plot(loads, [r["p50_ms"] for r in runs], marker="o", color=colour, label=name)
        load_ax.plot(loads, [r["p99_ms"] for r in runs], marker="x", linestyle="--", color=colour)
    load_ax.set_xscale("log")
    load_ax.set_yscale("log")
    load_ax.set_xlabel("offered events/s (open loop)")
    load_ax.set_ylabel("latency ms (solid p50, dashed p99)")
    load_ax.set_title("2. latency against offered load", fontsize=9)
    load_ax.grid(True, which="both", alpha=0.3)
    if fig2:
        load_ax.legend(fontsize=7, loc="lower right", framealpha=0.9)
    machine = results.get("machine", {})
    figure.suptitle(
        f"postsave benchmark ({results['profile']['name']}), {results['started_at']}, "
        f"{machine.get('cpus', '?')} CPUs; conditions under each table in the README / "
        "`python -m bench` output",
        fontsize=8,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
