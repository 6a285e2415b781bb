"""Bars are a projection of the event log: check them against a replay of it, or rebuild
them from it, part by part.

A replay starts from each bar's baseline (the bar as created, or as the last prune left it:
the events before it are gone from the log) and runs the retained events after it through
the recalculation, up to the position the bar is at."""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from domain.errors import DomainError
from domain.parts import BarAt
from domain.passes import HeavyStep, advance_parts
from domain.ports import UnitOfWork
from domain.recalculation import LoggedEvent, bar_state, logged

REPLAY_CHUNK = 5_000  # events read per statement while replaying


@dataclass(frozen=True)
class BarMismatch:
    """A bar off its replay (or off the example's closed form), copied out of the transaction."""

    id: int | None
    stored: dict[str, Any]
    expected: dict[str, Any]


@dataclass(frozen=True)
class Verification:
    bars: int
    parts: int
    completed_total: int
    mismatched: list[BarMismatch]
    outbox_drained: bool
    checked_closed_form: bool  # the example's `weight * completed_total` was checked too

    @property
    def holds(self) -> bool:
        return not self.mismatched


def verify(
    uow_factory: Callable[[], UnitOfWork],
    step: HeavyStep,
    closed_form: Callable[[Any, int], int] | None = None,
    show: int = 10,
) -> Verification:
    """Every bar against a replay of its baseline and the retained log through the
    recalculation, each part while it is locked (its passes wait meanwhile). With the
    example's `closed_form`, once the outbox is drained, also every bar's value against it."""
    with uow_factory() as uow:
        parts = [part.id for part in uow.parts.parts()]
    mismatched: list[BarMismatch] = []
    bars = 0
    for part_id in parts:
        with uow_factory() as uow:
            uow.parts.lock(part_id)
            stored = uow.bars.of_part(part_id)
            replayed = uow.bars.baselines_of_part(part_id)
            events = _events_through(uow, replayed, max((b.position for b in stored), default=0))
            replay(replayed, stored, events, step)
        bars += len(stored)
        for now, expected in zip(stored, replayed, strict=True):
            same = bar_state(now.bar) == bar_state(expected.bar)
            if not same or now.position != expected.position:
                mismatched.append(
                    BarMismatch(now.bar.id, bar_state(now.bar), bar_state(expected.bar))
                )
    with uow_factory() as uow:
        total = uow.foos.completed_total()
        drained = uow.monitor.stats().drained
        if closed_form is not None and drained:
            mismatched += [
                BarMismatch(
                    bar.id, bar_state(bar), {**bar_state(bar), "value": closed_form(bar, total)}
                )
                for bar in uow.bars.mismatched(total, show)
            ]
    return Verification(
        bars=bars,
        parts=len(parts),
        completed_total=total,
        mismatched=mismatched[:show],
        outbox_drained=drained,
        checked_closed_form=closed_form is not None and drained,
    )


def _events_through(uow: UnitOfWork, bars: Sequence[BarAt], through: int) -> list[LoggedEvent]:
    """The retained events after the lowest of the bars' positions, through `through`."""
    position = min((each.position for each in bars), default=through)
    events: list[LoggedEvent] = []
    while position < through:
        chunk = uow.parts.events_after(position, REPLAY_CHUNK)
        if not chunk:
            break
        events += [logged(stored) for stored in chunk if stored.position is not None]
        position = events[-1].position
    return [event for event in events if event.position <= through]


def replay(
    bars: Sequence[BarAt], targets: Sequence[BarAt], events: Sequence[LoggedEvent], step: HeavyStep
) -> None:
    """Each bar of `bars` through the events after its position up to its target's, in
    batches of a pass's size: a recalculation folds, so the batches do not matter."""
    positions = [event.position for event in events]
    for each, target in zip(bars, targets, strict=True):
        low = bisect.bisect_right(positions, each.position)
        high = bisect.bisect_right(positions, target.position)
        for start in range(low, high, step.events_per_pass):
            step.recalculate(each.bar, events[start : min(start + step.events_per_pass, high)])
        each.position = max(each.position, target.position)


@dataclass(frozen=True)
class RebuildStart:
    parts: int
    from_position: int  # the lowest baseline: the events after it are replayed
    events: int  # retained events to replay


def start_rebuild(uow: UnitOfWork, recalculation: str) -> RebuildStart:
    """Every part back to its bars' baselines, to be replayed through `recalculation` (which
    the bars are computed with from now on), and every retained event after the lowest
    baseline to be applied again: the workers' passes do the replay, part by part."""
    with uow:
        uow.projection_log.lock_checkpoint()  # no prune deletes the events to replay meanwhile
        position = uow.parts.start_rebuild(recalculation)
        events = uow.deliveries.reopen_after(position)
        parts = uow.parts.stats().parts
        uow.commit()
        return RebuildStart(parts, position, events)


def rebuild(
    uow_factory: Callable[[], UnitOfWork],
    step: HeavyStep,
    progress: Callable[[int, int], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> RebuildStart:
    """Start a rebuild with the step's recalculation, then join the workers in replaying it
    until no part is rebuilding or behind; `progress` gets (parts done, parts)."""
    started = start_rebuild(uow_factory(), step.name)
    replay_rebuild(uow_factory, step, progress, clock)
    return started


def replay_rebuild(
    uow_factory: Callable[[], UnitOfWork],
    step: HeavyStep,
    progress: Callable[[int, int], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Pass the parts a rebuild reset until none is rebuilding or behind. With no event to
    replay, no message drives the workers: a rebuild's caller does this itself."""
    while True:
        passes = advance_parts(uow_factory, step, clock)
        with uow_factory() as uow:
            stats = uow.parts.stats()
            uow.deliveries.apply_through(stats.lowest_position)
            uow.commit()
        if progress is not None:
            progress(stats.parts - max(stats.behind, stats.rebuilding), stats.parts)
        if not stats.rebuilding and not stats.behind:
            return
        if stats.dead and not passes:
            raise DomainError(
                f"{stats.dead} part(s) died during the rebuild: `postsave dead list` says why; "
                "`postsave dead retry --part ID` resumes them"
            )
        if not passes:
            time.sleep(0.05)  # the parts left are in other workers' passes, or backing off
