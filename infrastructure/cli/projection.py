"""`postsave verify`, `rebuild` and `prune`: the bars against the event log, and retention."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from domain import operations, projection, retention
from domain.errors import DomainError
from domain.operations import Status
from domain.passes import HeavyStep
from domain.projection import BarMismatch, Verification
from domain.recalculation import EXAMPLE_RECALCULATION
from infrastructure.bootstrap import Container
from infrastructure.cli.arguments import EXIT_FAILED, EXIT_USAGE, command, fail, seconds
from infrastructure.ops import archive
from infrastructure.settings import SettingsError

PROGRESS_EVERY_S = 1.0  # long work reports on stderr at most this often
# An in-process rebuild reports its progress between rounds of passes of about this long.
REBUILD_ROUND_S = 1.0


def _heavy_step(c: Container) -> HeavyStep | int:
    """The recalculation POSTSAVE_RECALCULATION names, or the exit code of its one-line error
    (a module that cannot be imported, or that has no such function)."""
    try:
        return c.heavy_step
    except SettingsError as error:
        return fail(str(error), EXIT_USAGE)


def _recorded_recalculation(c: Container) -> str:
    """The recalculation the bars were computed with (the last rebuild's)."""
    with c.uow() as uow:
        return uow.parts.projection().recalculation


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _verify(c: Container, args: argparse.Namespace) -> int:
    step = _heavy_step(c)
    if isinstance(step, int):
        return step
    recorded = _recorded_recalculation(c)
    if recorded != step.name:  # a replay through another recalculation proves nothing
        return fail(
            f"the bars were computed with {recorded}, not POSTSAVE_RECALCULATION={step.name}: "
            f"verify with {recorded}, or run `postsave rebuild` with {step.name} first"
        )
    deadline = time.monotonic() + (args.wait or 0)
    while not operations.outbox_stats(c.uow()).drained and time.monotonic() < deadline:
        time.sleep(0.2)  # the workers are still applying events
    result = c.verify()
    status = operations.status(c.uow())
    passed = result.holds and result.outbox_drained
    for line in _report(result, status, step.name):
        print(line, file=sys.stdout if passed else sys.stderr)
    return 0 if passed else EXIT_FAILED


def _report(result: Verification, status: Status, recalculation: str) -> list[str]:
    """What verify found, and then what the operator should know about the outbox and parts.
    It passes only once every event is applied: before that, the bars are right as far as
    they have got, but not yet what the foos say."""
    replay = f"a replay of their baselines and the event log through {recalculation}"
    closed_form = f"weight * {result.completed_total} (the sum of completed foo amounts)"
    checked = f"{replay}, and {closed_form}" if result.checked_closed_form else replay
    bars = f"all {_plural(result.bars, 'bar')} ({_plural(result.parts, 'part')})"
    unfinished = status.events.pending + status.events.in_flight
    if not result.holds:
        lines = [f"FAILED: bars differ from {checked}; first ones:"]
        lines += [f"  bar {each.id}: {_difference(each)}" for each in _each_once(result.mismatched)]
    elif not result.outbox_drained:
        later = ""
        if recalculation == EXAMPLE_RECALCULATION:
            later = f"; weight * {result.completed_total} is checked once every event is applied"
        lines = [
            f"NOT VERIFIED: {_plural(unfinished, 'event')} still pending or in flight; run "
            "again once `postsave status` shows none (or `postsave verify --wait S`)",
            f"  so far {bars} equal {replay}{later}",
        ]
    else:
        lines = [f"ok: {bars} equal {checked}"]
    if not result.holds and not result.outbox_drained:
        lines.append(
            f"  ({_plural(unfinished, 'event')} still pending or in flight: run again once "
            "`postsave status` shows none)"
        )
    if status.events.dead:
        lines.append(
            f"  ({_plural(status.events.dead, 'dead event')}, not on the bars: "
            "`postsave dead list`)"
        )
    if status.parts.dead:
        lines.append(
            f"  ({_plural(status.parts.dead, 'dead part')}, holding back the events after "
            "them: `postsave dead list`)"
        )
    return lines


def _each_once(mismatches: Iterable[BarMismatch]) -> list[BarMismatch]:
    """A bar off both its replay and the closed form, by the same value, is shown once."""
    once: list[BarMismatch] = []
    for mismatch in mismatches:
        if mismatch not in once:
            once.append(mismatch)
    return once


def _difference(mismatch: BarMismatch) -> str:
    """`value 41, expected 40`: the fields that differ, each with what it should hold."""
    stored, expected = mismatch.stored, mismatch.expected
    names = [*expected, *(name for name in stored if name not in expected)]
    differ = [name for name in names if stored.get(name) != expected.get(name)]
    if not differ:
        same = ", ".join(f"{name} {value}" for name, value in stored.items())
        return f"the same as its replay ({same}), but at another position in the log"
    return "; ".join(f"{name} {stored.get(name)}, expected {expected.get(name)}" for name in differ)


def _rebuild(c: Container, args: argparse.Namespace) -> int:
    step = _heavy_step(c)
    if isinstance(step, int):
        return step
    if args.on_workers:
        started = projection.start_rebuild(c.uow(), step.name)
        if not started.events:  # no message will drive the workers: the bars are reset here
            projection.replay_rebuild(c.uow, step)
        print(
            f"rebuilding {_plural(started.parts, 'part')} through {step.name} on the workers: "
            f"{_plural(started.events, 'event')} to replay after position "
            f"{started.from_position}; `postsave status` shows the parts still rebuilding"
        )
        return 0
    report = _every_second(
        lambda done, parts: print(f"rebuilt {done} of {_plural(parts, 'part')}", file=sys.stderr)
    )
    # Short rounds of passes: progress between them, and workers' passes alongside.
    in_rounds = dataclasses.replace(step, budget_s=REBUILD_ROUND_S)
    try:
        started = projection.rebuild(c.uow, in_rounds, progress=report)
    except DomainError as error:
        # Started, so not "nothing was changed": the workers go on with the parts left.
        return fail(f"{error}; the rebuild was started: the workers go on with it")
    print(
        f"rebuilt {_plural(started.parts, 'part')} through {step.name}: the bars' baselines "
        f"and the {_plural(started.events, 'event')} after position {started.from_position}"
    )
    return 0


def _every_second(report: Callable[..., None]) -> Callable[..., None]:
    """Progress for long work: at most a line every PROGRESS_EVERY_S."""
    last = time.monotonic()

    def maybe(*counts: int) -> None:
        nonlocal last
        if time.monotonic() - last >= PROGRESS_EVERY_S:
            last = time.monotonic()
            report(*counts)

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
    p = command(
        commands,
        "verify",
        _verify,
        "exit 0 only once every event is applied and every bar equals a replay of its "
        "baseline and the event log through POSTSAVE_RECALCULATION (with the example's, also "
        "weight * the sum of completed foo amounts)",
    )
    p.add_argument(
        "--wait",
        type=seconds,
        metavar="S",
        help="first wait up to S seconds for every event to be applied",
    )
    p = command(
        commands,
        "rebuild",
        _rebuild,
        "recompute every bar from its baseline and the event log through POSTSAVE_RECALCULATION, "
        "part by part, with the workers",
    )
    p.add_argument(
        "--on-workers",
        action="store_true",
        help="only start the rebuild and leave the replay to the workers",
    )
    p = command(
        commands,
        "prune",
        _prune,
        "make each part's bars their baselines, then fold processed events older than DURATION "
        f"into the projection's checkpoint and delete them, {retention.CHUNK:,} per transaction",
    )
    p.add_argument(
        "--older-than", required=True, metavar="DURATION", help="30s, 15m, 12h, 7d; 0s: all"
    )
    p.add_argument(
        "--archive", metavar="PATH", help="first append the events to PATH, as JSON Lines"
    )
