"""The run's own PostgreSQL databases and RabbitMQ vhost: made at the start, dropped at the end.

Nothing here touches a database or vhost that this run did not create."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from urllib.parse import quote

import psycopg
from psycopg import sql

PG_HOST = os.environ.get("BENCH_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("BENCH_PG_PORT", "5432"))
PG_USER = os.environ.get("BENCH_PG_USER", "postgres")
AMQP_SERVER = os.environ.get("BENCH_AMQP_SERVER", "amqp://guest:guest@127.0.0.1:5672")
AMQP_USER = os.environ.get("BENCH_AMQP_USER", "guest")
CTL_TIMEOUT_S = 60


def conninfo(database: str) -> str:
    """A libpq connection string (psycopg, procrastinate)."""
    return f"host={PG_HOST} port={PG_PORT} user={PG_USER} dbname={database}"


def sqlalchemy_url(database: str) -> str:
    """The same database as postsave's settings name it."""
    return f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


def admin() -> psycopg.Connection:
    return psycopg.connect(conninfo("postgres"), autocommit=True)


def rabbitmqctl() -> str:
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        raise RuntimeError("rabbitmqctl is needed (a vhost per run, queue depths)")
    return ctl


def _ctl(*args: str, nice: bool = False) -> str:
    # Each rabbitmqctl call starts an Erlang VM (~0.7 s of CPU): samplers run it niced, so
    # that the processes being measured keep the CPU they would have without the sampler.
    command = ["nice", "-n", "19", rabbitmqctl(), *args] if nice else [rabbitmqctl(), *args]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=CTL_TIMEOUT_S, check=True
    )
    return done.stdout


@dataclass
class RunServices:
    """Databases and a vhost named after one run id; `close()` drops exactly those."""

    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    databases: list[str] = field(default_factory=list)
    vhost: str | None = None

    def database_name(self, role: str) -> str:
        return f"bench_{self.run_id}_{role.replace('-', '_')}"

    def create_database(self, role: str, template: str | None = None) -> str:
        name = self.database_name(role)
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        with admin() as connection:
            connection.execute(query)
        self.databases.append(name)
        return name

    def drop_database(self, name: str) -> None:
        with admin() as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        if name in self.databases:
            self.databases.remove(name)

    def create_vhost(self) -> str:
        vhost = f"postsave-bench-{self.run_id}"
        _ctl("add_vhost", vhost)
        self.vhost = vhost
        _ctl("set_permissions", "-p", vhost, AMQP_USER, ".*", ".*", ".*")
        return vhost

    @property
    def amqp_url(self) -> str:
        assert self.vhost, "create_vhost() first"
        return f"{AMQP_SERVER}/{quote(self.vhost, safe='')}"

    def fingerprint(self) -> dict[str, str]:
        """Who is serving: changes if RabbitMQ or PostgreSQL restarts during the run (on a
        shared machine, another suite's fault tests may restart them)."""
        try:
            broker = _ctl("-q", "eval", "os:getpid().").strip()
        except (subprocess.SubprocessError, OSError):
            broker = "?"
        with admin() as connection:
            row = connection.execute("SELECT pg_postmaster_start_time()::text").fetchone()
        return {"rabbitmq_pid": broker, "postgresql_started": str(row[0]) if row else "?"}

    def queue_depths(self) -> dict[str, int]:
        """Messages per queue, ready plus delivered-but-unacknowledged (rabbitmqctl)."""
        assert self.vhost
        out = _ctl(
            "-q",
            "list_queues",
            "-p",
            self.vhost,
            "name",
            "messages_ready",
            "messages_unacknowledged",
            "--formatter",
            "json",
            nice=True,
        )
        rows = json.loads(out or "[]")
        return {
            row["name"]: int(row["messages_ready"]) + int(row["messages_unacknowledged"])
            for row in rows
        }

    def close(self) -> None:
        for name in list(self.databases):
            try:
                self.drop_database(name)
            except psycopg.Error as error:
                print(f"bench: could not drop database {name}: {error}")
        if self.vhost:
            try:
                _ctl("delete_vhost", self.vhost)
            except (subprocess.SubprocessError, OSError) as error:
                print(f"bench: could not delete vhost {self.vhost}: {error}")
            self.vhost = None
