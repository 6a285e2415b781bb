"""Which messages a worker takes from postsave's queues.

Whoever can publish to `postsave.recalc` or `postsave.poll` can at most make postsave do work it
would do anyway: a worker runs only postsave's own tasks, sent as postsave sends them. It
refuses, before Celery decodes the body or reserves anything for it:
- another task's name (Celery's own `celery.starmap`, `celery.chord_unlock`, ... included),
- a content type other than JSON,
- a body larger than postsave's messages ever are,
- an `eta` or a countdown (a worker holds such messages unacknowledged until their time, so a
  few thousand would hold real events in flight until their leases end),
- links to other tasks (callbacks, errbacks, a chain, a chord), which would make a worker send
  messages past the relay's bound.
A refused message is rejected without requeueing: the broker drops it (or dead-letters it, where
an operator's policy says so), and the worker logs one ERROR line. A message's own time limits
are not refused but ignored: Celery puts the sender's limits for the task in every message
(beat's ticks carry them), and the worker's own are the ones that hold."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from infrastructure.broker.names import POLL_TASK, PRUNE_TASK, RECALC_TASK

POSTSAVE_TASKS = frozenset({POLL_TASK, RECALC_TASK, PRUNE_TASK})
JSON = "application/json"
# postsave's largest message (a recalculation's, with its argsrepr) is under 1 KB; a garbage
# message with a few hundred arguments still fits, and is dropped by the task itself.
MAX_BODY_BYTES = 16 * 1024
LINKS = ("callbacks", "errbacks", "chain", "chord")


def refusal(headers: Any, content_type: Any, body: Any) -> str | None:
    """Why a message is refused, in a few words, or None when a worker may take it. Cheap and
    bounded: the body is parsed only once it is known to be JSON and small."""
    if not isinstance(headers, Mapping) or "task" not in headers:
        return "not a Celery task message of protocol 2 (no task header)"
    name = headers["task"]
    if name not in POSTSAVE_TASKS:
        return f"task {brief(name)} is not one of postsave's ({', '.join(sorted(POSTSAVE_TASKS))})"
    if content_type != JSON:
        return f"content type {brief(content_type)}: postsave takes {JSON} only"
    size = len(body) if isinstance(body, bytes | str) else 0
    if size > MAX_BODY_BYTES:
        return f"a body of {size:,} bytes, over the limit of {MAX_BODY_BYTES:,}"
    if headers.get("eta") is not None or headers.get("countdown") is not None:
        return f"an eta ({brief(headers.get('eta'))}): postsave runs a task when it arrives"
    try:
        payload = json.loads(body)
    except (TypeError, ValueError):
        return "the body is not JSON"
    if not (isinstance(payload, list) and len(payload) == 3 and isinstance(payload[2], dict)):
        return "the body is not Celery's [args, kwargs, options]"
    linked = [link for link in LINKS if payload[2].get(link)]
    if linked:
        return f"it links other tasks ({', '.join(linked)})"
    return None


def ignore_time_limits(headers: dict[str, Any]) -> None:
    """The worker's own time limits for the task, whatever the message says: a publisher's
    (or a host's whose settings differ) could otherwise cut every pass short."""
    if "timelimit" in headers:
        headers["timelimit"] = [None, None]


def brief(value: Any, limit: int = 80) -> str:
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."
