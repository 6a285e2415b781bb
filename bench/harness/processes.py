"""Processes and progress: the contenders' workers beside infrastructure.cli.processes (which
starts postsave's own), bounded waits, a quick stop of all, and one stamped line per step."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from infrastructure.cli import processes

REPO = Path(__file__).resolve().parents[2]
_STARTED = time.monotonic()


def elapsed() -> float:
    return time.monotonic() - _STARTED


def step(message: str) -> None:
    """One line on stderr, stamped with the time since the run started."""
    print(f"[bench {elapsed():6.1f}s] {message}", file=sys.stderr, flush=True)


def env_for(extra: Mapping[str, str]) -> dict[str, str]:
    """The bench's package importable from any subprocess, whatever its working directory."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def start(
    command: Sequence[str], env: Mapping[str, str], log_path: Path
) -> subprocess.Popen[bytes]:
    """A process that is not postsave's: the bench's own Celery apps, procrastinate."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(command),
            env=env_for(env),
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a kill takes the pool children too
        )


def wait_until(
    condition: Callable[[], bool],
    what: str,
    timeout_s: float = 60.0,
    alive: Sequence[subprocess.Popen[bytes]] = (),
    interval_s: float = 0.1,
) -> None:
    """Bounded wait; fails early if a process it depends on has died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        dead = [p.args for p in alive if p.poll() is not None]
        if dead:
            raise RuntimeError(f"{what}: a process exited: {dead}")
        time.sleep(interval_s)
    raise TimeoutError(f"{what}: not within {timeout_s:.0f}s")


def wait_for_log(log_path: Path, process: subprocess.Popen[bytes]) -> None:
    """Until a Celery worker logs that it consumes."""

    def ready() -> bool:
        return log_path.exists() and " ready." in log_path.read_text(errors="replace")

    wait_until(ready, f"{log_path.name} ready", alive=[process])


def stop_all(started: Sequence[subprocess.Popen[bytes]], timeout_s: float) -> None:
    """SIGTERM (Celery's warm shutdown) to all at once, then SIGKILL the groups that hang:
    processes.stop would wait for each in turn."""
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for process in started:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            processes.kill(process)
