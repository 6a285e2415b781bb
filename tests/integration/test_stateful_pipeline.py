"""Property-based: random foo operations, bar creations and delivery faults (duplicate, drop,
reorder, crash before commit, lease expiry) against the real PostgreSQL adapter. Whatever the
sequence, once the outbox is drained every bar satisfies the invariant, and no event was
applied twice."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlalchemy import text

from domain import projection, use_cases
from domain.backoff import RetryPolicy
from domain.delivery import Outcome, apply_pass, handle_delivery
from domain.errors import DomainError
from domain.operations import outbox_stats
from domain.outbox import RelayLimits
from domain.ports import Dispatcher, UnitOfWork
from domain.relay import relay_once
from infrastructure.bootstrap import Container
from infrastructure.settings import Settings
from infrastructure.sql.unit_of_work import SqlUnitOfWork

pytestmark = pytest.mark.postgres

LIMITS = RelayLimits(batch_size=4, max_in_flight=6, lease_seconds=60.0)
RETRY = RetryPolicy(max_attempts=10)
# Deliveries apply their own event alone, a few other waiting ones too, or everything waiting.
COALESCE = st.sampled_from([0, 2, 500])


class InMemoryBroker(Dispatcher):
    """The broker, as far as the relay and the handler can tell: an ordered list of messages."""

    def __init__(self) -> None:
        self.messages: list[int] = []

    def dispatch(self, event_ids: Sequence[int], expires_in_s: float) -> None:
        self.messages.extend(event_ids)


class CrashingUnitOfWork(SqlUnitOfWork):
    """A worker that dies after doing all the work and before its commit."""

    def _commit(self) -> None:
        raise RuntimeError("worker killed before commit")


class PipelineMachine(RuleBasedStateMachine):
    def __init__(self, container: Container) -> None:
        super().__init__()
        self.container = container
        self.broker = InMemoryBroker()
        self.foos: list[int] = []
        with container.engine.begin() as connection:
            connection.execute(
                text(
                    "TRUNCATE applied_events, outbox_events, foos, bars RESTART IDENTITY;"
                    "UPDATE bar_projection SET applied_total = 0, events_applied = 0"
                )
            )

    def uow(self) -> UnitOfWork:
        return self.container.uow()

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

    # The relay and the broker, with faults.
    @rule()
    def relay(self) -> None:
        relay_once(self.uow(), self.broker, LIMITS)

    @rule(coalesce=COALESCE)
    def deliver(self, coalesce: int = 0) -> None:
        if self.broker.messages:
            event_id = self.broker.messages.pop(0)
            assert handle_delivery(self.uow, event_id, RETRY, coalesce) in (
                Outcome.APPLIED,
                Outcome.ALREADY_APPLIED,
            )

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

    @rule(redelivered=st.booleans(), coalesce=COALESCE)
    def crash_before_commit(self, redelivered: bool, coalesce: int) -> None:
        if self.broker.messages:
            event_id = self.broker.messages.pop(0)
            crashing = CrashingUnitOfWork(self.container.engine)
            try:
                outcome = apply_pass(crashing, event_id, coalesce)
            except RuntimeError:
                pass  # crashed with the work done and nothing committed
            else:
                assert outcome is Outcome.ALREADY_APPLIED  # nothing to commit, no crash
            if redelivered:  # acks_late + reject_on_worker_lost puts it back
                self.broker.messages.append(event_id)

    @rule()
    def leases_expire(self) -> None:
        self._expire_leases()

    def _expire_leases(self) -> None:
        with self.container.engine.begin() as connection:
            connection.execute(
                text(
                    "UPDATE outbox_events SET available_at = clock_timestamp() - interval '1 s' "
                    "WHERE state = 'dispatched'"
                )
            )

    @invariant()
    def nothing_applied_twice_and_in_flight_bounded(self) -> None:
        with self.container.engine.connect() as connection:
            applied, recorded, in_flight = connection.execute(
                text(
                    "SELECT (SELECT events_applied FROM bar_projection),"
                    " (SELECT count(*) FROM applied_events),"
                    " (SELECT count(*) FROM outbox_events WHERE state = 'dispatched')"
                )
            ).one()
        assert applied == recorded
        assert in_flight <= LIMITS.max_in_flight

    def teardown(self) -> None:
        for _ in range(200):
            stats = outbox_stats(self.uow())
            if stats.drained:
                break
            self._expire_leases()
            relay_once(self.uow(), self.broker, LIMITS)
            while self.broker.messages:
                self.deliver()
        stats = outbox_stats(self.uow())
        assert stats.drained and stats.dead == 0, stats
        result = projection.verify(self.uow())
        assert result.mismatched == []


def test_any_sequence_of_operations_and_delivery_faults_keeps_the_invariant(pg_url: str) -> None:
    container = Container(Settings(database_url=pg_url))
    try:
        run_state_machine_as_test(
            lambda: PipelineMachine(container),
            settings=settings(
                max_examples=100,
                stateful_step_count=30,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        container.close()
