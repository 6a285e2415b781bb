"""`postsave foo create` and `bar create` with `--count`: one transaction per batch, each
batch's ids on stdout as soon as it commits, progress on stderr for large counts."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from sqlalchemy.exc import SQLAlchemyError

from domain.errors import DomainError
from domain.use_cases import BATCH_SIZE

MAX_COUNT = 100_000  # per command: a mistyped count should not fill the disk
PROGRESS_FROM = 10_000  # counts from here on show progress even where stderr is not a terminal
PROGRESS_LINE_EVERY = 10_000  # rows between two progress lines where stderr is not a terminal


class PartlyCreated(Exception):
    """A batch failed after others were committed: those stay, and their ids were printed."""

    def __init__(self, created: int, count: int, noun: str, error: Exception) -> None:
        super().__init__(
            f"{created} of {count} {noun} were created before that (their ids are on stdout)"
        )
        self.error = error


class Progress:
    """On a terminal, one line rewritten after each batch; elsewhere, a line now and then."""

    def __init__(self, count: int, noun: str) -> None:
        self.count = count
        self.noun = noun
        self.terminal = sys.stderr.isatty()
        self.shown = count > BATCH_SIZE and (self.terminal or count >= PROGRESS_FROM)
        self.next_line = PROGRESS_LINE_EVERY
        self.open_line = False

    def update(self, created: int) -> None:
        if not self.shown:
            return
        line = f"created {created} of {self.count} {self.noun}"
        if self.terminal:
            sys.stderr.write(f"\r{line}")
            self.open_line = True
        elif created >= self.next_line or created == self.count:
            sys.stderr.write(f"{line}\n")
            self.next_line += PROGRESS_LINE_EVERY
        sys.stderr.flush()

    def close(self) -> None:
        if self.open_line:  # an error line must not land on the progress line
            sys.stderr.write("\n")
            self.open_line = False


def print_batches(batches: Iterable[list[int]], count: int, noun: str) -> None:
    """Print the ids of each batch as it commits. A failure after the first batch raises
    PartlyCreated, so the error says how many were created."""
    progress = Progress(count, noun)
    created = 0
    try:
        for ids in batches:
            sys.stdout.write("".join(f"{i}\n" for i in ids))
            sys.stdout.flush()  # a reader (`| xargs`) gets each batch as it commits
            created += len(ids)
            progress.update(created)
    except (DomainError, SQLAlchemyError) as error:
        if created == 0:
            raise
        raise PartlyCreated(created, count, noun, error) from error
    finally:
        progress.close()
