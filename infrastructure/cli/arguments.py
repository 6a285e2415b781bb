"""What every command shares: the argument types, the parser that raises instead of exiting,
how a command is registered, and how ids and errors are printed."""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from infrastructure.bootstrap import Container
from infrastructure.cli.bulk import MAX_COUNT
from infrastructure.limits import BIGINT_MAX

EXIT_FAILED = 1
EXIT_USAGE = 2

Handler = Callable[[Container, argparse.Namespace], int]


class UsageError(Exception):
    """The command line itself is wrong."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def command(
    group: Any, name: str, handler: Handler, help: str, nudges: bool = False
) -> argparse.ArgumentParser:
    """`nudges`: the command writes events, and its commit asks the relay to poll at once.
    The other commands never touch the broker (nor create its directory)."""
    sub: argparse.ArgumentParser = group.add_parser(name, help=help, description=help)
    sub.set_defaults(handler=handler, nudges=nudges)
    return sub


def command_group(commands: Any, name: str, help: str) -> Any:
    return commands.add_parser(name, help=help).add_subparsers(
        dest="action", required=True, parser_class=Parser
    )


def positive_id(raw: str) -> int:
    if not raw.isascii() or not raw.isdigit() or not 0 < int(raw) <= BIGINT_MAX:
        raise argparse.ArgumentTypeError(f"{raw!r} is not an id (a whole number >= 1)")
    return int(raw)


def non_negative(raw: str) -> int:
    if not raw.isascii() or not raw.isdigit() or int(raw) > BIGINT_MAX:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number >= 0")
    return int(raw)


def count(raw: str) -> int:
    if not raw.isascii() or not raw.isdigit() or int(raw) < 1:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number >= 1")
    if int(raw) > MAX_COUNT:
        raise argparse.ArgumentTypeError(
            f"{raw} is more than {MAX_COUNT}, the most one command creates; "
            "run it several times for more"
        )
    return int(raw)


def seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number of seconds greater than 0")
    return value


def identifier(raw: str) -> str:
    """A plain SQL name (lower case, digits, underscores), safe to print into SQL unquoted."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", raw):
        raise argparse.ArgumentTypeError(
            f"{raw!r} is not a plain SQL name (lower case letters, digits and underscores)"
        )
    return raw


def vhost(raw: str) -> str:
    """A RabbitMQ vhost name that a shell takes as one word without quoting."""
    if not re.fullmatch(r"[A-Za-z0-9_./-]{1,255}", raw):
        raise argparse.ArgumentTypeError(
            f"{raw!r} is not a vhost name this command prints (letters, digits, _ . / -)"
        )
    return raw


def port(raw: str) -> int:
    if not raw.isascii() or not raw.isdigit() or not 0 < int(raw) < 65536:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a port (1 to 65535)")
    return int(raw)


def print_ids(ids: Sequence[int]) -> None:
    sys.stdout.write("".join(f"{i}\n" for i in ids))


def fail(message: str, code: int = EXIT_FAILED) -> int:
    print(f"postsave: error: {message}", file=sys.stderr)
    return code
