"""Waiting longer after each failure in a row: for events that fail, and for a refusing broker."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field


def capped_exponential_s(base_s: float, max_s: float, failures: int) -> float:
    """`base_s`, doubled for each failure in a row after the first, never above `max_s`."""
    doublings = min(max(failures - 1, 0), 62)  # past any cap already; keeps 2**n finite
    return min(max_s, base_s * 2.0**doublings)


@dataclass(frozen=True)
class RetryPolicy:
    """A failed event is tried again after a capped exponential delay with equal jitter (a
    random delay between half the cap and the cap: retries of events that failed together spread
    out, yet none comes back sooner than half its delay), until it has failed `max_attempts`
    times; then it is dead."""

    max_attempts: int = 10
    base_delay_s: float = 1.0
    max_delay_s: float = 300.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def is_exhausted(self, failures: int) -> bool:
        return failures >= self.max_attempts

    def delay_s(self, failures: int) -> float:
        ceiling = capped_exponential_s(self.base_delay_s, self.max_delay_s, failures)
        return self.rng.uniform(ceiling / 2, ceiling)


@dataclass
class DispatchBackoff:
    """While the broker refuses messages, poll less and less often instead of spinning."""

    base_s: float = 1.0
    max_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    failures: int = 0
    resume_at: float = 0.0

    def ready(self) -> bool:
        return self.clock() >= self.resume_at

    def failed(self) -> float:
        self.failures += 1
        delay = capped_exponential_s(self.base_s, self.max_s, self.failures)
        self.resume_at = self.clock() + delay
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self.resume_at = 0.0
