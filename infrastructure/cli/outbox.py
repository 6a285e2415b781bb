"""`postsave status` and `postsave dead ...`: the outbox and the parts as an operator sees them."""

from __future__ import annotations

import argparse
import json
from typing import Any

from domain import operations
from infrastructure.bootstrap import Container
from infrastructure.cli.arguments import command, command_group, positive_id, print_ids


def _status(c: Container, args: argparse.Namespace) -> int:
    status = operations.status(c.uow())
    stats, parts = status.events, status.parts
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
                    "parts": parts.parts,
                    "parts_behind": parts.behind,
                    "parts_backing_off": status.parts_backing_off,
                    "parts_dead": parts.dead,
                    "parts_rebuilding": parts.rebuilding,
                    "events_behind": status.events_behind,
                    "projection_lag_s": stats.projection_lag_s,
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
    print(f"parts        {parts.parts}")
    print(f"  behind      {parts.behind} (up to {status.events_behind} events)")
    print(f"  backing off {status.parts_backing_off}")
    print(f"  dead        {parts.dead}")
    print(f"  rebuilding  {parts.rebuilding}")
    print(f"projection lag     {stats.projection_lag_s:.1f} s")
    return 0


def _dead_list(c: Container, args: argparse.Namespace) -> int:
    for event in operations.dead_events(c.uow()):
        print(
            f"{event.id}\t{event.event_type}\tfailures={event.failures}\t"
            f"dispatches={event.dispatches}\t{_one_line(event.last_error)}"
        )
    for dead in operations.dead_parts(c.uow()):
        part = dead.part
        print(
            f"part {part.id}\tfailures={part.failures}\twaiting={dead.waiting}\t"
            f"{_one_line(part.last_error)}"
        )
    return 0


def _one_line(error: str | None) -> str:
    return " ".join((error or "").split())


def _dead_retry(c: Container, args: argparse.Namespace) -> int:
    revived = operations.retry_dead(c.uow(), args.ids or None, args.parts or None)
    print_ids(revived.events)
    print("".join(f"part {part_id}\n" for part_id in revived.parts), end="")
    return 0


def register(commands: Any) -> None:
    p = command(
        commands,
        "status",
        _status,
        "events pending, in flight, processed (every one ever, pruned ones included), dead; "
        "the parts behind, dead, rebuilding; the projection's lag",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    dead = command_group(commands, "dead", "events and parts that failed too often")
    command(dead, "list", _dead_list, "list dead events, then dead parts, with their last error")
    p = command(
        dead,
        "retry",
        _dead_retry,
        "make dead events due and dead parts ready again (every one if no ID and no --part)",
    )
    p.add_argument("ids", type=positive_id, nargs="*", metavar="ID", help="a dead event's id")
    p.add_argument(
        "--part",
        dest="parts",
        type=positive_id,
        action="append",
        metavar="ID",
        help="a dead part's id (repeat for several)",
    )
