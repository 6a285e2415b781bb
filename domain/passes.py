"""Passes: the heavy step, part by part. A pass takes one part that is behind, applies the
events after its position to each of its bars through the team's recalculation, and writes
the bars and the part's new position in one transaction. Passes of different parts run at
the same time on any worker; a failing part backs off alone."""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from domain.backoff import RetryPolicy
from domain.errors import DomainError
from domain.parts import BarAt, Part
from domain.ports import UnitOfWork
from domain.recalculation import LoggedEvent, Recalculation, logged

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeavyStep:
    """The team's recalculation and how passes run it."""

    recalculate: Recalculation
    name: str  # `module:function`, as POSTSAVE_RECALCULATION names it
    events_per_pass: int = 500  # at most, a part's waiting events applied in one pass
    budget_s: float = 15.0  # a delivery starts no pass after this
    retry: RetryPolicy = field(default_factory=RetryPolicy)


class RecalculationChangedError(DomainError):
    """The bars were computed with another recalculation than this process runs."""

    def __init__(self, recorded: str, running: str) -> None:
        super().__init__(
            f"the bars were computed with {recorded}, this process runs "
            f"POSTSAVE_RECALCULATION={running}: it applies nothing until `postsave rebuild` "
            f"is run with {running} (or it runs {recorded} again)"
        )
        self.recorded, self.running = recorded, running


class PassFailedError(Exception):
    """A pass over `part` raised `error`; nothing of it was written."""

    def __init__(self, part: Part, error: BaseException) -> None:
        super().__init__(part.id, error)
        self.part, self.error = part, error


def run_pass(uow: UnitOfWork, step: HeavyStep, through: int | None = None) -> Part | None:
    """One pass over a part that is behind (behind `through`, if given), if one is free: the
    part it passed, or None. The pass applies all that waits for the part, up to the bound,
    however far `through` is."""
    with uow:
        projection = uow.parts.projection()
        if projection.recalculation != step.name:
            if not uow.parts.adopt(step.name):
                raise RecalculationChangedError(projection.recalculation, step.name)
            uow.commit()  # no part yet: nothing was computed with the one recorded before
        behind = projection.head if through is None else min(projection.head, through)
        part = uow.parts.claim(behind)
        if part is None:
            return None
        try:
            apply_to_part(uow, part, step)
            uow.commit()
        except Exception as error:
            raise PassFailedError(part, error) from error
        return part


def apply_to_part(uow: UnitOfWork, part: Part, step: HeavyStep) -> None:
    """The pass's work, in the caller's transaction, on the locked `part`."""
    bars = uow.bars.baselines_of_part(part.id) if part.rebuilding else uow.bars.of_part(part.id)
    start = min([part.position, *(each.position for each in bars)])
    events = [logged(stored) for stored in uow.parts.events_after(start, step.events_per_pass)]
    recalculate_each(bars, events, step.recalculate)
    uow.bars.save(bars)
    end = events[-1].position if events else start
    delta = sum(event.delta for event in events if event.position > part.position)
    uow.parts.advance(part.id, max(end, part.position), delta)


def recalculate_each(
    bars: Sequence[BarAt], events: Sequence[LoggedEvent], fn: Recalculation
) -> None:
    """Each bar gets the events after its own position, in order, in one call."""
    positions = [event.position for event in events]
    suffixes: dict[int, Sequence[LoggedEvent]] = {}
    for each in bars:
        suffix = suffixes.get(each.position)
        if suffix is None:
            suffix = suffixes[each.position] = events[
                bisect.bisect_right(positions, each.position) :
            ]
        if suffix:
            fn(each.bar, suffix)
            each.position = suffix[-1].position


def advance_parts(
    uow_factory: Callable[[], UnitOfWork],
    step: HeavyStep,
    clock: Callable[[], float] = time.monotonic,
    through: int | None = None,
) -> int:
    """Pass parts that are behind (behind position `through`, if given), one after another,
    until none is free or the budget is spent: what one delivery adds to the heavy step.
    Returns how many passes it made. RecalculationChangedError when this process runs another
    recalculation than the bars'."""
    deadline = clock() + step.budget_s
    passes = 0
    while clock() < deadline:
        try:
            part = run_pass(uow_factory(), step, through)
        except PassFailedError as failed:
            record_part_failure(uow_factory(), failed.part, failed.error, step.retry)
            continue
        if part is not None:
            passes += 1
        elif through is None or not _wait_for_passes(uow_factory(), through):
            break
    return passes


def lend_a_pass(uow_factory: Callable[[], UnitOfWork], step: HeavyStep) -> Part | None:
    """One pass over a part that is behind the head, if one is free: the part, or None.
    A failing pass is recorded on its part. RecalculationChangedError as for advance_parts."""
    try:
        return run_pass(uow_factory(), step)
    except PassFailedError as failed:
        record_part_failure(uow_factory(), failed.part, failed.error, step.retry)
        return None


def _wait_for_passes(uow: UnitOfWork, through: int) -> bool:
    """Whether a part behind `through` is left once the passes other deliveries hold end:
    they most likely take their parts past it, and then the event is applied now rather than
    looked at again later. If one is left (a pass that failed, say), another pass takes it."""
    with uow:
        return uow.parts.wait_for_passes(through) > 0


def record_part_failure(
    uow: UnitOfWork, part: Part, error: BaseException, retry: RetryPolicy
) -> None:
    """Back the part off, or make it dead: loud in the logs either way, with what waits on it."""
    failures = part.failures + 1
    dead = retry.is_exhausted(failures)
    delay = None if dead else retry.delay_s(failures)
    with uow:
        uow.parts.record_failure(part.id, describe(error), delay)
        waiting = uow.parts.projection().head - part.position
        uow.commit()
    fields = {"part_id": part.id, "failures": failures, "events_waiting": waiting}
    if delay is None:
        logger.error(
            "part %s is dead after %s failure(s), %s event(s) wait on it: %s; "
            "`postsave dead retry --part %s` once the cause is fixed",
            part.id,
            failures,
            waiting,
            in_one_line(error),
            part.id,
            extra=fields,
        )
        return
    logger.warning(
        "part %s failed (failure %s of %s), next try in %.1f s: %s",
        part.id,
        failures,
        retry.max_attempts,
        delay,
        in_one_line(error),
        extra={**fields, "retry_in_s": round(delay, 1)},
    )


def describe(error: BaseException) -> str:
    """The error as a part or an event records it, whole (a database error's SQL included)."""
    return f"{type(error).__name__}: {error}"


def in_one_line(error: BaseException) -> str:
    """The error as a log line names it: its first line."""
    return (describe(error).splitlines() or [type(error).__name__])[0]
