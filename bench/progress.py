"""One line per step on stderr, stamped with the time since the run started."""

from __future__ import annotations

import sys
import time

_STARTED = time.monotonic()


def step(message: str) -> None:
    print(f"[bench {time.monotonic() - _STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


def elapsed() -> float:
    return time.monotonic() - _STARTED
