"""What Celery is told about a delivery: success unless something stops its event."""

from __future__ import annotations

from domain.delivery import Outcome

# A message dropped before any event was looked up: no event to name or retry, so the task
# returns it; the ERROR line of infrastructure.broker.messages reports it.
MALFORMED = "malformed"

# Nothing failed: the event is on the bars, or its parts are on their way to it (waiting).
SUCCEEDED = frozenset({Outcome.APPLIED, Outcome.ALREADY_APPLIED, Outcome.WAITING})


class EventNotApplied(Exception):
    """A delivery that could not apply its event: it is dead, this process runs another
    recalculation than the bars', or the outbox does not hold it.

    Declared in the task's `throws`, so Celery marks the task FAILURE and sends task-failed,
    logging one INFO line without a traceback; the domain already logged the failure itself.
    The message is still acknowledged (acks_on_failure): the outbox, not the broker, retries.
    """

    def __init__(self, event_id: int, outcome: str) -> None:
        super().__init__(event_id, outcome)  # `args` as given, so that it pickles across pools
        self.event_id = event_id
        self.outcome = outcome

    def __str__(self) -> str:
        return f"event {self.event_id} not applied: {self.outcome}"

    def __repr__(self) -> str:
        return f"EventNotApplied({str(self)!r})"


def task_result(event_id: int, outcome: Outcome) -> str:
    """The task's return value when nothing failed; else raises EventNotApplied."""
    if outcome not in SUCCEEDED:
        raise EventNotApplied(event_id, outcome.value)
    return outcome.value
