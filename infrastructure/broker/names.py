"""Names both sides of the broker agree on: the tasks and the queues they are routed to."""

from __future__ import annotations

POLL_TASK = "poll_outbox"
RECALC_TASK = "recalculate_bars"
POLL_QUEUE = "postsave.poll"
RECALC_QUEUE = "postsave.recalc"
