"""What every contender has: its workers, its database, its share of the event stream."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from bench import procs
from bench.eventlog import EventLog, Window
from bench.schema import DRIFT_SQL
from infrastructure.cli import processes

STOP_GRACE_S = 1.0


def drift_of(row: Any) -> float | None:
    """DRIFT_SQL's row as one number (bench/schema.py)."""
    if row is None or row[0] is None or row[0] != row[1]:
        return None  # no bars, or bars that disagree: a pass reached some bars only
    return float(row[0]) - float(row[2])


def invariant(contender: Contender, before: float | None) -> dict[str, Any]:
    """Did the bars move by exactly the completed amounts since `before` (a drift())?"""
    after = contender.drift()
    if before is None or after is None:
        return {"invariant_holds": None if contender.drift_unknown else False, "drift": None}
    off = after - before
    return {"invariant_holds": abs(off) < 1e-6, "drift": off}


@dataclass
class Contender:
    name: str
    kind: str  # its own producer (bench/producer.py)
    workdir: Path
    threads: int = 2
    dsn: str = ""  # libpq conninfo of its database ("" for the ceiling and the embedded default)
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)
    next_foo: int = 1  # foos are handed out in order: every contender sees the same stream

    log: EventLog | None = None
    description: str = ""
    settle_quiet_s: float = 3.0  # after a kill: how long without progress means "done"
    outage_url: str | None = None  # publishers reach the broker through this (bench/outage.py)
    drift_unknown: bool = False  # no bars to check (the ceiling)

    def take_foos(self, count: int) -> int:
        first = self.next_foo
        self.next_foo += count
        return first

    def producer_env(self) -> dict[str, str]:
        return {}

    def start(self) -> None:
        """Start the workers and wait until they consume."""

    def stop(self) -> None:
        # Everything they did is in the database already: a short grace, then SIGKILL.
        procs.stop_all(list(reversed(self.started)), timeout_s=STOP_GRACE_S)
        self.started.clear()

    def kill_workers(self) -> None:
        """SIGKILL the consuming workers (pool children too) and start fresh ones."""
        raise NotImplementedError

    def stuck(self, window: Window) -> dict[str, int]:
        """Events of the window parked until an operator acts: `unapplied` ones, and
        `applied_but_pending` ones that acting on would apply a second time."""
        return {"unapplied": 0, "applied_but_pending": 0}

    def applied_twice(self) -> int | None:
        return None

    def drift(self) -> float | None:
        """How far the bars are off the invariant (bench/schema.py), None if the bars disagree
        with each other or there is no database to ask."""
        if not self.dsn:
            return None
        with psycopg.connect(self.dsn, autocommit=True) as connection:
            row = connection.execute(DRIFT_SQL).fetchone()
        return drift_of(row)

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return list(self.started)

    def _spawn(
        self, command: list[str], env: dict[str, str], log_name: str
    ) -> subprocess.Popen[bytes]:
        return self._track(procs.start(command, env, self.workdir / log_name))

    def _track(self, process: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        self.started.append(process)
        return process

    def _kill(self, process: subprocess.Popen[bytes] | None) -> None:
        assert process is not None
        processes.kill(process)
        self.started.remove(process)


@dataclass
class OneWorker(Contender):
    """A contender whose consumers are one worker process (with its pool)."""

    worker: subprocess.Popen[bytes] | None = None
    generation: int = 0  # each worker started logs to a file of its own

    def kill_workers(self) -> None:
        self._kill(self.worker)
        self.start()
