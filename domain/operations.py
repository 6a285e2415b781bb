"""What an operator asks of the outbox: how it is doing, and what to do with dead events."""

from __future__ import annotations

from collections.abc import Sequence

from domain.errors import DomainError
from domain.outbox import OutboxHealth, OutboxStats, StoredEvent
from domain.ports import UnitOfWork


def outbox_stats(uow: UnitOfWork) -> OutboxStats:
    with uow:
        return uow.monitor.stats()


def outbox_health(uow: UnitOfWork) -> OutboxHealth:
    with uow:
        return uow.monitor.health()


def dead_events(uow: UnitOfWork) -> list[StoredEvent]:
    with uow:
        return uow.monitor.dead_events()


def retry_dead_events(uow: UnitOfWork, event_ids: Sequence[int] | None = None) -> list[int]:
    """Make dead events due again: the given ones, all of them or none, or every dead one."""
    with uow:
        wanted = None if event_ids is None else list(dict.fromkeys(event_ids))
        revived = uow.monitor.revive_dead(wanted)
        if wanted is not None and len(revived) != len(wanted):
            missing = sorted(set(wanted) - set(revived))
            raise DomainError(
                f"event(s) {', '.join(map(str, missing))} are not dead; nothing was retried"
            )
        uow.commit()
        return revived
