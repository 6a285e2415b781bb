"""Retention: the log's finished events, folded into the projection's checkpoint, then deleted,
a chunk per transaction, so that the relay and the workers go on meanwhile."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from domain.errors import DomainError
from domain.outbox import StoredEvent
from domain.ports import UnitOfWork

CHUNK = 1_000
_UNITS_S = {"s": 1, "m": 60, "h": 3_600, "d": 86_400}
_DURATION = re.compile(r"(\d{1,9})([smhd])")


def parse_duration(raw: str) -> float:
    """`30s`, `15m`, `12h`, `7d` in seconds; `0s` is every finished event."""
    match = _DURATION.fullmatch(raw.strip())
    if match is None:
        raise DomainError(f"{raw!r} is not a duration: a whole number and s, m, h or d (7d)")
    return float(int(match[1]) * _UNITS_S[match[2]])


@dataclass(frozen=True)
class PruneReport:
    pruned: int
    total: int  # the sum of their deltas, now in the checkpoint


def prune(
    uow_factory: Callable[[], UnitOfWork],
    older_than_s: float,
    archive: Callable[[Sequence[StoredEvent]], None] | None = None,
    progress: Callable[[int], None] | None = None,
    chunk: int = CHUNK,
) -> PruneReport:
    """Fold processed events older than `older_than_s` into the checkpoint and delete them.

    Each chunk is one transaction: `archive` gets its events first (a failure there deletes
    nothing), and the fold and the deletion commit together, so the checkpoint never misses
    an event nor counts one twice."""
    pruned = total = 0
    while True:
        with uow_factory() as uow:
            events = uow.admin.lock_prunable(older_than_s, chunk)
            if not events:
                return PruneReport(pruned, total)
            if archive is not None:
                archive(events)
            delta = sum(stored.event().delta for stored in events)
            uow.admin.fold_and_delete(events, delta)
            uow.commit()
        pruned, total = pruned + len(events), total + delta
        if progress is not None:
            progress(pruned)
        if len(events) < chunk:
            return PruneReport(pruned, total)
