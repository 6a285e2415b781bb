"""The plot of figures 1, 2, 9a and 9b, those the results have (matplotlib, Agg: no display
needed)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

# One colour per contender in every panel.
COLOURS = {
    "ceiling": "#888888",
    "naive": "#8c564b",
    "direct": "#ff7f0e",
    "procrastinate": "#2ca02c",
    "postsave-pg": "#1f77b4",
    "postsave-pg (hand-written SQL, reference)": "#9ecae1",
    "postsave-embedded": "#17becf",
}
RATE_LABEL: dict[str, Any] = {
    "ha": "center", "va": "bottom", "fontsize": 8, "xytext": (8, 2), "textcoords": "offset points"
}  # fmt: skip
CDF_LOAD = 200.0  # the offered load whose latency distribution is drawn


def _throughput(ax: Any, fig1: dict[str, Any]) -> None:
    names = list(fig1)
    rates = [fig1[n]["events_per_s"] for n in names]
    ax.bar(names, rates, color=[COLOURS.get(n, "#444444") for n in names])
    for index, name in enumerate(names):
        low, high = fig1[name].get("min_per_s", rates[index]), fig1[name].get("max_per_s")
        if high is not None:  # the spread of the repetitions
            ax.plot([index, index], [low, high], color="black", linewidth=1)
        ax.annotate(f"{rates[index]:,.0f}", (index, rates[index]), **RATE_LABEL)
    ax.set_ylabel("events/s (median; line: min to max)")
    ax.set_title("1. end-to-end throughput, first commit to every bar updated", fontsize=9)
    ax.tick_params(axis="x", rotation=30, labelsize=8)


def _latency_cdf(ax: Any, fig2: dict[str, Any]) -> None:
    for name, runs in fig2.items():
        for run in runs:
            if run["offered_per_s"] == CDF_LOAD and run["latencies_ms"]:
                values = sorted(max(v, 0.1) for v in run["latencies_ms"])
                fraction = [(i + 1) / len(values) for i in range(len(values))]
                ax.plot(values, fraction, label=name, color=COLOURS.get(name))
    ax.set_xscale("log")
    ax.set_xlabel("commit to processed, ms (database clock)")
    ax.set_ylabel("fraction of events")
    ax.set_title(f"2. latency distribution (CDF) at {CDF_LOAD:.0f} events/s offered", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    if fig2:
        ax.legend(fontsize=8)


def _latency_by_load(ax: Any, fig2: dict[str, Any]) -> None:
    for name, runs in fig2.items():
        loads = [run["offered_per_s"] for run in runs]
        colour = COLOURS.get(name)
        ax.plot(loads, [r["p50_ms"] for r in runs], marker="o", color=colour, label=name)
        ax.plot(loads, [r["p99_ms"] for r in runs], marker="x", linestyle="--", color=colour)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered events/s (open loop)")
    ax.set_ylabel("latency ms (solid p50, dashed p99)")
    ax.set_title("2. latency against offered load", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    if fig2:
        ax.legend(fontsize=7, loc="lower right", framealpha=0.9)


def _parts_scaling(ax: Any, results: dict[str, Any]) -> None:
    """9a and 9b: bars/s against one process of parts, by processes; ideal = N."""
    markers = {"parts": "o", "one part": "s", "one pass per event": "x"}
    most = 1
    for figure, colour in (("io_bound", "#1f77b4"), ("cpu_bound", "#d62728")):
        rows = results.get(figure, [])
        one = next((r for r in rows if r["config"] == "parts" and r["processes"] == 1), None)
        for kind, marker in markers.items():
            found = [r for r in rows if r["config"] == kind]
            if not found or one is None:
                continue
            x = [r["processes"] for r in found]
            most = max(most, *x)
            y = [r["bars_per_s"] / one["bars_per_s"] for r in found]
            style = "-" if kind == "parts" else "none"
            label = f"{figure.replace('_', '-')}: {kind}"
            ax.plot(x, y, marker=marker, linestyle=style, color=colour, label=label)
    ax.plot([1, most], [1, most], linestyle=":", color="#888888", label="ideal (N x one)")
    ax.set_xlabel("recalculation processes")
    ax.set_ylabel("bars/s, x one process of parts")
    ax.set_title("9a/9b. one burst over many bars, by processes", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)


def plot(results: dict[str, Any], path: Path) -> None:
    # Late: matplotlib is slow to import, and its backend is chosen before pyplot is imported.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig2 = results.get("figure2", {})
    panels = [
        (lambda ax: _throughput(ax, results.get("figure1", {})), "figure1" in results),
        (lambda ax: _latency_cdf(ax, fig2), bool(fig2)),
        (lambda ax: _latency_by_load(ax, fig2), bool(fig2)),
        (lambda ax: _parts_scaling(ax, results), "io_bound" in results or "cpu_bound" in results),
    ]
    drawn = [draw for draw, has_data in panels if has_data] or [panels[0][0]]
    figure, axes = plt.subplots(1, len(drawn), figsize=(5.7 * len(drawn), 5.2), squeeze=False)
    for draw, ax in zip(drawn, axes[0], strict=True):
        draw(ax)
    machine = results.get("machine", {})
    title = (
        f"postsave benchmark ({results['profile']['name']}), {results['started_at']}, "
        f"{machine.get('cpus', '?')} CPUs; conditions under each table in docs/performance.md / "
        "`python -m bench` output"
    )
    figure.suptitle(textwrap.fill(title, 75 * len(drawn)), fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
