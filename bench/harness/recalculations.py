"""The recalculations the parts figures name in POSTSAVE_RECALCULATION (the workers import
this module from the repository's root): the example's, each after a cost of its own per bar.

- `io_bound`: a wait of IO_WAIT_S, as a call to a pricing service would make it.
- `cpu_bound`: about CPU_US of pure Python, a loop whose count the bench measures once and
  hands every worker (LOOPS_ENV), so that each process spins the same."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from functools import cache
from typing import Any

IO_WAIT_S = 0.0002
CPU_US = 20.0
LOOPS_ENV = "BENCH_CPU_LOOPS"
IO_BOUND = "bench.harness.recalculations:io_bound"
CPU_BOUND = "bench.harness.recalculations:cpu_bound"


def _spin(loops: int) -> int:
    x = 0
    for i in range(loops):
        x = (x * 31 + i) & 0xFFFF
    return x


def calibrate(target_us: float = CPU_US) -> int:
    """The loop count that takes `target_us` here (the fastest of a few tries)."""
    loops = 10_000
    best = min(_timed(loops) for _ in range(20))
    return max(1, round(loops * target_us / (best * 1e6)))


def _timed(loops: int) -> float:
    started = time.perf_counter()
    _spin(loops)
    return time.perf_counter() - started


@cache
def loops() -> int:
    return int(os.environ.get(LOOPS_ENV) or calibrate())


def per_call_us(function: Any, calls: int = 2_000) -> float:
    """What one call costs here, on a bar of the example's, with one event."""

    class Event:
        delta = 1

    class Bar:
        weight, value = 1, 0

    events, bar = [Event()], Bar()
    started = time.perf_counter()
    for _ in range(calls):
        function(bar, events)
    return (time.perf_counter() - started) / calls * 1e6


def io_bound(bar: Any, events: Sequence[Any]) -> None:
    time.sleep(IO_WAIT_S)
    bar.value += bar.weight * sum(event.delta for event in events)


def cpu_bound(bar: Any, events: Sequence[Any]) -> None:
    _spin(loops())
    bar.value += bar.weight * sum(event.delta for event in events)
