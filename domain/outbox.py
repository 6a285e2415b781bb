"""The outbox as the domain sees it: stored events, their lifecycle, and the relay's limits.

The words, used the same way in code, tables, command line and docs:
- *dispatched*: a recalculation message for the event is out, leased until `available_at`;
  `dispatches` counts how many were ever sent.
- *position*: its place in the one order every bar sees the events in, given by the relay
  before it first dispatches it (domain.parts has the words of the parts).
- *applied*: every part of the bars has passed it (`applied_at`).
- *processed*: applied and no message of it is out any more: finished.
- *failures*, *dead*: the relay could not read it; it is dead at once, before it has a
  position. Passes that fail count on their part, not on the events (domain.parts).
- *batch*: one relay transaction: claim due events, publish one message each, lease them. Each
  committed batch, idle ones too, is the relay's heartbeat (`relay_passes`, a name kept for the
  metric `postsave_relay_passes_total`, counts batches).
- *tick*: one `poll_outbox` run, from beat or a nudge: batches while they come back full, within
  the poll interval.
- *pass*: one part's transaction: the events after its position, up to a bound, applied to
  its bars (domain.passes). A delivery makes passes, then *settles* its event."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from domain.errors import IllegalTransitionError
from domain.events import FooEvent, event_from_record


class EventState(StrEnum):
    PENDING = "pending"  # due for dispatch once its available time has come
    # A message is out, leased until its available time. The event may already be applied by
    # another delivery's pass: it stays here until its own message comes back, so that the
    # events in this state always count the messages the broker holds.
    DISPATCHED = "dispatched"
    PROCESSED = "processed"  # applied, exactly once, and no message is out: finished
    DEAD = "dead"  # failed too often; waits for `postsave dead retry`


UNFINISHED_STATES = (EventState.PENDING, EventState.DISPATCHED)
MAX_ERROR_CHARS = 4000  # of a failure's description, kept as the event's last error


@dataclass(frozen=True)
class Transition:
    """A change the adapters make to events: the states it may start from, and whether the
    event must not be applied yet. The one rule of both adapters: SQL matches its rows by it,
    the in-memory adapter checks each row against it; an event outside it is refused."""

    change: str  # what a refusal says could not be done: "dispatch", "prune", ...
    sources: frozenset[EventState]
    unapplied_only: bool = False

    def allows(self, state: EventState, applied: bool) -> bool:
        return state in self.sources and not (self.unapplied_only and applied)

    def refused(self, event_ids: Iterable[int]) -> IllegalTransitionError:
        return IllegalTransitionError(self.change, event_ids)


_UNFINISHED = frozenset(UNFINISHED_STATES)
# The relay leases a pending event, or again one whose lease ran out (applied meanwhile or not:
# its new message finds it applied).
DISPATCH = Transition("dispatch", _UNFINISHED)
# A pass puts an event's delta on the bars once: it is processed, or stays dispatched until
# its own message is back.
APPLY = Transition("apply", _UNFINISHED, unapplied_only=True)
# A failed pass makes the event pending after a backoff, or dead. An applied event did not fail.
FAIL = Transition("record a failure on", _UNFINISHED, unapplied_only=True)
REVIVE = Transition("revive", frozenset({EventState.DEAD}))  # `postsave dead retry`
PRUNE = Transition("prune", frozenset({EventState.PROCESSED}))  # folded, then deleted


@dataclass(frozen=True)
class StoredEvent:
    id: int
    event_type: str
    payload: Any
    state: EventState
    dispatches: int = 0  # messages sent for it: each lease counts one
    last_error: str | None = None
    failures: int = 0  # times it was found unreadable (dead at once); passes count on parts
    applied: bool = False  # every part has applied it (always so once processed)
    position: int | None = None  # its place in the one order; None until the relay sequences it

    def event(self) -> FooEvent:
        return event_from_record(self.event_type, self.payload)


@dataclass(frozen=True)
class OutboxStats:
    pending: int
    in_flight: int
    # Every event ever processed, pruned ones included: read from the projection's counter, not
    # the log, so it only grows and costs the same at ten million events. An applied event
    # whose message is still out is in flight, not processed.
    processed: int
    dead: int
    oldest_pending_age_s: float | None
    projection_lag_s: float = 0.0  # OutboxHealth's

    @property
    def drained(self) -> bool:
        return self.pending == 0 and self.in_flight == 0


@dataclass(frozen=True)
class OutboxHealth:
    """What an operator watches, read from indexes and counters only: what it costs does not
    grow with the number of finished events. The totals count since the database was made."""

    pending: int
    in_flight: int
    dead: int
    oldest_pending_age_s: float  # 0 when nothing waits
    # Age of the oldest unfinished event not applied yet (some part has not passed it, or no
    # delivery has settled it since): how far the bars are behind the foos. 0 when none is.
    projection_lag_s: float
    events_applied: int
    event_failures: int  # failed passes, retried or not
    events_dead: int  # events that failed too often; `dead retry` does not lower it
    events_dispatched: int  # messages the relay published
    leases_expired: int  # events dispatched again because their lease ended
    relay_passes: int  # committed relay batches, idle ones included
    last_relay_pass_age_s: float | None  # since the last batch; None before the first
    events_pruned: int = 0  # folded into the checkpoint and deleted from the log
    part_failures: int = 0  # failed passes over a part, retried or not


@dataclass(frozen=True)
class Checkpoint:
    """The pruned part of the log, folded: the sum of the deltas of the events pruned so far,
    how many they were, and the highest id among them. The projection is this checkpoint plus
    the events the log still holds."""

    total: int = 0
    events: int = 0
    last_pruned_id: int = 0


@dataclass(frozen=True)
class RelayLimits:
    batch_size: int = 100
    max_in_flight: int = 1000
    lease_seconds: float = 30.0
    # New events given positions per transaction: more than a batch, so that a backlog is
    # sequenced ahead of its messages (a claim's cost is mostly its scan, not its size).
    sequence_batch: int = 1000
