"""Bars are a projection of the event log: check them, or rebuild them from it."""

from __future__ import annotations

from dataclasses import dataclass

from domain.ports import UnitOfWork


@dataclass(frozen=True)
class BarMismatch:
    """A bar off the invariant, copied out so it outlives the transaction that read it."""

    id: int | None
    weight: int
    value: int
    expected: int


@dataclass(frozen=True)
class Verification:
    bars: int
    completed_total: int
    mismatched: list[BarMismatch]
    outbox_drained: bool

    @property
    def holds(self) -> bool:
        return not self.mismatched


def verify(uow: UnitOfWork, show: int = 10) -> Verification:
    """Every bar against `weight * sum(amount for completed foos)`."""
    with uow:
        total = uow.foos.completed_total()
        return Verification(
            bars=uow.bars.count(),
            completed_total=total,
            mismatched=[
                BarMismatch(bar.id, bar.weight, bar.value, bar.expected_value(total))
                for bar in uow.bars.mismatched(total, show)
            ],
            outbox_drained=uow.monitor.stats().drained,
        )


def rebuild(uow: UnitOfWork) -> tuple[int, int]:
    """Recompute every bar from the checkpoint and the applied events after it. Returns
    (events applied, the checkpoint's included; bars written).

    Events not yet applied are left to the workers, which apply them on top. Application
    waits only for one aggregate over the log and one update of the bars."""
    with uow:
        uow.bars.lock_applied_total()  # hold event application off while we rewrite
        # Locked before the sum: a prune chunk that commits between the two reads would
        # otherwise be counted twice, in the log and in the checkpoint.
        checkpoint = uow.projection_log.lock_checkpoint()  # the events pruned from the log, folded
        total, events = uow.projection_log.applied_sum()
        events += checkpoint.events
        bars = uow.bars.reset_all(checkpoint.total + total, events)
        uow.commit()
        return events, bars
