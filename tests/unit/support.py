"""Helpers for the unit tests: the heavy step they run, events moved through the relay and the
workers, the fake's committed state, raw rows in the outbox."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from domain.backoff import RetryPolicy
from domain.bar import Bar
from domain.delivery import handle_delivery
from domain.outbox import EventState, RelayLimits
from domain.parts import Part
from domain.passes import HeavyStep
from domain.ports import UnitOfWork
from domain.recalculation import EXAMPLE_RECALCULATION, LoggedEvent, recalculate
from domain.relay import relay_once, relay_until_idle
from domain.use_cases import complete_foos, create_foos
from infrastructure.memory import (
    InMemoryDatabase,
    InMemoryDispatcher,
    InMemoryUnitOfWork,
    OutboxRow,
)

POLICY = RetryPolicy(max_attempts=3, base_delay_s=1.0, max_delay_s=10.0)
STEP = HeavyStep(recalculate, EXAMPLE_RECALCULATION, retry=POLICY)

# An order-sensitive recalculation that counts every event: a bar's value is a hash chained
# over the events it got, in the order it got them. One missed, applied twice or out of order
# gives another value, so one comparison per bar proves "each event once, in the one order".
DIGEST = "tests.unit.support:digest"
MODULUS = (1 << 61) - 1


def digest(bar: Bar, events: Sequence[LoggedEvent]) -> None:
    for event in events:
        bar.value = chained(bar.value, [event.id])


def chained(value: int, event_ids: Iterable[int]) -> int:
    for event_id in event_ids:
        value = (value * 1_000_003 + event_id * 7_919 + 1) % MODULUS
    return value


DIGEST_STEP = HeavyStep(digest, DIGEST, retry=POLICY)


def computed_with(
    recalculation: str, uow_factory: Callable[[], UnitOfWork]
) -> Callable[[], UnitOfWork]:
    """Units of work whose first bars are computed with `recalculation`, as a process that runs
    it (POSTSAVE_RECALCULATION) creates them: the bars' recalculation is that one."""

    def make() -> UnitOfWork:
        uow = uow_factory()
        uow.recalculation = recalculation
        return uow

    return make


def complete_new_foos(uow: InMemoryUnitOfWork, *amounts: int) -> list[int]:
    """Create and complete one foo per amount; return the ids of the events that wrote."""
    before = set(uow.database.data.events)
    complete_foos(uow, [create_foos(uow, amount)[0] for amount in amounts])
    return sorted(set(uow.database.data.events) - before)


def dispatch_all(uow_factory: Callable[[], UnitOfWork]) -> list[int]:
    """One relay batch with room for everything due; the ids it dispatched."""
    dispatcher = InMemoryDispatcher()
    relay_once(uow_factory(), dispatcher, RelayLimits(batch_size=100, lease_seconds=30))
    return dispatcher.dispatched


def drain(uow_factory: Callable[[], UnitOfWork], step: HeavyStep = STEP) -> None:
    """Relay every due event and deliver each message once, as the workers would, until the
    relay has nothing due."""
    for _ in range(100):
        dispatcher = InMemoryDispatcher()
        relay_until_idle(uow_factory, dispatcher, RelayLimits(), 10.0)
        if not dispatcher.dispatched:
            return
        for event_id in dispatcher.dispatched:
            handle_delivery(uow_factory, event_id, step)
    raise AssertionError("the outbox did not drain in 100 rounds")


def bar_values(database: InMemoryDatabase) -> dict[int, int]:
    return {bar_id: row.bar.value for bar_id, row in database.data.bars.items()}


def bar_positions(database: InMemoryDatabase) -> dict[int, int]:
    return {bar_id: row.position for bar_id, row in database.data.bars.items()}


def parts(database: InMemoryDatabase) -> list[Part]:
    return [row.part() for _, row in sorted(database.data.parts.items())]


def event_rows(database: InMemoryDatabase) -> list[OutboxRow]:
    return [database.data.events[event_id] for event_id in sorted(database.data.events)]


def event_states(database: InMemoryDatabase) -> dict[int, EventState]:
    return {row.id: row.state for row in event_rows(database)}


def append_raw_event(database: InMemoryDatabase, event_type: str, payload: Any) -> int:
    """Commit an outbox row as another (older or newer) version of postsave might write it."""
    data = database.data
    event_id = data.next_id("events")
    now = database.clock()
    data.events[event_id] = OutboxRow(event_id, event_type, payload, now, now)
    return event_id
