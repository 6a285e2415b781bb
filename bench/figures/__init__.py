"""One module per figure: how it is measured, its conditions and its tables, in print order."""

from importlib import import_module

from bench.harness.run import Figure

ORDER = (
    "throughput latency dispatch flood heavy io_bound cpu_bound freshness creation part_size "
    "reference writepath coalescing scale faults"
)
FIGURES: tuple[Figure, ...] = tuple(
    import_module(f"bench.figures.{name}").FIGURE for name in ORDER.split()
)
