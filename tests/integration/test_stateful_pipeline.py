"""Property-based: random foo operations, bar creations, prunes, rebuilds and delivery faults
(duplicate, drop, reorder, a worker killed mid-delivery, lease expiry) against the real
PostgreSQL adapter, with an order-sensitive recalculation (tests.recalculations.digest) over
parts of two bars. Whatever the sequence, at every step each bar holds the digest of the
events after its creation, each once, in the one order, up to its position; once drained,
every bar is at the head, verify's replay agrees, and nothing is dead."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlalchemy import text

from domain import projection, retention, use_cases
from domain.delivery import Outcome, handle_delivery
from domain.errors import DomainError
from domain.operations import outbox_stats
from domain.outbox import RelayLimits
from domain.passes import HeavyStep
from domain.ports import Dispatcher, UnitOfWork
from domain.relay import relay_once
from infrastructure.bootstrap import Container
from infrastructure.settings import Settings
from infrastructure.sql.unit_of_work import SqlUnitOfWork
from tests.recalculations import DIGEST, History

pytestmark = pytest.mark.postgres

LIMITS = RelayLimits(batch_size=4, max_in_flight=6, lease_seconds=60.0)
# A pass applies one waiting event, two, or everything waiting.
EVENTS_PER_PASS = st.sampled_from([1, 2, 500])
RESET = (
    "TRUNCATE outbox_events, foos, bar_baselines, bars, bar_parts RESTART IDENTITY CASCADE;"
    "UPDATE bar_projection SET head_position = 0, head_total = 0, applied_position = 0,"
    f" counted_position = 0, events_applied = 0, recalculation = '{DIGEST}';"
    "UPDATE projection_checkpoint SET applied_total = 0, events_applied = 0, last_pruned_id = 0"
)


class InMemoryBroker(Dispatcher):
    """The broker, as far as the relay and the handler can tell: an ordered list of messages."""

    def __init__(self) -> None:
        self.messages: list[int] = []

    def dispatch(self, event_ids: Sequence[int], expires_in_s: float) -> None:
        self.messages.extend(event_ids)


class WorkerKilled(BaseException):
    """Not an Exception: nothing in the delivery catches it, as nothing outlives a SIGKILL."""


class KilledAtCommit(SqlUnitOfWork):
    def _commit(self) -> None:
        raise WorkerKilled()


class PipelineMachine(RuleBasedStateMachine):
    def __init__(self, container: Container) -> None:
        super().__init__()
        self.container = container
        self.broker = InMemoryBroker()
        self.foos: list[int] = []
        self.history = History()
        with container.engine.begin() as connection:
            connection.execute(text(RESET))

    def uow(self) -> UnitOfWork:
        return self.container.uow()

    def step(self, events_per_pass: int) -> HeavyStep:
        return dataclasses.replace(self.container.heavy_step, events_per_pass=events_per_pass)

    # The application.
    @rule(amount=st.integers(0, 50), complete=st.booleans())
    def create_foo(self, amount: int, complete: bool) -> None:
        (foo_id,) = use_cases.create_foos(self.uow(), amount)
        self.foos.append(foo_id)
        if complete:
            use_cases.complete_foo(self.uow(), foo_id)

    @rule(data=st.data(), action=st.sampled_from(["complete", "cancel", "revise"]))
    def change_foo(self, data: st.DataObject, action: str) -> None:
        if not self.foos:
            return
        foo_id = data.draw(st.sampled_from(self.foos))
        try:
            if action == "complete":
                use_cases.complete_foo(self.uow(), foo_id)
            elif action == "cancel":
                use_cases.cancel_foo(self.uow(), foo_id)
            else:
                use_cases.revise_foo(self.uow(), foo_id, data.draw(st.integers(0, 50)))
        except DomainError:
            pass  # a forbidden transition: refused, nothing written

    @rule(weight=st.integers(0, 9))
    def create_bar(self, weight: int) -> None:
        use_cases.create_bar(self.uow(), weight)
        self._record()

    # The relay and the broker, with faults.
    @rule()
    def relay(self) -> None:
        relay_once(self.uow(), self.broker, LIMITS)
        self._record()

    @rule(events_per_pass=EVENTS_PER_PASS)
    def deliver(self, events_per_pass: int = 500) -> None:
        if self.broker.messages:
            event_id = self.broker.messages.pop(0)
            outcome = handle_delivery(self.uow, event_id, self.step(events_per_pass))
            assert outcome in (Outcome.APPLIED, Outcome.ALREADY_APPLIED, Outcome.WAITING)

    @rule(data=st.data())
    def duplicate(self, data: st.DataObject) -> None:
        if self.broker.messages:
            self.broker.messages.append(data.draw(st.sampled_from(self.broker.messages)))

    @rule(data=st.data())
    def drop(self, data: st.DataObject) -> None:
        if self.broker.messages:
            index = data.draw(st.integers(0, len(self.broker.messages) - 1))
            del self.broker.messages[index]

    @rule(data=st.data())
    def reorder(self, data: st.DataObject) -> None:
        self.broker.messages = data.draw(st.permutations(self.broker.messages))

    @rule(redelivered=st.booleans(), kill_at=st.integers(1, 3), events_per_pass=EVENTS_PER_PASS)
    def killed_mid_delivery(self, redelivered: bool, kill_at: int, events_per_pass: int) -> None:
        """The worker dies at the commit of its `kill_at`-th transaction: a pass's, or the
        settling of its event."""
        if not self.broker.messages:
            return
        event_id = self.broker.messages.pop(0)
        made = 0

        def factory() -> UnitOfWork:
            nonlocal made
            made += 1
            if made == kill_at:
                return KilledAtCommit(self.container.engine)
            return self.uow()

        with contextlib.suppress(WorkerKilled):
            handle_delivery(factory, event_id, self.step(events_per_pass))
        if redelivered:  # acks_late + reject_on_worker_lost puts it back
            self.broker.messages.append(event_id)

    @rule()
    def leases_expire(self) -> None:
        self._make_due()

    @rule()
    def prune_everything_finished(self) -> None:
        self._record()
        retention.prune(self.uow, older_than_s=0)

    @rule()
    def rebuild(self) -> None:
        self._record()
        projection.rebuild(self.uow, self.container.heavy_step)

    def _make_due(self) -> None:
        with self.container.engine.begin() as connection:
            connection.execute(
                text(
                    "UPDATE outbox_events SET available_at = clock_timestamp() - interval '1 s' "
                    "WHERE state IN ('dispatched', 'pending')"
                )
            )

    def _record(self) -> None:
        with self.container.engine.connect() as connection:
            self.history.record(connection)

    @invariant()
    def each_bar_holds_the_digest_of_the_one_order_and_in_flight_is_bounded(self) -> None:
        with self.container.engine.connect() as connection:
            assert self.history.problems(connection) == []
            in_flight = connection.execute(
                text("SELECT count(*) FROM outbox_events WHERE state = 'dispatched'")
            ).scalar_one()
        assert in_flight <= LIMITS.max_in_flight

    def teardown(self) -> None:
        for _ in range(200):
            if outbox_stats(self.uow()).drained:
                break
            self._make_due()
            relay_once(self.uow(), self.broker, LIMITS)
            self._record()
            while self.broker.messages:
                self.deliver()
        stats = outbox_stats(self.uow())
        assert stats.drained and stats.dead == 0, stats
        with self.container.engine.connect() as connection:
            assert self.history.problems(connection) == []
            behind = connection.execute(
                text(
                    "SELECT count(*) FROM bars, bar_projection"
                    " WHERE bars.position <> bar_projection.head_position"
                )
            ).scalar_one()
        assert behind == 0
        assert self.container.verify().mismatched == []


def make_machine(container: Container) -> Callable[[], PipelineMachine]:
    return lambda: PipelineMachine(container)


def test_any_history_leaves_each_bar_with_the_digest_of_the_one_order(pg_url: str) -> None:
    container = Container(Settings(database_url=pg_url, recalculation=DIGEST, part_size=2))
    try:
        run_state_machine_as_test(
            make_machine(container),
            settings=settings(
                max_examples=60,
                stateful_step_count=30,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        container.close()
