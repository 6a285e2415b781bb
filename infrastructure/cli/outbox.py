"""`postsave status` and `postsave dead ...`: the outbox as an operator sees it."""

from __future__ import annotations

import argparse
import json
from typing import Any

from domain import operations
from infrastructure.bootstrap import Container
from infrastructure.cli.arguments import command, command_group, positive_id, print_ids


def _status(c: Container, args: argparse.Namespace) -> int:
    stats = operations.outbox_stats(c.uow())
    if args.json:
        print(
            json.dumps(
                {
                    "pending": stats.pending,
                    "in_flight": stats.in_flight,
                    "processed": stats.processed,
                    "dead": stats.dead,
                    "oldest_pending_age_s": stats.oldest_pending_age_s,
                    "drained": stats.drained,
                }
            )
        )
        return 0
    age = stats.oldest_pending_age_s
    print(f"pending      {stats.pending}")
    print(f"in flight    {stats.in_flight}")
    print(f"processed    {stats.processed}")
    print(f"dead         {stats.dead}")
    print(f"oldest unfinished  {'-' if age is None else f'{age:.1f} s'}")
    return 0


def _dead_list(c: Container, args: argparse.Namespace) -> int:
    for event in operations.dead_events(c.uow()):
        error = " ".join((event.last_error or "").split())  # one line per event
        print(
            f"{event.id}\t{event.event_type}\tfailures={event.failures}\t"
            f"dispatches={event.dispatches}\t{error}"
        )
    return 0


def _dead_retry(c: Container, args: argparse.Namespace) -> int:
    print_ids(operations.retry_dead_events(c.uow(), args.ids or None))
    return 0


def register(commands: Any) -> None:
    p = command(
        commands,
        "status",
        _status,
        "events pending, in flight, processed (every one ever, pruned ones included), dead",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    dead = command_group(commands, "dead", "events that failed too often")
    command(dead, "list", _dead_list, "list dead events with their last error")
    p = command(dead, "retry", _dead_retry, "make dead events due again (all if no ID)")
    p.add_argument("ids", type=positive_id, nargs="*", metavar="ID")
