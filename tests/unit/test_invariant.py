"""The invariant on fakes, whatever happens on the way: random histories, then drain, then check."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.backoff import RetryPolicy
from domain.delivery import handle_delivery
from domain.errors import DomainError
from domain.outbox import RelayLimits
from domain.passes import HeavyStep
from domain.projection import verify
from domain.recalculation import EXAMPLE_RECALCULATION, example_closed_form, recalculate
from domain.relay import relay_once
from domain.use_cases import cancel_foo, complete_foo, create_bar, create_foos, revise_foo
from infrastructure.memory import (
    InMemoryDatabase,
    InMemoryDispatcher,
    InMemoryUnitOfWork,
    ManualClock,
)

STEP = HeavyStep(
    recalculate,
    EXAMPLE_RECALCULATION,
    events_per_pass=2,  # several passes to catch up, some of them failing
    retry=RetryPolicy(max_attempts=1000, base_delay_s=1.0, max_delay_s=5.0),
)
LIMITS = RelayLimits(batch_size=3, max_in_flight=5, lease_seconds=10.0)

small = st.integers(min_value=0, max_value=50)
steps = st.one_of(
    st.tuples(st.just("foo"), small),
    st.tuples(st.just("complete"), small),
    st.tuples(st.just("revise"), small, small),
    st.tuples(st.just("cancel"), small),
    st.tuples(st.just("bar"), st.integers(min_value=0, max_value=5)),
    st.tuples(st.just("relay")),
    st.tuples(st.just("deliver"), small),
    st.tuples(st.just("fail")),
    st.tuples(st.just("wait"), st.integers(min_value=0, max_value=20)),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(steps, max_size=60))
def test_every_bar_satisfies_the_invariant_once_the_outbox_is_drained(
    history: list[tuple[Any, ...]],
) -> None:
    clock = ManualClock()
    database = InMemoryDatabase(clock=clock)

    def uow() -> InMemoryUnitOfWork:
        unit = InMemoryUnitOfWork(database)
        unit.part_size = 2  # bars created mid-flight join parts that are behind, or start one
        return unit

    dispatcher = InMemoryDispatcher()
    foos: list[int] = []
    for name, *args in history:
        pick = foos[args[0] % len(foos)] if foos and args else None
        try:
            if name == "foo":
                foos += create_foos(uow(), args[0])
            elif name == "complete" and pick:
                complete_foo(uow(), pick)
            elif name == "revise" and pick:
                revise_foo(uow(), pick, args[1])
            elif name == "cancel" and pick:
                cancel_foo(uow(), pick)
            elif name == "bar":
                create_bar(uow(), args[0])
            elif name == "relay":
                relay_once(uow(), dispatcher, LIMITS)
            elif name == "deliver" and dispatcher.dispatched:
                index = args[0] % len(dispatcher.dispatched)
                # maybe a duplicate
                handle_delivery(uow, dispatcher.dispatched[index], STEP)
            elif name == "fail":
                database.pass_errors.append(RuntimeError("transient"))
            elif name == "wait":
                clock.advance(args[0])
        except DomainError:
            pass  # a refused transition: nothing was written

    database.pass_errors.clear()  # no more failures: the drain
    for _ in range(100):
        with uow() as unit:
            if unit.monitor.stats().drained:
                break
        clock.advance(60)
        delivered = len(dispatcher.dispatched)
        while relay_once(uow(), dispatcher, LIMITS).dispatched:
            pass
        for event_id in dispatcher.dispatched[delivered:]:
            handle_delivery(uow, event_id, STEP)

    result = verify(uow, STEP, example_closed_form)
    assert result.outbox_drained
    assert result.checked_closed_form
    assert result.holds, result.mismatched
    assert database.data.events_applied == database.data.head  # each event counted once
