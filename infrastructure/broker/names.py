"""Names both sides of the broker agree on: the tasks and the queues they are routed to."""

from __future__ import annotations

POLL_TASK = "poll_outbox"
RECALC_TASK = "recalculate_bars"
# Retention's periodic prune runs beside the recalculations, never on the relay's worker.
PRUNE_TASK = "prune_outbox"
POLL_QUEUE = "postsave.poll"
RECALC_QUEUE = "postsave.recalc"
