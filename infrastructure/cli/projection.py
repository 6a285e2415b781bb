"""`postsave verify`, `rebuild` and `prune`: the bars against the event log, and retention."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from domain import operations, projection, retention
from infrastructure.bootstrap import Container
from infrastructure.cli.arguments import EXIT_FAILED, command, fail, seconds
from infrastructure.ops import archive


def _verify(c: Container, args: argparse.Namespace) -> int:
    deadline = time.monotonic() + (args.wait or 0)
    while not operations.outbox_stats(c.uow()).drained and time.monotonic() < deadline:
        time.sleep(0.2)  # the workers are still applying events
    result = projection.verify(c.uow())
    if result.holds:
        print(
            f"ok: all {result.bars} bars equal weight * {result.completed_total} "
            "(the sum of completed foo amounts)"
        )
        return 0
    print(
        f"FAILED: bars differ from weight * {result.completed_total}; first ones:", file=sys.stderr
    )
    for bar in result.mismatched:
        print(f"  bar {bar.id}: value {bar.value}, expected {bar.expected}", file=sys.stderr)
    if not result.outbox_drained:
        print(
            "  (events are still pending: run again once `postsave status` shows none)",
            file=sys.stderr,
        )
    return EXIT_FAILED


def _rebuild(c: Container, args: argparse.Namespace) -> int:
    events, bars = projection.rebuild(c.uow())
    print(f"rebuilt {bars} bars from {events} applied events")
    return 0


def _every_second(report: Callable[[int], None]) -> Callable[[int], None]:
    """Progress for long work: at most a line a second."""
    last = time.monotonic()

    def maybe(count: int) -> None:
        nonlocal last
        if time.monotonic() - last >= 1.0:
            last = time.monotonic()
            report(count)

    return maybe


def _prune(c: Container, args: argparse.Namespace) -> int:
    older_than_s = retention.parse_duration(args.older_than)
    try:
        with archive.Archive(args.archive) as keep:
            report = retention.prune(
                c.uow,
                older_than_s,
                archive=None if args.archive is None else keep.write,
                progress=_every_second(
                    lambda n: print(f"pruned {n} events so far", file=sys.stderr)
                ),
            )
    except OSError as error:
        return fail(
            f"cannot write the archive {args.archive} ({error.strerror or error}); "
            "the events it holds are pruned, the others are not"
        )
    kept = f", archived to {args.archive}" if args.archive else ""
    print(f"pruned {report.pruned} finished events older than {args.older_than}{kept}")
    return 0


def register(commands: Any) -> None:
    p = command(commands, "verify", _verify, "exit 0 only if every bar satisfies the invariant")
    p.add_argument(
        "--wait",
        type=seconds,
        metavar="S",
        help="first wait up to S seconds for every event to be applied",
    )
    command(commands, "rebuild", _rebuild, "recompute every bar from the event log")
    p = command(
        commands,
        "prune",
        _prune,
        "fold processed events older than DURATION into the projection's checkpoint, then "
        f"delete them, {retention.CHUNK:,} per transaction",
    )
    p.add_argument(
        "--older-than", required=True, metavar="DURATION", help="30s, 15m, 12h, 7d; 0s: all"
    )
    p.add_argument(
        "--archive", metavar="PATH", help="first append the events to PATH, as JSON Lines"
    )
