"""The outbox as the domain sees it: stored events, their lifecycle, and the relay's limits."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from domain.events import FooEvent, event_from_record


class EventState(StrEnum):
    PENDING = "pending"  # due for dispatch once its available time has come
    # A message is out, leased until its available time. The event may already be applied by
    # another delivery's pass (`applied`): it stays here until its own message comes back, so
    # that the events in this state always count the messages the broker holds.
    DISPATCHED = "dispatched"
    PROCESSED = "processed"  # applied to the bars, exactly once, and no message is out
    DEAD = "dead"  # failed too often; waits for `postsave dead retry`


@dataclass(frozen=True)
class StoredEvent:
    id: int
    event_type: str
    payload: Any
    state: EventState
    attempts: int = 0  # dispatches: each lease counts one
    last_error: str | None = None
    failures: int = 0  # recalculations that raised: what retries and dead letters count
    applied: bool = False  # its delta is on the bars (always so once processed)

    def event(self) -> FooEvent:
        return event_from_record(self.event_type, self.payload)


@dataclass(frozen=True)
class OutboxStats:
    pending: int
    in_flight: int
    processed: int
    dead: int
    oldest_pending_age_s: float | None

    @property
    def drained(self) -> bool:
        return self.pending == 0 and self.in_flight == 0


@dataclass(frozen=True)
class RelayLimits:
    batch_size: int = 100
    max_in_flight: int = 1000
    lease_seconds: float = 30.0


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with full jitter, then the event is dead."""

    max_attempts: int = 10
    base_delay_s: float = 1.0
    max_delay_s: float = 300.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def is_exhausted(self, failures: int) -> bool:
        return failures >= self.max_attempts

    def delay_s(self, failures: int) -> float:
        doublings = min(max(failures - 1, 0), 62)  # past the cap already; keeps 2**n finite
        ceiling = min(self.max_delay_s, self.base_delay_s * 2.0**doublings)
        return self.rng.uniform(ceiling / 2, ceiling)
