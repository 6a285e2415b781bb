"""`postsave`: the command line. Ids go to stdout one per line; errors are one line on stderr."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from alembic.util import CommandError
from sqlalchemy.exc import SQLAlchemyError

from domain.errors import DomainError
from infrastructure.bootstrap import Container
from infrastructure.broker.nudge import logger as nudge_logger
from infrastructure.cli import operate, outbox, projection, records
from infrastructure.cli.arguments import EXIT_USAGE, Handler, Parser, UsageError, fail
from infrastructure.cli.bulk import PartlyCreated
from infrastructure.cli.errors import explain
from infrastructure.files import DatabaseFileError
from infrastructure.ops.logs import configure_command_line
from infrastructure.settings import Settings, SettingsError
from infrastructure.urls import redact_url


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="postsave", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for group in (records, outbox, projection, operate):
        group.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # A refused nudge is reported once, as this command's error line, not also as a log line.
    nudge_logger.setLevel(logging.ERROR)
    configure_command_line()  # POSTSAVE_LOG_FORMAT=json: warnings as JSON lines on stderr
    try:
        args = build_parser().parse_args(argv)
        container = Container(Settings.from_env(), nudge=args.nudges)
    except (UsageError, SettingsError) as error:
        return fail(str(error), EXIT_USAGE)
    try:
        handler: Handler = args.handler
        code = int(handler(container, args))
        problem = container.nudge_problem()
        if code == 0 and problem is not None:
            return fail(
                f"saved, but the broker refused the relay's nudge ({problem}); "
                f"check POSTSAVE_BROKER_URL ({redact_url(container.settings.broker_url)})"
            )
        return code
    except SettingsError as error:  # the recalculation is loaded by the commands that run it
        return fail(str(error), EXIT_USAGE)
    except PartlyCreated as partial:
        return fail(f"{explain(partial.error, container.settings)}; {partial}")
    except DomainError as error:
        return fail(f"{error}; nothing was changed")
    except (SQLAlchemyError, CommandError, DatabaseFileError) as error:
        return fail(explain(error, container.settings))
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    finally:
        container.close()


if __name__ == "__main__":
    sys.exit(main())
