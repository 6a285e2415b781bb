"""`postsave prune --archive PATH`: the pruned events as JSON Lines, appended and synced to disk
before their rows are deleted."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from domain.outbox import StoredEvent
from infrastructure.files import create_private_file


class Archive:
    """A no-op without a path. An interrupted prune may have archived its last chunk without
    deleting it: the next prune archives those events again, so read the file by event id."""

    def __init__(self, path: str | None) -> None:
        self.path = None if path is None else Path(path)
        self._file: IO[str] | None = None

    def __enter__(self) -> Self:
        if self.path is not None:
            create_private_file(self.path)
            self._file = self.path.open("a", encoding="utf-8")
        return self

    def write(self, events: Sequence[StoredEvent]) -> None:
        assert self._file is not None, "an archive without a path takes no events"
        for event in events:
            line = {
                "id": event.id,
                "event_type": event.event_type,
                "payload": event.payload,
                "dispatches": event.dispatches,
                "failures": event.failures,
            }
            self._file.write(json.dumps(line, separators=(",", ":")) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._file is not None:
            self._file.close()
