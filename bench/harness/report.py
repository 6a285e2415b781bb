"""Numbers to text: medians and percentiles, a markdown table with its title and conditions as
every figure is printed, and the results file."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

Results = dict[str, Any]


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest rank."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return float(ordered[min(max(1, math.ceil(q / 100.0 * len(ordered))), len(ordered)) - 1])


def summary_ms(latencies_s: Sequence[float]) -> dict[str, float]:
    return {
        "p50_ms": percentile(latencies_s, 50) * 1000.0,
        "p99_ms": percentile(latencies_s, 99) * 1000.0,
        "max_ms": max(latencies_s) * 1000.0 if latencies_s else math.nan,
    }


def cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.{1 if abs(value) >= 10 else 2}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(title: str, conditions: str, columns: str, rows: Sequence[Sequence[Any]]) -> str:
    """`columns` as the header line reads: "contender | events | ..."."""
    header = columns.split(" | ")
    cells = [[cell(value) for value in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]

    def line(values: Sequence[str]) -> str:
        padded = (
            v.rjust(w) if i else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        )
        return "| " + " | ".join(padded) + " |"

    out = [f"### {title}", f"_{conditions}_", "", line(header)]
    out += ["|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(row) for row in cells)]
    return "\n".join(out) + "\n"


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
