"""A delivery of an event's message: it drives the parts on (passes), then settles its event.

The heavy step itself is in `domain.passes`; a delivery lends its worker to it. Whatever
parts it passes, it then stamps applied the events every part has passed, its own among
them if so. If some part has not passed its event yet (another pass has it, or it backs off,
or it is dead), the event is pending again, due a little later: its next message drives the
parts on if no other delivery does. Nothing here is applied twice: a part's position, written
with its bars, is what every pass starts from."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, StrEnum

from domain.errors import EventNotFoundError
from domain.outbox import EventState
from domain.passes import HeavyStep, RecalculationChangedError, advance_parts, lend_a_pass
from domain.ports import UnitOfWork

logger = logging.getLogger(__name__)

# An event whose parts are being passed by others is looked at again this soon; one that
# waits on a dead part (or a refused recalculation) this late: `dead retry` makes it due.
RECHECK_BUSY_S = 1.0
RECHECK_STOPPED_S = 60.0


class Outcome(StrEnum):
    APPLIED = "applied"  # every part has applied the delivered event now
    ALREADY_APPLIED = "already_applied"  # a redelivery, or other passes took it through
    WAITING = "waiting"  # some parts have not applied it yet; it is looked at again soon
    REFUSED = "refused"  # this process runs another recalculation than the bars'
    DEAD = "dead"
    NO_SUCH_EVENT = "no_such_event"  # the message names an id the outbox does not hold


_refusals_logged: set[tuple[str, str]] = set()


def handle_delivery(
    uow_factory: Callable[[], UnitOfWork],
    event_id: int,
    step: HeavyStep,
    clock: Callable[[], float] = time.monotonic,
) -> Outcome:
    """Handle one message for `event_id`. A failing pass is recorded on its part, never
    raised to the broker: the outbox and the parts, not the broker, hold retries."""
    # Most messages under load find their event applied and stamped by another delivery's
    # passes: then they cost two statements, or lend one pass to the events behind first.
    applied = _applied_already(uow_factory(), event_id)
    if applied is Applied.BACK:
        return Outcome.ALREADY_APPLIED
    if applied is Applied.LEND:
        _lend_a_pass(uow_factory, step, event_id)
        return Outcome.ALREADY_APPLIED
    try:
        # Settled first: the event may be passed by every part, and only not stamped yet.
        settled = settle(uow_factory(), event_id, drive=True)
    except EventNotFoundError:
        return _dropped(uow_factory(), event_id)
    if isinstance(settled, Outcome):
        return Outcome.ALREADY_APPLIED if settled is Outcome.APPLIED else settled
    refused = False
    try:
        # Only through its own event: then it is settled at once, not after every pass that
        # later events make waiting (each pass still applies all that waits for its part).
        advance_parts(uow_factory, step, clock, through=settled.position)
    except RecalculationChangedError as error:
        refused = True
        _log_refusal(error, event_id)
    outcome = settle(uow_factory(), event_id, refused)
    return outcome if isinstance(outcome, Outcome) else Outcome.WAITING


@dataclass(frozen=True)
class Behind:
    """Some part has yet to pass the delivered event, at `position`: drive the parts on."""

    position: int


class Applied(Enum):
    """What a delivery finds before it drives anything."""

    BACK = "back"  # its event was applied and stamped: its message is back now
    LEND = "lend"  # so, and a pass waits for a worker: lend it one, then the message is back
    NO = "no"  # not applied yet (or not held): drive the parts, then settle


def _applied_already(uow: UnitOfWork, event_id: int) -> Applied:
    with uow:
        if not uow.parts.pass_due():
            back = uow.deliveries.message_back(event_id)
            uow.commit()
            return Applied.BACK if back else Applied.NO
        try:
            stored = uow.deliveries.lock(event_id)
        except EventNotFoundError:
            return Applied.NO  # the full path says why
        uow.commit()
    out = stored.state is EventState.DISPATCHED
    return Applied.LEND if stored.applied and out else Applied.NO


def _lend_a_pass(uow_factory: Callable[[], UnitOfWork], step: HeavyStep, event_id: int) -> None:
    """One pass for the events behind, then stamp what every part has passed, and only then
    is this message back: the relay counts it in flight until the worker is done with it.
    Under load the bound keeps most events out of the broker; the passes that the messages out
    lend apply them, and the relay then processes them without a message of their own."""
    try:
        lend_a_pass(uow_factory, step)
    except RecalculationChangedError as error:
        _log_refusal(error, event_id)
    with uow_factory() as uow:
        uow.deliveries.apply_through(uow.parts.lowest_position())
        uow.deliveries.message_back(event_id)
        uow.commit()


def settle(
    uow: UnitOfWork, event_id: int, refused: bool = False, drive: bool = False
) -> Outcome | Behind:
    """Stamp applied what every part has passed, then the delivered event's message is back:
    it is processed if applied, else pending again until its parts have passed it. With
    `drive`, an event some part has yet to pass is left dispatched (`Behind`): the caller
    makes passes first, then settles again."""
    with uow:
        uow.deliveries.apply_through(uow.parts.lowest_position())
        stored = uow.deliveries.lock(event_id)
        if stored.state is EventState.DEAD:
            return Outcome.DEAD  # parked until `postsave dead retry`; a stale message waits too
        if stored.applied or stored.state is EventState.PROCESSED:
            uow.deliveries.message_back(event_id)
            uow.commit()
            return Outcome.APPLIED
        if drive and stored.position is not None:
            uow.commit()  # a message of an event pending again drives the parts on too
            return Behind(stored.position)
        if stored.state is not EventState.DISPATCHED:
            uow.commit()  # pending already (a message of it came back before this one)
            return Outcome.REFUSED if refused else Outcome.WAITING
        if stored.position is None:  # not sequenced: the relay does that before it dispatches
            delay = 0.0
        else:
            blockers = uow.parts.blockers(stored.position)
            stopped = refused or (blockers.dead and not blockers.busy and not blockers.backing_off)
            delay = RECHECK_STOPPED_S if stopped else RECHECK_BUSY_S
        uow.deliveries.wait_for_parts(event_id, delay)
        uow.commit()
        return Outcome.REFUSED if refused else Outcome.WAITING


def _log_refusal(error: RecalculationChangedError, event_id: int) -> None:
    """One ERROR line per process for each pair of recalculations, not one per message."""
    key = (error.recorded, error.running)
    if key in _refusals_logged:
        logger.debug("event %s: %s", event_id, error, extra=_fields(event_id))
        return
    _refusals_logged.add(key)
    logger.error("event %s: %s", event_id, error, extra=_fields(event_id))


def _dropped(uow: UnitOfWork, event_id: int) -> Outcome:
    """A message for an event the outbox does not hold: pruned after it was applied (ids are
    removed by pruning only, up to the checkpoint's last), or never one of ours."""
    with uow:
        pruned = event_id <= uow.projection_log.checkpoint().last_pruned_id
    if pruned:
        logger.info(
            "event %s: dropped a message for an event applied and then pruned",
            event_id,
            extra=_fields(event_id),
        )
        return Outcome.ALREADY_APPLIED
    logger.error(
        "event %s: dropped a message for an event the outbox does not hold",
        event_id,
        extra=_fields(event_id),
    )
    return Outcome.NO_SUCH_EVENT


def _fields(event_id: int, **more: object) -> dict[str, object]:
    """Structured fields of a delivery's log line, for JSON logs; the text names them too."""
    return {"event_id": event_id, **more}
