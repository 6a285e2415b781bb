"""`postsave`: the command line. Ids go to stdout one per line; errors are one line on stderr."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from alembic.util import CommandError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from domain import operations, projection, use_cases
from domain.errors import DomainError
from domain.ports import UnitOfWork
from infrastructure.bootstrap import Container
from infrastructure.demo import run_demo
from infrastructure.migrate import upgrade
from infrastructure.schema import BIGINT_MAX
from infrastructure.settings import Settings, SettingsError

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


def _print_ids(ids: Sequence[int]) -> None:
    sys.stdout.write("".join(f"{i}\n" for i in ids))


IdsAction = Callable[[UnitOfWork, argparse.Namespace], Sequence[int]]


def _printing_ids(action: IdsAction) -> Handler:
    """A command that creates or changes foos or bars and prints their ids, one per line."""

    def handler(c: Container, args: argparse.Namespace) -> int:
        _print_ids(action(c.uow(), args))
        return 0

    return handler


_foo_create = _printing_ids(lambda uow, a: use_cases.create_foos(uow, a.amount, a.count))
_foo_complete = _printing_ids(lambda uow, a: use_cases.complete_foos(uow, a.ids))
_foo_revise = _printing_ids(lambda uow, a: use_cases.revise_foo(uow, a.id, a.amount))
_foo_cancel = _printing_ids(lambda uow, a: use_cases.cancel_foos(uow, a.ids))
_bar_create = _printing_ids(lambda uow, a: use_cases.create_bars(uow, a.weight, a.count))


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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="postsave", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(group: Any, name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = group.add_parser(name, help=help, description=help)
        sub.set_defaults(handler=handler)
        return sub

    foo = commands.add_parser("foo", help="create and change foos").add_subparsers(
        dest="action", required=True, parser_class=_Parser
    )
    p = command(foo, "create", _foo_create, "create pending foos; prints their ids")
    p.add_argument("--amount", type=_non_negative, required=True)
    p.add_argument("--count", type=_positive_id, default=1)
    p = command(foo, "complete", _foo_complete, "complete pending foos (all or none)")
    p.add_argument("ids", type=_positive_id, nargs="+", metavar="ID")
    p = command(foo, "revise", _foo_revise, "change a foo's amount")
    p.add_argument("id", type=_positive_id, metavar="ID")
    p.add_argument("--amount", type=_non_negative, required=True)
    p = command(foo, "cancel", _foo_cancel, "cancel foos (all or none)")
    p.add_argument("ids", type=_positive_id, nargs="+", metavar="ID")

    bar = commands.add_parser("bar", help="create bars").add_subparsers(
        dest="action", required=True, parser_class=_Parser
    )
    p = command(bar, "create", _bar_create, "create bars; prints their ids")
    p.add_argument("--weight", type=_non_negative, required=True)
    p.add_argument("--count", type=_positive_id, default=1)

    p = command(commands, "status", _status, "events pending, in flight, processed, dead")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    command(commands, "verify", _verify, "exit 0 only if every bar satisfies the invariant")
    command(commands, "rebuild", _rebuild, "recompute every bar from the event log")
    dead = commands.add_parser("dead", help="events that failed too often").add_subparsers(
        dest="action", required=True, parser_class=_Parser
    )
    command(dead, "list", _dead_list, "list dead events with their last error")
    p = command(dead, "retry", _dead_retry, "make dead events due again (all if no ID)")
    p.add_argument("ids", type=_positive_id, nargs="*", metavar="ID")
    command(commands, "migrate", _migrate, "upgrade the database to the latest schema")
    command(commands, "demo", _demo, "run the whole pipeline on the configured database/broker")
    return parser


def _fail(message: str, code: int = EXIT_FAILED) -> int:
    print(f"postsave: error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        container = Container(Settings.from_env(), nudge=True)
    except UsageError as error:
        return _fail(str(error), EXIT_USAGE)
    except SettingsError as error:
        return _fail(str(error), EXIT_USAGE)
    try:
        handler: Handler = args.handler
        return int(handler(container, args))
    except DomainError as error:
        return _fail(f"{error}; nothing was changed")
    except SQLAlchemyError as error:
        return _fail(_explain_database_error(error, container.settings.database_url))
    except CommandError as error:
        return _fail(f"migration failed: {error}")
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    finally:
        container.close()


def _explain_database_error(error: SQLAlchemyError, url: str) -> str:
    detail = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
    if "no such table" in detail or "does not exist" in detail:
        return (
            f"the database has no postsave tables ({detail}); "
            "run `postsave migrate` (or `alembic upgrade head`) first"
        )
    return f"database error: {detail} (database: {_safe(url)})"


def _safe(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable url>"


if __name__ == "__main__":
    sys.exit(main())
