"""`postsave`: the command line. Ids go to stdout one per line; errors are one line on stderr."""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from alembic.util import CommandError
from sqlalchemy.exc import SQLAlchemyError

from domain import operations, projection, retention, use_cases
from domain.errors import DomainError
from domain.ports import UnitOfWork
from domain.use_cases import BATCH_SIZE
from infrastructure import archive, health, metrics
from infrastructure.bootstrap import Container
from infrastructure.broker.nudge import logger as nudge_logger
from infrastructure.bulk import MAX_COUNT, PartlyCreated, print_batches
from infrastructure.database import DatabaseFileError
from infrastructure.demo import run_demo
from infrastructure.logs import configure_command_line
from infrastructure.migrate import upgrade
from infrastructure.schema import BIGINT_MAX
from infrastructure.settings import Settings, SettingsError
from infrastructure.urls import redact_url

EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """The command line itself is wrong."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


Handler = Callable[[Container, argparse.Namespace], int]


def _positive_id(raw: str) -> int:
    if not raw.isascii() or not raw.isdigit() or not 0 < int(raw) <= BIGINT_MAX:
        raise argparse.ArgumentTypeError(f"{raw!r} is not an id (a whole number >= 1)")
    return int(raw)


def _non_negative(raw: str) -> int:
    if not raw.isascii() or not raw.isdigit() or int(raw) > BIGINT_MAX:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number >= 0")
    return int(raw)


def _count(raw: str) -> int:
    if not raw.isascii() or not raw.isdigit() or int(raw) < 1:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number >= 1")
    if int(raw) > MAX_COUNT:
        raise argparse.ArgumentTypeError(
            f"{raw} is more than {MAX_COUNT}, the most one command creates; "
            "run it several times for more"
        )
    return int(raw)


def _seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number of seconds greater than 0")
    return value


def _port(raw: str) -> int:
    if not raw.isascii() or not raw.isdigit() or not 0 < int(raw) < 65536:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a port (1 to 65535)")
    return int(raw)


def _print_ids(ids: Sequence[int]) -> None:
    sys.stdout.write("".join(f"{i}\n" for i in ids))


IdsAction = Callable[[UnitOfWork, argparse.Namespace], Sequence[int]]


def _printing_ids(action: IdsAction) -> Handler:
    """A command that creates or changes foos or bars and prints their ids, one per line."""

    def handler(c: Container, args: argparse.Namespace) -> int:
        _print_ids(action(c.uow(), args))
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
    print(f"oldest pending age  {'-' if age is None else f'{age:.1f} s'}")
    return 0


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


def _dead_list(c: Container, args: argparse.Namespace) -> int:
    for event in operations.dead_events(c.uow()):
        error = " ".join((event.last_error or "").split())  # one line per event
        print(
            f"{event.id}\t{event.event_type}\tfailures={event.failures}\t"
            f"dispatches={event.dispatches}\t{error}"
        )
    return 0


def _dead_retry(c: Container, args: argparse.Namespace) -> int:
    _print_ids(operations.retry_dead_events(c.uow(), args.ids or None))
    return 0


def _migrate(c: Container, args: argparse.Namespace) -> int:
    upgrade(c.settings.database_url)
    print("database is at the latest revision")
    return 0


def _demo(c: Container, args: argparse.Namespace) -> int:
    return run_demo(c.settings)


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
        return _fail(
            f"cannot write the archive {args.archive} ({error.strerror or error}); "
            "the events it holds are pruned, the others are not"
        )
    kept = f", archived to {args.archive}" if args.archive else ""
    print(f"pruned {report.pruned} finished events older than {args.older_than}{kept}")
    return 0


def _check(c: Container, args: argparse.Namespace) -> int:
    max_age = args.max_relay_age
    if max_age is None:
        max_age = health.default_max_relay_age_s(c.settings)
    checks = health.run_checks(c.settings, max_age, args.timeout)
    for check in checks:
        print(check, file=sys.stdout if check.ok else sys.stderr)
    return 0 if all(check.ok for check in checks) else EXIT_FAILED


def _metrics(c: Container, args: argparse.Namespace) -> int:
    try:
        exporter = metrics.Exporter(c.uow, args.host, args.port)
    except OSError as error:
        return _fail(
            f"cannot listen on {args.host}:{args.port} ({error.strerror or error}); "
            "choose another --host or --port"
        )
    print(f"serving Prometheus metrics on http://{args.host}:{args.port}/metrics", flush=True)
    exporter.wait()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="postsave", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(
        group: Any, name: str, handler: Handler, help: str, nudges: bool = False
    ) -> argparse.ArgumentParser:
        """`nudges`: the command writes events, and its commit asks the relay to poll at once.
        The other commands never touch the broker (nor create its directory)."""
        sub: argparse.ArgumentParser = group.add_parser(name, help=help, description=help)
        sub.set_defaults(handler=handler, nudges=nudges)
        return sub

    batches = (
        f"{BATCH_SIZE:,} per transaction, each one's ids printed once it commits (not all or "
        "nothing: after an error, those printed stay)"
    )
    count_help = f"how many, 1 to {MAX_COUNT} (default 1)"

    foo = commands.add_parser("foo", help="create and change foos").add_subparsers(
        dest="action", required=True, parser_class=_Parser
    )
    p = command(foo, "create", _foo_create, f"create pending foos, {batches}")
    p.add_argument("--amount", type=_non_negative, required=True)
    p.add_argument("--count", type=_count, default=1, help=count_help)
    p = command(foo, "complete", _foo_complete, "complete pending foos (all or none)", nudges=True)
    p.add_argument("ids", type=_positive_id, nargs="+", metavar="ID")
    p = command(foo, "revise", _foo_revise, "change a foo's amount", nudges=True)
    p.add_argument("id", type=_positive_id, metavar="ID")
    p.add_argument("--amount", type=_non_negative, required=True)
    p = command(foo, "cancel", _foo_cancel, "cancel foos (all or none)", nudges=True)
    p.add_argument("ids", type=_positive_id, nargs="+", metavar="ID")

    bar = commands.add_parser("bar", help="create bars").add_subparsers(
        dest="action", required=True, parser_class=_Parser
    )
    p = command(bar, "create", _bar_create, f"create bars, {batches}")
    p.add_argument("--weight", type=_non_negative, required=True)
    p.add_argument("--count", type=_count, default=1, help=count_help)

    p = command(commands, "status", _status, "events pending, in flight, processed, dead")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p = command(commands, "verify", _verify, "exit 0 only if every bar satisfies the invariant")
    p.add_argument(
        "--wait",
        type=_seconds,
        metavar="S",
        help="first wait up to S seconds for every event to be applied",
    )
    command(commands, "rebuild", _rebuild, "recompute every bar from the event log")
    dead = commands.add_parser("dead", help="events that failed too often").add_subparsers(
        dest="action", required=True, parser_class=_Parser
    )
    command(dead, "list", _dead_list, "list dead events with their last error")
    p = command(dead, "retry", _dead_retry, "make dead events due again (all if no ID)")
    p.add_argument("ids", type=_positive_id, nargs="*", metavar="ID")
    command(commands, "migrate", _migrate, "upgrade the database to the latest schema")
    command(commands, "demo", _demo, "run the whole pipeline on the configured database/broker")
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
    p = command(
        commands,
        "check",
        _check,
        "exit 0 only if the database is at the latest migration, the broker answers and a "
        "relay pass ran recently; else one line per failed check",
    )
    p.add_argument(
        "--max-relay-age",
        type=_seconds,
        metavar="S",
        help="the longest a relay pass may be ago (default: 3 poll intervals, at least 10 s)",
    )
    p.add_argument(
        "--timeout",
        type=_seconds,
        default=health.DEFAULT_TIMEOUT_S,
        metavar="S",
        help="how long each check may wait for an answer (default: %(default)s s)",
    )
    p = command(commands, "metrics", _metrics, "serve Prometheus metrics at /metrics")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    p.add_argument("--port", type=_port, required=True)
    return parser


def _fail(message: str, code: int = EXIT_FAILED) -> int:
    print(f"postsave: error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    # A refused nudge is reported once, as this command's error line, not also as a log line.
    nudge_logger.setLevel(logging.ERROR)
    configure_command_line()  # POSTSAVE_LOG_FORMAT=json: warnings as JSON lines on stderr
    try:
        args = build_parser().parse_args(argv)
        container = Container(Settings.from_env(), nudge=args.nudges)
    except UsageError as error:
        return _fail(str(error), EXIT_USAGE)
    except SettingsError as error:
        return _fail(str(error), EXIT_USAGE)
    try:
        handler: Handler = args.handler
        code = int(handler(container, args))
        problem = container.nudge_problem()
        if code == 0 and problem is not None:
            return _fail(
                f"saved, but the broker refused the relay's nudge ({problem}); "
                f"check POSTSAVE_BROKER_URL ({redact_url(container.settings.broker_url)})"
            )
        return code
    except PartlyCreated as partial:
        return _fail(f"{_explain(partial.error, container.settings)}; {partial}")
    except DomainError as error:
        return _fail(f"{error}; nothing was changed")
    except (SQLAlchemyError, CommandError, DatabaseFileError) as error:
        return _fail(_explain(error, container.settings))
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    finally:
        container.close()


def _explain(error: Exception, settings: Settings) -> str:
    if isinstance(error, SQLAlchemyError):
        return _explain_database_error(error, settings.database_url)
    if isinstance(error, CommandError):
        return f"migration failed: {error}"
    return str(error)


# PostgreSQL refuses the connection: FATAL:  database "x" does not exist (or role "x").
_MISSING_DATABASE_OR_ROLE = re.compile(r'\b(?:database|role) "[^"]*" does not exist')
_UNDEFINED_TABLE, _UNDEFINED_COLUMN = "42P01", "42703"


def _explain_database_error(error: SQLAlchemyError, url: str) -> str:
    cause = getattr(error, "orig", None)
    detail = (str(cause or error).strip().splitlines() or [type(error).__name__])[0]
    where = f"(database: {redact_url(url)})"
    missing = _MISSING_DATABASE_OR_ROLE.search(detail)
    if missing:
        return f"{missing.group(0)} {where}; create it or fix POSTSAVE_DATABASE_URL"
    sqlstate = getattr(cause, "sqlstate", None)
    if sqlstate == _UNDEFINED_TABLE or "no such table" in detail:
        return (
            f"the database has no postsave tables ({detail}); "
            "run `postsave migrate` (or `alembic upgrade head`) first"
        )
    if sqlstate == _UNDEFINED_COLUMN or "no such column" in detail:
        return (
            f"the database's postsave tables are older than this postsave ({detail}); "
            "run `postsave migrate` (or `alembic upgrade head`) first"
        )
    if detail.startswith("connection failed"):
        return f"database error: {detail} {where}; check that it is up and POSTSAVE_DATABASE_URL"
    return f"database error: {detail} {where}"


if __name__ == "__main__":
    sys.exit(main())
