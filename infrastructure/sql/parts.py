"""The PartLedger port: the parts of the bars, which one a pass takes, and the projection row."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, case, func, insert, select, update
from sqlalchemy.exc import OperationalError

from domain.outbox import MAX_ERROR_CHARS, EventState, StoredEvent
from domain.parts import Blockers, Part, PartState, PartStats, Projection
from domain.ports import PartLedger
from infrastructure.sql.clock import db_now, db_now_plus, seconds
from infrastructure.sql.outbox.rows import select_events, stored
from infrastructure.sql.schema import bar_parts, bar_projection, outbox_counters, outbox_events

_PART = bar_parts.c
TIMED_OUT = {"57014", "55P03"}  # statement_timeout, lock_timeout
_DUE = _PART.available_at <= db_now()


class SqlPartLedger(PartLedger):
    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.postgresql = connection.dialect.name == "postgresql"

    def projection(self) -> Projection:
        row = self.connection.execute(select(bar_projection)).one()
        return Projection(
            head=int(row.head_position),
            head_total=int(row.head_total),
            applied=int(row.applied_position),
            recalculation=row.recalculation,
        )

    def adopt(self, recalculation: str) -> bool:
        no_part = ~select(_PART.id).exists()
        self.connection.execute(
            update(bar_projection)
            .where(bar_projection.c.recalculation != recalculation, no_part)
            .values(recalculation=recalculation)
        )
        return self.projection().recalculation == recalculation

    def lock_open(self, part_size: int) -> Part:
        last = self.connection.execute(
            select(bar_parts).order_by(_PART.id.desc()).limit(1).with_for_update()
        ).one_or_none()
        if last is not None and last.bars < part_size:
            return _part(last)
        head = self.projection()
        row = self.connection.execute(
            insert(bar_parts)
            .values(
                position=head.head,
                applied_total=head.head_total,
                baseline_position=head.head,
                baseline_total=head.head_total,
            )
            .returning(bar_parts)
        ).one()
        return _part(row)

    def added_bars(self, part_id: int, count: int) -> None:
        self.connection.execute(
            update(bar_parts).where(_PART.id == part_id).values(bars=_PART.bars + count)
        )

    def claim(self, head: int) -> Part | None:
        query = (
            select(bar_parts)
            .where(
                _PART.state == PartState.READY.value,
                _DUE,
                (_PART.position < head) | _PART.rebuilding,
            )
            .order_by(_PART.position, _PART.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        row = self.connection.execute(query).one_or_none()
        return None if row is None else _part(row)

    def pass_due(self) -> bool:
        head = select(bar_projection.c.head_position).scalar_subquery()
        due = (
            select(_PART.id)
            .where(_PART.state == PartState.READY.value, _DUE)
            .where((_PART.position < head) | _PART.rebuilding)
            .exists()
        )
        return bool(self.connection.execute(select(due)).scalar_one())

    def wait_for_passes(self, position: int) -> int:
        behind = (
            select(_PART.id)
            .where(_PART.state == PartState.READY.value, _DUE, _PART.position < position)
            .with_for_update()  # waits for the passes holding them; each is read again after
            .subquery()
        )
        try:
            return int(
                self.connection.execute(select(func.count()).select_from(behind)).scalar_one()
            )
        except OperationalError as error:
            if getattr(error.orig, "sqlstate", None) not in TIMED_OUT:
                raise
            return 0

    def events_after(self, position: int, limit: int) -> list[StoredEvent]:
        query = (
            select_events()
            .where(outbox_events.c.position > position)
            .order_by(outbox_events.c.position)
            .limit(limit)
        )
        return [stored(row) for row in self.connection.execute(query)]

    def advance(self, part_id: int, position: int, delta_total: int) -> None:
        self.connection.execute(
            update(bar_parts)
            .where(_PART.id == part_id)
            .values(
                position=position,
                applied_total=_PART.applied_total + delta_total,
                failures=0,
                last_error=None,
                rebuilding=False,
                passed_at=db_now(),
            )
        )

    def record_failure(self, part_id: int, error: str, retry_in_s: float | None) -> int:
        if retry_in_s is None:
            values: dict[str, Any] = {"state": PartState.DEAD.value}
        else:
            values = {"available_at": db_now_plus(seconds(retry_in_s))}
        failures = self.connection.execute(
            update(bar_parts)
            .where(_PART.id == part_id)
            .values(failures=_PART.failures + 1, last_error=error[:MAX_ERROR_CHARS], **values)
            .returning(_PART.failures)
        ).scalar_one()
        self.connection.execute(
            update(outbox_counters).values(part_failures=outbox_counters.c.part_failures + 1)
        )
        return int(failures)

    def blockers(self, position: int) -> Blockers:
        dead = _PART.state == PartState.DEAD.value
        ready = _PART.state == PartState.READY.value
        row = self.connection.execute(
            select(
                func.count().filter(ready & _DUE),
                func.count().filter(ready & ~_DUE),
                func.count().filter(dead),
            ).where((_PART.position < position) | _PART.rebuilding)
        ).one()
        return Blockers(busy=int(row[0]), backing_off=int(row[1]), dead=int(row[2]))

    def stats(self) -> PartStats:
        head = self.projection().head
        row = self.connection.execute(
            select(
                func.count(),
                func.count().filter(_PART.position < head),
                func.count().filter(_PART.state == PartState.DEAD.value),
                func.count().filter(_PART.rebuilding),
                func.min(_PART.position),
            )
        ).one()
        return PartStats(
            parts=int(row[0]),
            behind=int(row[1]),
            dead=int(row[2]),
            rebuilding=int(row[3]),
            lowest_position=head if row[4] is None else int(row[4]),
        )

    def lowest_position(self) -> int:
        head = select(bar_projection.c.head_position).scalar_subquery()
        query = select(func.coalesce(func.min(_PART.position), head))
        return int(self.connection.execute(query).scalar_one())

    def parts(self) -> list[Part]:
        return [_part(row) for row in self.connection.execute(select(bar_parts).order_by(_PART.id))]

    def dead_parts(self) -> list[Part]:
        query = select(bar_parts).where(_PART.state == PartState.DEAD.value).order_by(_PART.id)
        return [_part(row) for row in self.connection.execute(query)]

    def revive_dead(self, part_ids: Sequence[int] | None) -> list[int]:
        query = update(bar_parts).where(_PART.state == PartState.DEAD.value)
        if part_ids is not None:
            query = query.where(_PART.id.in_(part_ids))
        revived = sorted(
            self.connection.execute(
                query.values(
                    state=PartState.READY.value, failures=0, available_at=db_now()
                ).returning(_PART.id)
            ).scalars()
        )
        if revived:
            self._wake_waiting_events()
        return revived

    def _wake_waiting_events(self) -> None:
        """Events parked while their parts were stopped are due now: their messages drive
        the revived parts on."""
        self.connection.execute(
            update(outbox_events)
            .where(
                outbox_events.c.state == EventState.PENDING.value,
                outbox_events.c.position.is_not(None),
                outbox_events.c.available_at > db_now(),
            )
            .values(available_at=db_now())
        )

    def lock(self, part_id: int) -> Part:
        row = self.connection.execute(
            select(bar_parts).where(_PART.id == part_id).with_for_update()
        ).one()
        return _part(row)

    def set_baseline(self, part_id: int) -> None:
        self.connection.execute(
            update(bar_parts)
            .where(_PART.id == part_id)
            .values(baseline_position=_PART.position, baseline_total=_PART.applied_total)
        )

    def start_rebuild(self, recalculation: str) -> int:
        # Every part, in id order (the order bar creation locks them in): passes wait.
        self.connection.execute(select(_PART.id).order_by(_PART.id).with_for_update()).all()
        self.connection.execute(
            update(bar_parts).values(
                position=_PART.baseline_position,
                applied_total=_PART.baseline_total,
                rebuilding=True,
                state=PartState.READY.value,
                failures=0,
                available_at=db_now(),
            )
        )
        lowest = self.connection.execute(select(func.min(_PART.baseline_position))).scalar()
        head = self.projection().head
        position = head if lowest is None else int(lowest)
        self.connection.execute(
            update(bar_projection).values(
                applied_position=case(
                    (
                        bar_projection.c.applied_position < position,
                        bar_projection.c.applied_position,
                    ),
                    else_=position,
                ),
                recalculation=recalculation,
            )
        )
        return position


def _part(row: Any) -> Part:
    return Part(
        id=int(row.id),
        position=int(row.position),
        applied_total=int(row.applied_total),
        bars=int(row.bars),
        state=PartState(row.state),
        failures=int(row.failures),
        last_error=row.last_error,
        rebuilding=bool(row.rebuilding),
        baseline_position=int(row.baseline_position),
    )
