"""The run's own PostgreSQL databases and RabbitMQ vhost, made at the start and dropped at the end,
and what the run reads from the servers: queue depths, who is serving, the machine's versions.

The servers are the ones the tests use (POSTSAVE_TEST_PG_URL, POSTSAVE_TEST_AMQP_URL, with the
same local defaults). Nothing here touches a database or vhost that this run did not create."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import platform
import shutil
import subprocess
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import psycopg
from kombu import Connection
from sqlalchemy.engine import make_url

PG_SERVER_URL = os.environ.get(
    "POSTSAVE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
AMQP_URL = os.environ.get("POSTSAVE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


def rabbitmqctl(*args: str, nice: bool = False) -> str:
    """Its output. Each call boots an Erlang VM (~0.7 s of CPU): `nice` leaves the CPU to the
    processes being measured meanwhile."""
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        raise RuntimeError("rabbitmqctl is needed (vhosts, queue depths)")
    command = ["nice", "-n", "19", ctl, *args] if nice else [ctl, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout


def _admin(statement: str) -> Any:
    conninfo = make_url(PG_SERVER_URL).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        cursor = connection.execute(statement)
        found = cursor.fetchone() if cursor.description else None
    return found[0] if found else None


@dataclass(frozen=True)
class Database:
    name: str

    @property
    def url(self) -> str:
        """As postsave's settings name it (SQLAlchemy)."""
        return make_url(PG_SERVER_URL).set(database=self.name).render_as_string(False)

    @property
    def conninfo(self) -> str:
        """As libpq names it (psycopg, procrastinate)."""
        return make_url(self.url).set(drivername="postgresql").render_as_string(False)


@dataclass
class RunServices:
    """Databases and a vhost named after one run id; `close()` drops exactly those."""

    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    databases: list[Database] = field(default_factory=list)
    vhost: str | None = None

    def create_database(self, role: str, template: Database | None = None) -> Database:
        database = Database(f"bench_{self.run_id}_{role}")
        clause = f' TEMPLATE "{template.name}"' if template else ""
        _admin(f'CREATE DATABASE "{database.name}"{clause}')
        self.databases.append(database)
        return database

    def drop_database(self, database: Database) -> None:
        _admin(f'DROP DATABASE IF EXISTS "{database.name}" WITH (FORCE)')
        if database in self.databases:
            self.databases.remove(database)

    def create_vhost(self) -> None:
        self.vhost = f"postsave-bench-{self.run_id}"
        rabbitmqctl("add_vhost", self.vhost)
        rabbitmqctl("set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*")
        self.amqp_url = f"{AMQP_URL[: AMQP_URL.index('/', AMQP_URL.index('://') + 3)]}/{self.vhost}"

    def fingerprint(self) -> dict[str, str]:
        """Who is serving: changes if RabbitMQ or PostgreSQL restarts during the run (on a
        shared machine, another suite's fault tests may restart them)."""
        try:
            broker = rabbitmqctl("-q", "eval", "os:getpid().").strip()
        except (subprocess.SubprocessError, OSError):
            broker = "?"
        started = _admin("SELECT pg_postmaster_start_time()::text")
        return {"rabbitmq_pid": broker, "postgresql_started": str(started or "?")}

    def broker_depths(self) -> dict[str, int]:
        """Every queue of the vhost, ready plus unacknowledged (the AMQP passive declare counts
        ready messages only); {} when rabbitmqctl fails. Niced: it runs beside the measured."""
        assert self.vhost
        columns = ("name", "messages_ready", "messages_unacknowledged", "--formatter", "json")
        try:
            out = rabbitmqctl("-q", "list_queues", "-p", self.vhost, *columns, nice=True)
            rows = json.loads(out or "[]")
        except (subprocess.SubprocessError, OSError, ValueError):
            return {}
        return {
            r["name"]: int(r["messages_ready"]) + int(r["messages_unacknowledged"]) for r in rows
        }

    def close(self) -> None:
        for database in list(self.databases):
            try:
                self.drop_database(database)
            except psycopg.Error as error:
                print(f"bench: could not drop database {database.name}: {error}")
        if self.vhost and shutil.which("rabbitmqctl"):
            subprocess.run(["rabbitmqctl", "delete_vhost", self.vhost], capture_output=True)
        self.vhost = None


def ready(amqp_url: str, queue: str, connection: Connection | None = None) -> int:
    """Messages ready in `queue` (a passive declare: unacknowledged ones are not counted)."""
    with Connection(amqp_url) if connection is None else contextlib.nullcontext(connection) as c:
        return int(c.default_channel.queue_declare(queue, passive=True)[1])


def purge(amqp_url: str, queue: str) -> None:
    with Connection(amqp_url) as connection:
        connection.default_channel.queue_purge(queue)


class QueuePeak:
    """Peak depth of one queue while it runs: rabbitmqctl once a second, on the second (ready +
    unacknowledged; readings overlap, so a slow Erlang boot never stretches the cadence), and
    the AMQP passive declare (ready only, cheap) five times a second."""

    def __init__(self, services: RunServices, queue: str) -> None:
        self.services, self.queue, self.peak_ready = services, queue, 0
        self._pool = ThreadPoolExecutor(max_workers=6, thread_name_prefix="depths")
        self._readings: list[Future[dict[str, int]]] = []
        self._stop = threading.Event()
        self._amqp = threading.Thread(target=self._poll, daemon=True)
        self._amqp.start()

    def _poll(self) -> None:
        started = time.monotonic()
        with Connection(self.services.amqp_url) as connection:
            for tick in itertools.count():
                if tick % 5 == 0:
                    self._readings.append(self._pool.submit(self.services.broker_depths))
                self.peak_ready = max(self.peak_ready, ready("", self.queue, connection))
                if self._stop.wait(max(started + 0.2 * (tick + 1) - time.monotonic(), 0.0)):
                    return

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._amqp.join(timeout=60)
        self._pool.shutdown(wait=True)
        readings = [future.result(0) for future in self._readings]
        return {
            "peak_depth_rabbitmqctl": max((r.get(self.queue, 0) for r in readings), default=0),
            "peak_ready_amqp": self.peak_ready,
            "rabbitmqctl_samples": len(readings),
        }


def machine() -> dict[str, Any]:
    """What the results came from, printed above every report."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    models = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    try:
        rabbitmq = rabbitmqctl("-q", "version").strip()
    except (OSError, subprocess.SubprocessError, RuntimeError):
        rabbitmq = "?"
    return {
        "cpus": os.cpu_count(),
        "cpu_model": models[0] if models else "?",
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": _admin("SHOW server_version") or "?",
        "rabbitmq": rabbitmq or "?",
        **{name: version(name) for name in ("celery", "kombu", "sqlalchemy", "procrastinate")},
        "load_average_at_start": os.getloadavg(),
    }
