"""The run's own PostgreSQL databases and RabbitMQ vhost: made at the start, dropped at the end.

The servers are the tests' (tests/services.py, POSTSAVE_TEST_* URLs). Nothing here touches a
database or vhost that this run did not create."""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from tests import rabbitmq, services


@dataclass(frozen=True)
class Database:
    name: str

    @property
    def url(self) -> str:
        """As postsave's settings name it (SQLAlchemy)."""
        return services.database_url(self.name)

    @property
    def conninfo(self) -> str:
        """As libpq names it (psycopg, procrastinate)."""
        url = make_url(self.url).set(drivername="postgresql")
        return url.render_as_string(hide_password=False)


@dataclass
class RunServices:
    """Databases and a vhost named after one run id; `close()` drops exactly those."""

    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    databases: list[Database] = field(default_factory=list)
    vhost: str | None = None

    def create_database(self, role: str, template: Database | None = None) -> Database:
        name = f"bench_{self.run_id}_{role.replace('-', '_')}"
        services.create_database(template.name if template else None, name=name)
        database = Database(name)
        self.databases.append(database)
        return database

    def drop_database(self, database: Database) -> None:
        services.drop_database(database.name)
        if database in self.databases:
            self.databases.remove(database)

    def create_vhost(self) -> str:
        vhost = f"postsave-bench-{self.run_id}"
        services.add_vhost(vhost)
        self.vhost = vhost
        return vhost

    @property
    def amqp_url(self) -> str:
        assert self.vhost, "create_vhost() first"
        return services.amqp_url_for(self.vhost)

    def fingerprint(self) -> dict[str, str]:
        """Who is serving: changes if RabbitMQ or PostgreSQL restarts during the run (on a
        shared machine, another suite's fault tests may restart them)."""
        try:
            broker = services.rabbitmqctl("-q", "eval", "os:getpid().").strip()
        except (subprocess.SubprocessError, OSError):
            broker = "?"
        with services.admin_connection() as connection:
            started = connection.execute(  # type: ignore[attr-defined]
                text("SELECT pg_postmaster_start_time()::text")
            ).scalar()
        return {"rabbitmq_pid": broker, "postgresql_started": str(started or "?")}

    def broker_depths(self) -> dict[str, int]:
        """A tests.rabbitmq.DepthSource. Niced: the sampler runs beside the processes being
        measured."""
        assert self.vhost
        return rabbitmq.broker_depths(self.vhost, nice=True)

    def close(self) -> None:
        for database in list(self.databases):
            try:
                self.drop_database(database)
            except SQLAlchemyError as error:
                print(f"bench: could not drop database {database.name}: {error}")
        if self.vhost:
            try:
                services.delete_vhost(self.vhost)
            except (subprocess.SubprocessError, OSError) as error:
                print(f"bench: could not delete vhost {self.vhost}: {error}")
            self.vhost = None
