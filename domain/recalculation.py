"""The heavy step: the team's recalculation of one bar from the events not yet applied to it.

`POSTSAVE_RECALCULATION=module:function` names it; `recalculate` below is the example's. It is
called as `function(bar, events)` with one bar and the events its part has not applied yet,
in the one order every bar sees (`position`), and changes the bar in place (its return value
is ignored). It may be slow, non-linear and order-dependent, and read the bar's fields and the
events'. It must be a fold over the events: one call with `[a, b]` leaves the bar as a call
with `[a]` and then one with `[b]` do, since passes take the waiting events in batches of any
size, and verify and rebuild replay them in others."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from domain.bar import Bar
from domain.events import FooEvent
from domain.outbox import StoredEvent

EXAMPLE_RECALCULATION = "domain.recalculation:recalculate"


@dataclass(frozen=True)
class LoggedEvent:
    """An event as a recalculation gets it: where it is in the log, and what it says."""

    id: int  # outbox_events.id
    position: int  # its place in the one order every bar sees the events in
    type: str  # its type's name: "FooCompleted", ...
    foo_id: int
    delta: int  # its change to the sum of completed amounts
    amount: int | None  # the foo's amount after the change (None: stored before it was kept)
    state: str | None  # the foo's state after the change
    event: FooEvent  # the event itself, with the fields a type of its own adds


Recalculation = Callable[[Any, Sequence[LoggedEvent]], object]


def logged(stored: StoredEvent) -> LoggedEvent:
    """InvalidEventError if this version cannot read it."""
    if stored.position is None:
        raise ValueError(f"outbox event {stored.id} has no position: it is not sequenced yet")
    event = stored.event()
    return LoggedEvent(
        id=stored.id,
        position=stored.position,
        type=stored.event_type,
        foo_id=event.foo_id,
        delta=event.delta,
        amount=event.amount,
        state=event.state,
        event=event,
    )


def recalculate(bar: Bar, events: Sequence[LoggedEvent]) -> None:
    """The example's heavy step: every completed amount, weighted by the bar."""
    bar.value += bar.weight * sum(event.delta for event in events)


def example_closed_form(bar: Bar, completed_total: int) -> int:
    """What the example's recalculation leaves on a bar once every event is applied."""
    return bar.weight * completed_total


def bar_state(bar: Any) -> dict[str, Any]:
    """A bar's fields but its id: what a recalculation computes, compared by verify."""
    return {name: value for name, value in vars(bar).items() if name != "id"}
