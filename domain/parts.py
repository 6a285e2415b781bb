"""Parts: the bars, split into groups of `POSTSAVE_PART_SIZE` that advance on their own.

A part's *position* is how far along the one order of events it has applied: its bars'
values and its position are written in one transaction, so a second pass over the same events
finds nothing to do. Any worker process on any host may pass any part; at most one at a time
(the part's row lock). An event is applied once every part's position has passed it.

The words:
- *head*: the last position the relay has given an event (`sequenced`).
- *pass* (of a part): one transaction that applies to its bars the events after its position,
  up to a bound, and moves the position.
- *behind*: a part whose position is below the head.
- *baseline*: each bar's state as of a position, from which verify and rebuild replay the log:
  the bar as created, or as a prune left it (the events before are gone from the log)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

# Bars per part, unless POSTSAVE_PART_SIZE says otherwise: see docs/performance.md.
DEFAULT_PART_SIZE = 1_000


class PartState(StrEnum):
    READY = "ready"  # passes take it when it is behind and its backoff, if any, is over
    DEAD = "dead"  # failed too often; waits for `postsave dead retry --part`


@dataclass(frozen=True)
class Part:
    id: int
    position: int  # applied through this position
    applied_total: int  # the sum of the deltas of the events it has applied
    bars: int
    state: PartState = PartState.READY
    failures: int = 0  # passes in a row that raised
    last_error: str | None = None
    rebuilding: bool = False  # its next pass starts from its bars' baselines
    baseline_position: int = 0  # the lowest position its bars' baselines are at


@dataclass(frozen=True)
class Projection:
    """Where the projection stands, one row: what the relay has sequenced, how far every part
    has applied, and which recalculation the bars are computed with."""

    head: int  # the last position given to an event
    head_total: int  # the sum of the deltas of the events through the head
    applied: int  # every part has applied the events through this position
    recalculation: str  # `module:function`, as POSTSAVE_RECALCULATION names it


@dataclass(frozen=True)
class PartStats:
    parts: int
    behind: int  # below the head, dead ones included
    dead: int
    rebuilding: int
    lowest_position: int  # of every part; the head when there is none


@dataclass(frozen=True)
class Blockers:
    """Why an event is not applied yet: the parts below its position, by what they wait for."""

    busy: int  # ready: a pass has them now, or will take them
    backing_off: int  # failed, to be retried after a backoff
    dead: int  # wait for an operator


@dataclass
class BarAt:
    """A bar and the position its state is at: the events after it are the ones it has not
    applied. A bar is at its part's position, but for a bar created or rebuilt ahead of it."""

    bar: Any  # the team's Bar
    position: int
