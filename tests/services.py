"""Real PostgreSQL and RabbitMQ for the tests: found, or skipped with a reason (a failure in CI)."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

IN_CI = os.environ.get("CI", "").lower() == "true"
PG_SERVER_URL = os.environ.get(
    "POSTSAVE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
AMQP_URL = os.environ.get("POSTSAVE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


def unavailable(service: str, reason: str) -> None:
    message = f"{service} is not reachable ({reason})"
    if IN_CI:
        pytest.fail(f"{message}: CI=true, so service tests must run, not skip", pytrace=False)
    pytest.skip(f"{message}; start it or set the POSTSAVE_TEST_* URL to run these tests")


def database_url(name: str) -> str:
    return make_url(PG_SERVER_URL).set(database=name).render_as_string(hide_password=False)


@contextmanager
def admin_connection() -> Iterator[object]:
    engine = create_engine(PG_SERVER_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


def check_postgres() -> None:
    try:
        with admin_connection() as connection:
            connection.execute(text("SELECT 1"))  # type: ignore[attr-defined]
    except Exception as error:  # noqa: BLE001 - any failure means "not reachable"
        unavailable("PostgreSQL", str(error).splitlines()[0])


def create_database(template: str | None = None, name: str | None = None) -> str:
    name = name or f"postsave_test_{uuid.uuid4().hex[:12]}"
    clause = f" TEMPLATE {template}" if template else ""
    with admin_connection() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"{clause}'))  # type: ignore[attr-defined]
    return name


def drop_database(name: str) -> None:
    with admin_connection() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))  # type: ignore[attr-defined]


def check_rabbitmq() -> None:
    from kombu import Connection

    try:
        with Connection(AMQP_URL, connect_timeout=3) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as error:  # noqa: BLE001
        unavailable("RabbitMQ", str(error).splitlines()[0])


def create_vhost() -> str | None:
    """A vhost of our own keeps test messages away from anything else on the broker."""
    if shutil.which("rabbitmqctl") is None:
        return None
    vhost = f"postsave-test-{uuid.uuid4().hex[:8]}"
    try:
        add_vhost(vhost)
    except (subprocess.SubprocessError, OSError):
        return None
    return vhost


def rabbitmqctl(*args: str, nice: bool = False) -> str:
    """Its output; raises when rabbitmqctl is missing or fails. Each call boots an Erlang VM
    (~0.7 s of CPU): `nice` leaves the CPU to the processes being measured meanwhile."""
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        raise RuntimeError("rabbitmqctl is needed (vhosts, queue depths)")
    command = ["nice", "-n", "19", ctl, *args] if nice else [ctl, *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


def add_vhost(vhost: str, user: str = "guest") -> None:
    """Like create_vhost, with a given name, and failing loudly."""
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")


def delete_vhost(vhost: str) -> None:
    ctl = shutil.which("rabbitmqctl")
    if ctl:
        subprocess.run([ctl, "delete_vhost", vhost], capture_output=True, timeout=60)


def amqp_url_for(vhost: str | None) -> str:
    if vhost is None:
        return AMQP_URL
    scheme_end = AMQP_URL.index("://") + 3
    server = AMQP_URL[: AMQP_URL.index("/", scheme_end)]
    return f"{server}/{vhost}"
