"""Retention: the log's finished events, folded into the projection's checkpoint, then deleted,
a chunk per transaction, so that the relay and the workers go on meanwhile.

What a replay (verify, rebuild) starts from after a prune: each bar's baseline, its state as
the prune found it. A prune first makes the bars' states their baselines, part by part, and
deletes only events that every baseline is past: the checkpoint of a recalculation of one's
own is the bars themselves. The example's sum of deltas is folded as well (`Checkpoint`)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from domain.errors import DomainError
from domain.outbox import StoredEvent
from domain.ports import UnitOfWork

logger = logging.getLogger(__name__)

CHUNK = 1_000
_UNITS_S = {"s": 1, "m": 60, "h": 3_600, "d": 86_400}
_DURATION = re.compile(r"(\d{1,9})([smhd])")


def parse_duration(raw: str) -> float:
    """`30s`, `15m`, `12h`, `7d` in seconds; `0s` is every finished event."""
    match = _DURATION.fullmatch(raw.strip())
    if match is None:
        raise DomainError(f"{raw!r} is not a duration: a whole number and s, m, h or d (7d)")
    return float(int(match[1]) * _UNITS_S[match[2]])


def format_duration(seconds: float) -> str:
    """The largest unit that states `seconds` exactly: 604800 is `7d`, 90 is `90s`."""
    for unit, size in sorted(_UNITS_S.items(), key=lambda item: -item[1]):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True)
class PruneReport:
    pruned: int
    total: int  # the sum of their deltas, now in the checkpoint
    finished: bool = True  # False: the time budget ran out with more to prune


def prune(
    uow_factory: Callable[[], UnitOfWork],
    older_than_s: float,
    archive: Callable[[Sequence[StoredEvent]], None] | None = None,
    progress: Callable[[int], None] | None = None,
    chunk: int = CHUNK,
    time_budget_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> PruneReport:
    """Fold processed events older than `older_than_s` into the checkpoint and delete them.

    Each chunk is one transaction: `archive` gets its events first (a failure there deletes
    nothing), and the fold and the deletion commit together, so the checkpoint never misses
    an event nor counts one twice. With a `time_budget_s`, no chunk starts after it."""
    deadline = None if time_budget_s is None else clock() + time_budget_s
    through = take_baselines(uow_factory)
    with uow_factory() as uow:
        # Found once: the chunks then walk the ids below it, never the recent events.
        below_id = uow.retention.first_recent_id(older_than_s)
    pruned = total = after_id = 0
    while True:
        if deadline is not None and pruned and clock() >= deadline:
            return PruneReport(pruned, total, finished=False)
        with uow_factory() as uow:
            events = uow.retention.lock_prunable(
                older_than_s, chunk, after_id, below_id, through_position=through
            )
            if not events:
                return PruneReport(pruned, total)
            if archive is not None:
                archive(events)
            delta = sum(stored.event().delta for stored in events)
            uow.retention.fold_and_delete(events, delta)
            uow.commit()
        pruned, total, after_id = pruned + len(events), total + delta, events[-1].id
        if progress is not None:
            progress(pruned)
        if len(events) < chunk:
            return PruneReport(pruned, total)


def take_baselines(uow_factory: Callable[[], UnitOfWork]) -> int:
    """Each part's bars as they are become their baselines, a part per transaction (its
    passes wait meanwhile): a replay starts there once the events before are pruned. Returns
    the lowest baseline position: the events up to it may go."""
    with uow_factory() as uow:
        parts = uow.parts.parts()
        if not parts:
            return uow.parts.projection().applied
    for listed in parts:
        if listed.rebuilding or listed.baseline_position >= listed.position:
            continue
        with uow_factory() as uow:
            part = uow.parts.lock(listed.id)
            if not part.rebuilding:  # a rebuild's bars are replayed, not yet a baseline
                uow.bars.take_baselines(part)
                uow.parts.set_baseline(part.id)
            uow.commit()
    with uow_factory() as uow:
        return min(part.baseline_position for part in uow.parts.parts())


def prune_on_schedule(
    uow_factory: Callable[[], UnitOfWork], retention_s: float, time_budget_s: float
) -> PruneReport:
    """The periodic prune of a retention setting: one INFO line when it removed anything."""
    report = prune(uow_factory, retention_s, time_budget_s=time_budget_s)
    if report.pruned:
        logger.info(
            "prune: folded %d finished events older than %s into the checkpoint and deleted them%s",
            report.pruned,
            format_duration(retention_s),
            "" if report.finished else "; more to go, continuing",
        )
    else:
        logger.debug("prune: no finished event older than %s", format_duration(retention_s))
    return report
