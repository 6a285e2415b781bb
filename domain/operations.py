"""What an operator asks of the outbox and the parts: how they are doing, and what to do with
dead events and dead parts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from domain.errors import DomainError
from domain.outbox import OutboxHealth, OutboxStats, StoredEvent
from domain.parts import Part, PartStats
from domain.ports import UnitOfWork


@dataclass(frozen=True)
class Status:
    """What `postsave status` shows: the events by state, and how the parts stand."""

    events: OutboxStats
    parts: PartStats
    parts_backing_off: int  # ready, but waiting out the backoff of a failed pass
    head: int  # the last position the relay has given an event

    @property
    def events_behind(self) -> int:
        """How far the furthest part is behind the head, in events."""
        return max(self.head - self.parts.lowest_position, 0)


@dataclass(frozen=True)
class Health:
    """What a metrics scrape reads: the outbox's health, and how the parts stand."""

    events: OutboxHealth
    parts: PartStats
    parts_backing_off: int


@dataclass(frozen=True)
class DeadPart:
    part: Part
    waiting: int  # events sequenced after its position: none is applied until it is revived


@dataclass(frozen=True)
class Revived:
    events: list[int]
    parts: list[int]


def outbox_stats(uow: UnitOfWork) -> OutboxStats:
    with uow:
        return uow.monitor.stats()


def outbox_health(uow: UnitOfWork) -> OutboxHealth:
    with uow:
        return uow.monitor.health()


def status(uow: UnitOfWork) -> Status:
    with uow:
        head = uow.parts.projection().head
        return Status(uow.monitor.stats(), uow.parts.stats(), _backing_off(uow, head), head)


def health(uow: UnitOfWork) -> Health:
    with uow:
        head = uow.parts.projection().head
        return Health(uow.monitor.health(), uow.parts.stats(), _backing_off(uow, head))


def _backing_off(uow: UnitOfWork, head: int) -> int:
    # Every part is below the position after the head: its blockers are all the parts.
    return uow.parts.blockers(head + 1).backing_off


def dead_events(uow: UnitOfWork) -> list[StoredEvent]:
    with uow:
        return uow.monitor.dead_events()


def dead_parts(uow: UnitOfWork) -> list[DeadPart]:
    """Dead parts by id, each with how many events wait on it."""
    with uow:
        head = uow.parts.projection().head
        return [DeadPart(part, max(head - part.position, 0)) for part in uow.parts.dead_parts()]


def retry_dead_events(uow: UnitOfWork, event_ids: Sequence[int] | None = None) -> list[int]:
    """Make dead events due again: the given ones, all of them or none, or every dead one."""
    with uow:
        revived = _revive_events(uow, event_ids)
        uow.commit()
        return revived


def retry_dead_parts(uow: UnitOfWork, part_ids: Sequence[int] | None = None) -> list[int]:
    """Make dead parts ready again: the given ones, all of them or none, or every dead one."""
    with uow:
        revived = _revive_parts(uow, part_ids)
        uow.commit()
        return revived


def retry_dead(
    uow: UnitOfWork,
    event_ids: Sequence[int] | None = None,
    part_ids: Sequence[int] | None = None,
) -> Revived:
    """`postsave dead retry`: every dead event and every dead part when neither is given;
    else exactly the given events and parts, all of them or none, in one transaction."""
    everything = event_ids is None and part_ids is None
    with uow:
        revived = Revived(
            _revive_events(uow, None if everything else event_ids or []),
            _revive_parts(uow, None if everything else part_ids or []),
        )
        uow.commit()
        return revived


def _revive_events(uow: UnitOfWork, event_ids: Sequence[int] | None) -> list[int]:
    wanted = None if event_ids is None else list(dict.fromkeys(event_ids))
    if wanted == []:
        return []
    revived = uow.monitor.revive_dead(wanted)
    _refuse_missing("event", wanted, revived)
    return revived


def _revive_parts(uow: UnitOfWork, part_ids: Sequence[int] | None) -> list[int]:
    wanted = None if part_ids is None else list(dict.fromkeys(part_ids))
    if wanted == []:
        return []
    revived = uow.parts.revive_dead(wanted)
    _refuse_missing("part", wanted, revived)
    return revived


def _refuse_missing(kind: str, wanted: list[int] | None, revived: list[int]) -> None:
    """The unit of work is rolled back with it: nothing was retried."""
    if wanted is not None and len(revived) != len(wanted):
        missing = sorted(set(wanted) - set(revived))
        raise DomainError(
            f"{kind}(s) {', '.join(map(str, missing))} are not dead; nothing was retried"
        )
