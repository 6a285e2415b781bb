"""One module per figure: how it is measured, its conditions and its tables, in print order."""

from bench.figures import (
    coalescing,
    dispatch,
    faults,
    flood,
    heavy,
    latency,
    reference,
    scale,
    throughput,
    writepath,
)
from bench.harness.run import Figure

FIGURES: tuple[Figure, ...] = tuple(
    module.FIGURE
    for module in (
        throughput,
        latency,
        dispatch,
        flood,
        heavy,
        reference,
        writepath,
        coalescing,
        scale,
        faults,
    )
)
