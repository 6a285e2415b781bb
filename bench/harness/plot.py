"""The plot of figures 1 and 2 (matplotlib, Agg: no display needed)."""

from __future__ import annotations

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


def plot(results: dict[str, Any], path: Path) -> None:
    # Late: matplotlib is slow to import, and its backend is chosen before pyplot is imported.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (bars_ax, cdf_ax, load_ax) = plt.subplots(1, 3, figsize=(17, 5.2))
    _throughput(bars_ax, results.get("figure1", {}))
    fig2 = results.get("figure2", {})
    _latency_cdf(cdf_ax, fig2)
    _latency_by_load(load_ax, fig2)
    machine = results.get("machine", {})
    figure.suptitle(
        f"postsave benchmark ({results['profile']['name']}), {results['started_at']}, "
        f"{machine.get('cpus', '?')} CPUs; conditions under each table in docs/performance.md / "
        "`python -m bench` output",
        fontsize=8,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
