"""`postsave foo ...` and `postsave bar ...`: create and change foos, create bars."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from domain import use_cases
from domain.ports import UnitOfWork
from domain.use_cases import BATCH_SIZE
from infrastructure.bootstrap import Container
from infrastructure.cli.arguments import (
    Handler,
    command,
    command_group,
    count,
    non_negative,
    positive_id,
    print_ids,
)
from infrastructure.cli.bulk import MAX_COUNT, print_batches

IdsAction = Callable[[UnitOfWork, argparse.Namespace], Sequence[int]]


def _printing_ids(action: IdsAction) -> Handler:
    """A command that changes foos and prints their ids, one per line."""

    def handler(c: Container, args: argparse.Namespace) -> int:
        print_ids(action(c.uow(), args))
        return 0

    return handler


def _foo_create(c: Container, args: argparse.Namespace) -> int:
    batches = use_cases.create_foos_in_batches(c.uow(), args.amount, args.count)
    print_batches(batches, args.count, "foos")
    return 0


def _bar_create(c: Container, args: argparse.Namespace) -> int:
    batches = use_cases.create_bars_in_batches(c.uow(), args.weight, args.count)
    print_batches(batches, args.count, "bars")
    return 0


_foo_complete = _printing_ids(lambda uow, a: use_cases.complete_foos(uow, a.ids))
_foo_revise = _printing_ids(lambda uow, a: use_cases.revise_foo(uow, a.id, a.amount))
_foo_cancel = _printing_ids(lambda uow, a: use_cases.cancel_foos(uow, a.ids))


def register(commands: Any) -> None:
    batches = (
        f"{BATCH_SIZE:,} per transaction, each one's ids printed once it commits (not all or "
        "nothing: after an error, those printed stay)"
    )
    count_help = f"how many, 1 to {MAX_COUNT} (default 1)"

    foo = command_group(commands, "foo", "create and change foos")
    p = command(foo, "create", _foo_create, f"create pending foos, {batches}")
    p.add_argument("--amount", type=non_negative, required=True)
    p.add_argument("--count", type=count, default=1, help=count_help)
    p = command(foo, "complete", _foo_complete, "complete pending foos (all or none)", nudges=True)
    p.add_argument("ids", type=positive_id, nargs="+", metavar="ID")
    p = command(foo, "revise", _foo_revise, "change a foo's amount", nudges=True)
    p.add_argument("id", type=positive_id, metavar="ID")
    p.add_argument("--amount", type=non_negative, required=True)
    p = command(foo, "cancel", _foo_cancel, "cancel foos (all or none)", nudges=True)
    p.add_argument("ids", type=positive_id, nargs="+", metavar="ID")

    bar = command_group(commands, "bar", "create bars")
    p = command(bar, "create", _bar_create, f"create bars, {batches}")
    p.add_argument("--weight", type=non_negative, required=True)
    p.add_argument("--count", type=count, default=1, help=count_help)
